"""Sends on a local connection never block: while a concurrency=1 instance runs a long call
its socket fills, and what the kernel does not take waits in the connection's backlog."""

from __future__ import annotations

import os
import socket
import threading

import grpc
import pytest

import yr
from tests.gate_instances import Gate
from tests.support import wait_for
from yr.localcall import connection as connection_module

PAYLOAD = b"x" * (256 << 10)  # inline (below the shared-memory threshold)
CALLS = 200  # 50 MiB: far more than a Unix socket's buffers hold
DEADLINE_S = 60.0


def _busy_gate_flooded(tmp_path, name: str):
    """A gate stuck in a long call, with more queued calls to it than its socket holds."""
    gate = Gate.invoke()
    pid = yr.get(gate.pid.invoke(), timeout=60)
    release = str(tmp_path / name)
    long_call = gate.wait_for_file.invoke(release)
    refs = [gate.take.invoke(index, PAYLOAD) for index in range(CALLS)]
    return gate, pid, release, long_call, refs


def test_a_call_to_another_instance_is_sent_while_a_busy_instances_socket_is_full(
    local_runtime, tmp_path
):
    _gate, _pid, release, long_call, refs = _busy_gate_flooded(tmp_path, "release")
    settled_order: list[int] = []
    for index, ref in enumerate(refs):
        ref.future.add_done_callback(lambda _, index=index: settled_order.append(index))
    other = Gate.invoke()
    yr.get(other.pid.invoke(), timeout=60)
    other_release = str(tmp_path / "other")
    try:
        first = other.wait_for_file.invoke(other_release)
        # Queued while ``first`` is out, so the shared flusher thread sends it.
        second = other.take.invoke(-1, b"")
        open(other_release, "w").close()
        # Waiting on its future alone (no yr.get, which would send it from this thread).
        wait_for(second.done, timeout=DEADLINE_S, what="the other instance's queued call")
        assert yr.get([first, second], timeout=DEADLINE_S)[1] == -1
        assert not long_call.done()
    finally:
        open(release, "w").close()
    assert yr.get(refs, timeout=DEADLINE_S) == list(range(CALLS))
    assert settled_order == list(range(CALLS))


def test_get_with_a_timeout_on_a_call_queued_behind_a_full_socket_times_out(
    local_runtime, tmp_path
):
    gate, _pid, release, long_call, refs = _busy_gate_flooded(tmp_path, "release")
    queued = gate.take.invoke(CALLS, b"")
    outcome: list[BaseException] = []

    def get_with_timeout() -> None:
        try:
            yr.get(queued, timeout=1)
        except BaseException as error:
            outcome.append(error)

    getter = threading.Thread(target=get_with_timeout)
    try:
        getter.start()
        getter.join(DEADLINE_S)
        assert not getter.is_alive(), "yr.get(timeout=1) blocked sending behind a full socket"
        assert len(outcome) == 1 and isinstance(outcome[0], yr.YRTimeoutError)
    finally:
        open(release, "w").close()
        getter.join(DEADLINE_S)
    assert yr.get([*refs, queued], timeout=DEADLINE_S) == list(range(CALLS + 1))
    assert yr.get(long_call, timeout=DEADLINE_S) == "yr-method"


def test_calls_waiting_in_the_backlog_of_a_dead_instance_fail_with_the_died_error(
    local_runtime, tmp_path
):
    gate, pid, _release, long_call, refs = _busy_gate_flooded(tmp_path, "release")
    connection = yr.session.current().client._pipelines[gate.instance_id].stub._connection
    try:
        wait_for(lambda: connection._backlog, timeout=DEADLINE_S, what="a backlog to build up")
    finally:
        os.kill(pid, 9)
    for ref in [long_call, *refs]:
        with pytest.raises(yr.YRInstanceDiedError):
            yr.get(ref, timeout=DEADLINE_S)
    assert not connection._backlog and not connection._pending


def _send_losing_the_race_to_a_failing_connection(monkeypatch) -> list[object]:
    """Another thread fails the connection between a send's registration and its write;
    what the call's on_done was told."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    connection = connection_module.Connection(ours)
    framed = connection_module.wire.frame

    def failing_in_between(*args):  # where the other thread's _fail lands
        connection._fail(connection_module.LocalRpcError(grpc.StatusCode.UNAVAILABLE, "gone"))
        return framed(*args)

    monkeypatch.setattr(connection_module.wire, "frame", failing_in_between)
    told: list[object] = []
    try:
        connection.send(b"call", lambda reply, error: told.append(error))
    finally:
        theirs.close()
    return told


def test_a_send_that_loses_the_race_to_a_failing_connection_reports_its_call_once(monkeypatch):
    """The call is settled once, by that failure; the send does not report it a second time."""
    told = _send_losing_the_race_to_a_failing_connection(monkeypatch)
    assert len(told) == 1 and told[0] is not None


def test_a_call_that_lost_the_race_to_a_failing_connection_is_known_never_delivered(
    monkeypatch,
):
    """Never written, so it cannot have run: a restarting instance's next incarnation may."""
    told = _send_losing_the_race_to_a_failing_connection(monkeypatch)
    assert told[0].never_delivered


def test_a_call_sent_on_a_connection_already_lost_is_known_never_delivered():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    connection = connection_module.Connection(ours)
    theirs.close()  # the instance is gone: the collector sees its end
    wait_for(lambda: connection.failure is not None, timeout=30, what="the connection to fail")
    with pytest.raises(connection_module.LocalRpcError) as refused:
        connection.send(b"call", lambda reply, error: None)
    assert refused.value.never_delivered


def test_a_call_written_before_the_connection_failed_is_not_known_never_delivered():
    """It may have run: resending it could run it twice."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    connection = connection_module.Connection(ours)
    told: list[object] = []
    connection.send(b"call", lambda reply, error: told.append(error))
    theirs.close()
    wait_for(lambda: told, timeout=30, what="the call to be failed with the connection")
    assert not told[0].never_delivered
