"""A caller and its instance poll their socket for a moment before they sleep in it, and stop
polling where polling does not pay (yr/localcall/spinning.py)."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

import yr
from tests.gate_instances import Gate
from tests.support import assert_init_refused_starting_nothing
from yr.localcall import spinning


@pytest.fixture
def polling_on(monkeypatch) -> None:
    monkeypatch.setattr(spinning, "ENABLED", True)


@pytest.fixture
def pair():
    near, far = socket.socketpair()
    yield near, far
    near.close()
    far.close()


def test_a_spinner_finds_bytes_that_are_there(polling_on, pair):
    near, far = pair
    far.send(b"x")
    assert spinning.Spinner(near.fileno()).readable_soon()


def test_a_spinner_finds_bytes_that_come_while_it_polls(polling_on, pair, monkeypatch):
    monkeypatch.setattr(spinning, "SPIN_S", 30.0)  # a deadline: the bytes end the poll
    near, far = pair
    threading.Thread(target=far.send, args=(b"x",)).start()
    assert spinning.Spinner(near.fileno()).readable_soon()


def test_a_spinner_finds_the_peers_end(polling_on, pair):
    near, far = pair
    far.close()
    assert spinning.Spinner(near.fileno()).readable_soon()


def test_a_spinner_gives_up_when_its_budget_runs_out(polling_on, pair):
    near, _ = pair
    assert not spinning.Spinner(near.fileno()).readable_soon()


def _polled(spinner: spinning.Spinner, far: socket.socket, near: socket.socket) -> bool:
    """One wait with bytes there: True if the spinner polled (and found them), False if it
    let the wait pass without polling."""
    far.send(b"x")
    found = spinner.readable_soon()
    near.recv(16)
    return found


def _found_nothing_then_passed(spinner: spinning.Spinner) -> int:
    """A poll that finds nothing, then the waits that pass without polling after it."""
    assert not spinner.readable_soon()
    passed = 0
    while spinner._skipped < spinner._skip:
        assert not spinner.readable_soon()
        passed += 1
    return passed


def test_skipped_waits_double_after_each_poll_that_finds_nothing_up_to_the_limit(polling_on, pair):
    near, _ = pair
    spinner = spinning.Spinner(near.fileno())
    runs = [_found_nothing_then_passed(spinner) for _ in range(9)]
    assert runs == [1, 2, 4, 8, 16, 32, 64, 64, 64]  # MAX_SKIPPED


def test_a_poll_that_finds_bytes_starts_the_doubling_again(polling_on, pair):
    near, far = pair
    spinner = spinning.Spinner(near.fileno())
    assert [_found_nothing_then_passed(spinner) for _ in range(3)] == [1, 2, 4]
    assert _polled(spinner, far, near)
    assert _found_nothing_then_passed(spinner) == 1


def test_yr_spin_0_turns_polling_off(monkeypatch, pair):
    monkeypatch.setenv(spinning.ENVIRONMENT_KEY, "0")
    monkeypatch.setattr(spinning, "ENABLED", True)
    spinning.configure_from_environment()
    near, far = pair
    far.send(b"x")
    assert not spinning.Spinner(near.fileno()).readable_soon()


@pytest.mark.parametrize("value", ["maybe", "2"])
def test_a_misspelt_yr_spin_is_refused_before_anything_starts(monkeypatch, value):
    monkeypatch.setenv(spinning.ENVIRONMENT_KEY, value)
    assert_init_refused_starting_nothing(f"{spinning.ENVIRONMENT_KEY}={value!r}")


def test_a_caller_waiting_for_a_long_call_sleeps_rather_than_polls(local_runtime, tmp_path):
    gate = Gate.invoke()
    yr.get(gate.ping.invoke(), timeout=60)
    release = str(tmp_path / "release")
    ref = gate.wait_for_file.invoke(release)
    # The call's length, not a synchronisation: the caller waits in yr.get meanwhile.
    threading.Timer(1.0, lambda: open(release, "w").close()).start()
    started = time.thread_time()
    assert yr.get(ref, timeout=60).startswith("yr-method")
    assert time.thread_time() - started < 0.3, "the caller polled while the call ran"
    assert os.path.exists(release)
