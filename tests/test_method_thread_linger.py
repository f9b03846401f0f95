"""A serial instance's method thread lingers in its caller's socket only while that caller
is alone: once another caller (or work through its queue) shows up, it serves everyone from
its selector in turn, so no caller waits out another's linger."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from tests.support import wait_for
from yr import dispatch


class _Caller:
    """One watched socket pair; records, on the method thread, each read and each linger."""

    def __init__(self, name: str, runner: dispatch.SerialRunner, events: list[str]) -> None:
        self.name = name
        self.ours, self.theirs = socket.socketpair()
        self.ours.setblocking(False)
        self._runner = runner
        self._events = events

    def watch(self) -> None:
        self._runner.watch(self.ours, self._on_readable)

    def send(self) -> None:
        self.theirs.send(b"x")

    def _on_readable(self) -> None:
        self.ours.recv(64)
        self._events.append(f"{self.name} read")
        self._runner.linger(self.ours, self._linger)

    def _linger(self, _seconds: float) -> None:
        self._events.append(f"{self.name} lingered")

    def close(self) -> None:
        self.ours.close()
        self.theirs.close()


@pytest.fixture
def runner_and_callers(monkeypatch):
    # A window no test run outlasts: what is tested is the rule, not the clock.
    monkeypatch.setattr(dispatch, "SHARED_QUIET_S", 600.0)
    loop = asyncio.new_event_loop()
    runner = dispatch.SerialRunner(loop)
    events: list[str] = []
    callers = [_Caller(name, runner, events) for name in ("a", "b")]
    watched = threading.Event()

    def watch_all() -> None:
        for caller in callers:
            caller.watch()
        watched.set()

    runner.post(watch_all)  # watch() is for the method thread only
    assert watched.wait(10)
    yield runner, callers, events
    runner.stop()
    runner._thread.join(10)
    for caller in callers:
        caller.close()
    loop.close()


def test_the_method_thread_lingers_for_a_caller_that_is_alone(runner_and_callers):
    _, (a, _b), events = runner_and_callers
    a.send()
    wait_for(lambda: "a lingered" in events, timeout=10, what="a linger for the lone caller")


def test_once_a_second_caller_shows_up_the_method_thread_no_longer_lingers(runner_and_callers):
    _, (a, b), events = runner_and_callers
    a.send()
    wait_for(lambda: "a lingered" in events, timeout=10, what="a linger for the lone caller")
    b.send()
    wait_for(lambda: "b read" in events, timeout=10, what="the second caller's call read")
    a.send()
    wait_for(lambda: events.count("a read") == 2, timeout=10, what="the first caller read again")
    assert events[events.index("b read") :] == ["b read", "a read"]
