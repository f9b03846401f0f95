"""The call path never deadlocks or stalls: nested refs, waits on oneself, finalize, seq gaps."""

from __future__ import annotations

import threading

import pytest

import yr
from tests.call_instances import Mirror, ParallelMirror
from tests.support import wait_for

DEADLINE_S = 60


def _within_deadline(work, *, what: str):
    """Run ``work`` in a daemon thread; fail (instead of hanging) if it does not finish."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(DEADLINE_S)
    if thread.is_alive():
        pytest.fail(f"{what} did not finish within {DEADLINE_S} s (a deadlock)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_a_pending_ref_nested_in_an_argument_does_not_deadlock_the_pipeline(local_runtime):
    mirror = Mirror.invoke()

    def work():
        first = mirror.slow.invoke(0.5, "a")
        nested = mirror.slow.invoke(0.5, "h")
        pair = mirror.both.invoke(first, [nested])
        later = mirror.ping.invoke()
        return yr.get(pair, timeout=DEADLINE_S), yr.get(later, timeout=DEADLINE_S)

    (first, [nested]), later = _within_deadline(work, what="a call with a nested pending ref")
    assert first == "a" and later == "pong"
    assert nested.done() and yr.get(nested) == "h"  # resolved before the call ran


def test_a_pending_ref_in_a_dict_argument_is_ready_when_the_call_runs(local_runtime):
    mirror = Mirror.invoke()

    def work():
        nested = mirror.slow.invoke(0.3, 7)
        return yr.get(mirror.both.invoke({"x": nested}, None), timeout=DEADLINE_S)

    holder, _ = _within_deadline(work, what="a call with a ref inside a dict")
    assert holder["x"].done() and yr.get(holder["x"]) == 7


def test_a_serial_instance_waiting_on_its_own_call_raises_at_once(local_runtime):
    mirror = Mirror.invoke()
    yr.get(mirror.remember.invoke(mirror))
    with pytest.raises(yr.YRError, match="deadlock") as caught:
        _within_deadline(
            lambda: yr.get(mirror.ask_peer.invoke(DEADLINE_S * 2), timeout=DEADLINE_S),
            what="a self-call",
        )
    message = str(caught.value)
    assert mirror.instance_id in message and "Mirror.ping" in message
    assert f"{mirror.instance_id} -> {mirror.instance_id}" in message
    assert not isinstance(caught.value, yr.YRTimeoutError)


def test_a_concurrent_instance_may_wait_on_its_own_call(local_runtime):
    mirror = ParallelMirror.invoke()
    yr.get(mirror.remember.invoke(mirror))
    assert yr.get(mirror.ask_myself.invoke(), timeout=DEADLINE_S) == "pong"


def test_a_serial_instance_may_wait_on_another_instance(local_runtime):
    asker, answerer = Mirror.invoke(), Mirror.invoke()
    yr.get(asker.remember.invoke(answerer))
    assert yr.get(asker.ask_peer.invoke(30), timeout=DEADLINE_S) == "pong"


def test_refs_pending_at_finalize_all_settle_with_a_clear_error(local_runtime):
    mirror = Mirror.invoke()
    running = mirror.slow.invoke(30, "never")
    waiting = [mirror.both.invoke(running, i) for i in range(5)]  # queued, not sent
    yr.finalize()
    refs = [running, *waiting]
    ready, pending = _within_deadline(
        lambda: yr.wait(refs, wait_num=len(refs), timeout=-1),
        what="yr.wait on refs pending at finalize",
    )
    assert len(ready) == len(refs) and not pending
    for ref in refs:
        with pytest.raises(yr.YRError, match=r"yr\.finalize\(\) ended the session"):
            yr.get(ref, timeout=-1)


def test_invoke_after_finalize_on_an_old_handle_is_a_clear_error(local_runtime):
    mirror = Mirror.invoke()
    client = yr.session.current().client
    yr.finalize()
    with pytest.raises(yr.YRError, match=r"finalize"):
        client.submit(mirror.instance_id, mirror._class_info, "ping", (), {})


def test_a_call_that_failed_to_send_leaves_no_gap_for_the_next(local_runtime):
    mirror = Mirror.invoke()
    yr.get(mirror.ping.invoke())  # started: the next call goes out alone
    client = yr.session.current().client
    running = mirror.slow.invoke(0.5, "x")  # on the wire: what follows is batched
    # A batch that fails in this process, after its seq was taken (protobuf refuses the name).
    [unsendable] = client.submit(mirror.instance_id, mirror._class_info, "bad\ud800", (), {})
    with pytest.raises(yr.YRError, match="could not send"):
        yr.get(unsendable, timeout=DEADLINE_S)
    assert yr.get(running, timeout=DEADLINE_S) == "x"
    # Served at once, not after the server's 30 s give-up on the missing seq.
    assert yr.get(mirror.ping.invoke(), timeout=20) == "pong"


def test_serial_instances_waiting_on_each_other_raise_instead_of_deadlocking(local_runtime):
    first, second = Mirror.invoke(), Mirror.invoke()
    yr.get([first.remember.invoke(second), second.remember.invoke(first)])
    # first waits on second, whose method waits on first: a cycle of two
    with pytest.raises(yr.YRError, match="deadlock") as caught:
        _within_deadline(
            lambda: yr.get(first.ask_peer_to_ask.invoke(DEADLINE_S * 2), timeout=DEADLINE_S),
            what="a cycle of two waits",
        )
    message = str(caught.value)
    cycle = f"{second.instance_id} -> {first.instance_id} -> {second.instance_id}"
    assert cycle in message, message
    assert not isinstance(caught.value, yr.YRTimeoutError)
    # neither instance stays blocked: both answer afterwards
    assert yr.get([first.ping.invoke(), second.ping.invoke()], timeout=DEADLINE_S) == ["pong"] * 2
    assert local_runtime.waits.snapshot() == {}


def test_quick_waits_of_a_serial_instance_cost_no_round_trip_to_the_runtime(
    local_runtime, monkeypatch
):
    asker, answerer = Mirror.invoke(), Mirror.invoke()
    yr.get(asker.remember.invoke(answerer))
    reported: list[str] = []
    block = local_runtime.waits.block
    monkeypatch.setattr(
        local_runtime.waits,
        "block",
        lambda waiter, targets: reported.append(waiter) or block(waiter, targets),
    )
    asks = 20
    for _ in range(asks):  # each a quick call: answered well before a wait is worth reporting
        assert yr.get(asker.ask_peer.invoke(DEADLINE_S), timeout=DEADLINE_S) == "pong"
    assert len(reported) < asks / 2  # all of them were; none but on a stalled machine


def test_the_wait_graph_shows_who_waits_on_whom_while_a_wait_lasts(local_runtime, tmp_path):
    asker, answerer = Mirror.invoke(), Mirror.invoke()
    yr.get(asker.remember.invoke(answerer))
    yr.get(answerer.ping.invoke())
    release = tmp_path / "release"
    # keeps answerer busy, so asker's wait lasts until the wait has been seen
    busy = answerer.busy_until.invoke(str(release), DEADLINE_S, "done")
    asking = asker.ask_peer.invoke(DEADLINE_S)
    wait_for(
        lambda: local_runtime.waits.snapshot() == {asker.instance_id: [answerer.instance_id]},
        timeout=DEADLINE_S,
        what="the asker's wait to be recorded",
    )
    release.touch()
    assert yr.get([busy, asking], timeout=DEADLINE_S) == ["done", "pong"]
    assert local_runtime.waits.snapshot() == {}
