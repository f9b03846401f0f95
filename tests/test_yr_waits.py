"""`yr tree` shows who waits on whom, and names deadlocks (local runtime)."""

from __future__ import annotations

import contextlib
import threading

import pytest

import yr
from tests.observe_instances import ConcurrentAsker, Leaf, SerialAsker, Top
from tests.support import wait_for
from tests.yr_cli_support import flatten, private_session, run_yr, yr_json
from yr.cli.waits import find_deadlocks

__all__ = ["private_session"]


def _tree(view_index: int = 0) -> dict:
    return yr_json("tree")["sessions"][view_index]


def test_yr_tree_shows_an_instance_blocked_in_get_waiting_on_its_callee(private_session):
    top = Top.invoke()
    ids = yr.get(top.ids.invoke())
    yr.get(top.start_blocking.invoke())

    def middle_waits():
        waits = flatten(_tree()["tree"])[ids["middle"]].get("waiting_on", [])
        return waits or None

    (wait,) = wait_for(middle_waits, timeout=30, what="the middle to wait on the leaf")
    assert (wait["target"], wait["method"]) == (ids["leaf"], "block")
    assert wait["seconds"] >= 0
    plain = run_yr("tree").stdout
    middle_line = next(line for line in plain.splitlines() if f"{ids['middle']} (Middle)" in line)
    assert f"s on {ids['leaf']}.block" in middle_line


def test_yr_tree_shows_what_the_driver_waits_on(private_session):
    leaf = Leaf.invoke()

    def driver_get() -> None:
        with contextlib.suppress(yr.YRError):  # finalize settles the ref
            yr.get(leaf.block.invoke(), timeout=-1)

    threading.Thread(target=driver_get, name="driver-get", daemon=True).start()

    def driver_waits():
        return _tree()["driver_waiting_on"] or None

    (wait,) = wait_for(driver_waits, timeout=30, what="the driver's wait to show")
    assert (wait["target"], wait["method"]) == (leaf.instance_id, "block")
    assert "waiting" in run_yr("tree").stdout.splitlines()[0]


@pytest.fixture
def serial_pair(private_session):
    first, second = SerialAsker.invoke(), SerialAsker.invoke()
    yr.get([first.set_peer.invoke(second), second.set_peer.invoke(first)])
    return first, second


def test_yr_tree_names_a_refused_cycle_of_serial_instances(serial_pair):
    first, second = serial_pair
    with pytest.raises(yr.YRError, match="deadlock"):
        yr.get(first.ask.invoke(), timeout=60)
    done = run_yr("tree")
    assert done.returncode == 0, done.stderr
    cycle = f"{second.instance_id} -> {first.instance_id} -> {second.instance_id}"
    assert "deadlock refused" in done.stdout
    assert cycle in done.stdout


def test_yr_tree_names_a_live_deadlock_through_a_serial_instance(private_session):
    serial, concurrent = SerialAsker.invoke(), ConcurrentAsker.invoke()
    yr.get([serial.set_peer.invoke(concurrent), concurrent.set_peer.invoke(serial)])
    serial.ask.invoke()  # serial waits on concurrent.ask_back, which waits on serial.answer

    def named():
        deadlocks = _tree()["deadlocks"]
        return deadlocks or None

    (cycle,) = wait_for(named, timeout=30, what="yr tree to name the deadlock")
    assert set(cycle) == {serial.instance_id, concurrent.instance_id}
    assert cycle[0] == cycle[-1]
    plain = run_yr("tree").stdout
    assert f"DEADLOCK: {' -> '.join(cycle)}" in plain


def _view(concurrency: dict[str, int], waits: dict[str, list[str]]) -> dict:
    return {
        "instances": [
            {
                "id": name,
                "concurrency": threads,
                "waiting_on": [{"target": t, "method": "m"} for t in waits.get(name, [])],
            }
            for name, threads in concurrency.items()
        ]
    }


def test_a_wait_cycle_through_a_serial_instance_is_a_deadlock():
    view = _view({"a": 1, "b": 4, "c": 4}, {"a": ["b"], "b": ["c"], "c": ["a"]})
    assert find_deadlocks(view) == [["a", "b", "c", "a"]]


def test_a_wait_cycle_of_concurrent_instances_is_no_deadlock():
    view = _view({"a": 2, "b": 2}, {"a": ["b"], "b": ["a"]})
    assert find_deadlocks(view) == []


def test_waits_without_a_cycle_are_no_deadlock():
    view = _view({"a": 1, "b": 1, "c": 1}, {"a": ["b"], "b": ["c"]})
    assert find_deadlocks(view) == []
