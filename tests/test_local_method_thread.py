"""The fast path without thread hops: a concurrency=1 instance's method thread reads its local
callers' sockets itself, and a yr.get of a lone call reads its reply on the calling thread."""

from __future__ import annotations

import os
import pickle
import select
import signal
import socket
import threading

import psutil
import pytest

import yr
from tests.gate_instances import Gate
from tests.instances import Counter
from tests.support import wait_for
from yr import serialization
from yr.localcall import claims, wire
from yr.localcall.channel import LocalChannel
from yr.protocol import PROTOCOL_VERSION, yr_pb2


def _endpoint(runtime, handle):
    """The instance's endpoint, once it serves calls."""
    yr.get(handle.pid.invoke(), timeout=60)
    return runtime.endpoint(handle.instance_id).result(10)


def _record(endpoint, handle, caller: str, seq: int, item: str) -> yr_pb2.CallRequest:
    return yr_pb2.CallRequest(
        caller=caller,
        seq=seq,
        instance_id=handle.instance_id,
        incarnation=endpoint.incarnation,
        invocations=[yr_pb2.Invocation(method="record", arguments=pickle.dumps(((item,), {})))],
    )


def _served_connections(pid: int, path: str) -> int:
    return len([c for c in psutil.Process(pid).net_connections(kind="unix") if c.laddr == path])


def _open_authenticated(path: str, token: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(path)
    sock.sendall(wire.hello(token, PROTOCOL_VERSION))
    return sock


def test_two_callers_batches_interleave_each_in_its_own_seq_order(local_runtime):
    counter = Counter.invoke()
    endpoint = _endpoint(local_runtime, counter)
    channel = LocalChannel(
        endpoint.local_socket, token=local_runtime.session_token, version=PROTOCOL_VERSION
    )
    answered = threading.Event()
    errors: list[object] = []

    def settled(_reply: bytes, error: object) -> None:
        if error is not None:
            errors.append(error)
        if len(done) == 1:
            answered.set()
        done.append(error)

    done: list[object] = []
    try:
        first = counter.record.invoke("a0")
        # The second caller's seq 1 arrives before its seq 0: it must wait for it.
        channel.start(_record(endpoint, counter, "second", 1, "b1"), settled)
        second = counter.record.invoke("a1")
        channel.start(_record(endpoint, counter, "second", 0, "b0"), settled)
        yr.get([first, second], timeout=30)
        assert answered.wait(30), "the second caller's batches were not answered"
    finally:
        channel.close()
    assert not errors
    history = yr.get(counter.history.invoke(), timeout=30)
    assert [item for item in history if item.startswith("a")] == ["a0", "a1"]
    assert [item for item in history if item.startswith("b")] == ["b0", "b1"]


def test_a_caller_stalled_mid_frame_does_not_stop_other_callers(local_runtime):
    counter = Counter.invoke()
    endpoint = _endpoint(local_runtime, counter)
    with _open_authenticated(endpoint.local_socket, local_runtime.session_token) as stalled:
        body = _record(endpoint, counter, "stalled", 0, "s0").SerializeToString()
        stalled.sendall(wire.frame(1, wire.REQUEST, body))
        _, kind, _ = wire.FRAME.unpack(stalled.recv(wire.FRAME.size, socket.MSG_WAITALL))
        assert kind == wire.REPLY  # served: the connection is read like any other now
        stalled.sendall(wire.FRAME.pack(2, wire.REQUEST, 1000) + b"x" * 10)  # 990 bytes short
        # The partial frame is read by the second call at the latest (it was sent first).
        assert [yr.get(counter.add.invoke(5), timeout=30) for _ in range(3)] == [5, 10, 15]


def test_a_caller_that_dies_mid_frame_is_dropped_and_the_instance_serves_on(local_runtime):
    counter = Counter.invoke()
    endpoint = _endpoint(local_runtime, counter)
    pid = yr.get(counter.pid.invoke())
    before = _served_connections(pid, endpoint.local_socket)
    with _open_authenticated(endpoint.local_socket, local_runtime.session_token) as dying:
        dying.sendall(wire.FRAME.pack(1, wire.REQUEST, 1000) + b"x" * 10)
        wait_for(
            lambda: _served_connections(pid, endpoint.local_socket) > before,
            timeout=30,
            what="the instance to accept the connection",
        )
    wait_for(
        lambda: _served_connections(pid, endpoint.local_socket) == before,
        timeout=30,
        what="the instance to close its side of the dead caller's connection",
    )
    assert yr.get(counter.add.invoke(2), timeout=30) == 2
    assert psutil.Process(pid).cpu_times().user < 60  # not spinning on the closed socket


def _received_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the instance closed the connection"
        data += chunk
    return bytes(data)


def test_a_caller_that_reads_no_replies_holds_up_no_other_caller_and_loses_none(local_runtime):
    gate = Gate.invoke()
    endpoint = _endpoint(local_runtime, gate)
    calls, size = 16, 1 << 20  # 16 MiB of replies: far more than a Unix socket holds unread
    with _open_authenticated(endpoint.local_socket, local_runtime.session_token) as silent:
        for seq in range(calls):
            request = yr_pb2.CallRequest(
                caller="silent",
                seq=seq,
                instance_id=gate.instance_id,
                incarnation=endpoint.incarnation,
                invocations=[
                    yr_pb2.Invocation(method="blob", arguments=pickle.dumps(((size,), {})))
                ],
            )
            silent.sendall(wire.frame(seq + 1, wire.REQUEST, request.SerializeToString()))
        assert silent.recv(1, socket.MSG_PEEK)  # the instance is answering them
        assert yr.get(gate.ping.invoke(), timeout=30) == "pong"
        answered = []
        for _ in range(calls):
            request_id, kind, length = wire.FRAME.unpack(_received_exactly(silent, wire.FRAME.size))
            reply = yr_pb2.CallReply.FromString(_received_exactly(silent, length))
            assert kind == wire.REPLY
            assert serialization.loads(reply.outcomes[0].value) == b"x" * size
            answered.append(request_id)
    assert answered == list(range(1, calls + 1))


def test_a_lone_calls_reply_is_read_by_the_thread_that_waits_for_it(local_runtime, tmp_path):
    gate = Gate.invoke()
    _endpoint(local_runtime, gate)
    release = str(tmp_path / "release")
    ref = gate.wait_for_file.invoke(release)
    settled_on: list[str] = []
    ref.future.add_done_callback(lambda _: settled_on.append(threading.current_thread().name))
    connection = yr.session.current().client._pipelines[gate.instance_id].stub._connection

    def release_once_the_caller_reads() -> None:
        wait_for(lambda: connection._reading, timeout=30, what="yr.get to read the socket")
        open(release, "w").close()

    releaser = threading.Thread(target=release_once_the_caller_reads)
    releaser.start()
    try:
        assert yr.get(ref, timeout=60) == "yr-method"
    finally:
        open(release, "w").close()
        releaser.join(60)
    assert settled_on == [threading.current_thread().name]


def test_a_lone_call_read_inline_still_honours_the_get_timeout(local_runtime, tmp_path):
    gate = Gate.invoke()
    _endpoint(local_runtime, gate)
    release = str(tmp_path / "release")
    ref = gate.wait_for_file.invoke(release)
    try:
        with pytest.raises(yr.YRTimeoutError):
            yr.get(ref, timeout=0.5)
        assert not ref.done()
    finally:
        open(release, "w").close()
    assert yr.get(ref, timeout=60) == "yr-method"


def test_a_long_call_does_not_stop_other_local_calls_when_concurrency_is_two(
    local_runtime, tmp_path
):
    gate = Gate.options(yr.InvokeOptions(cpu=100, concurrency=2)).invoke()
    _endpoint(local_runtime, gate)
    release = str(tmp_path / "release")
    long_call = gate.wait_for_file.invoke(release)
    try:
        assert yr.get([gate.ping.invoke() for _ in range(3)], timeout=30) == ["pong"] * 3
        assert not long_call.done()
    finally:
        open(release, "w").close()
    assert yr.get(long_call, timeout=60).startswith("yr-method")


def _connection_to(handle):
    return yr.session.current().client._pipelines[handle.instance_id].stub._connection


def test_a_reply_there_before_its_get_is_read_by_the_getting_thread(local_runtime, monkeypatch):
    monkeypatch.setattr(claims, "CLAIM_S", 60.0)  # the claim outlasts the wait below
    gate = Gate.invoke()
    _endpoint(local_runtime, gate)
    ref = gate.ping.invoke()
    settled_on: list[str] = []
    ref.future.add_done_callback(lambda _: settled_on.append(threading.current_thread().name))
    connection = _connection_to(gate)
    readable, _, _ = select.select([connection._socket], [], [], 30)
    assert readable, "the reply did not arrive"
    assert connection._claimed, "the sender does not hold the reading role: the collector may"
    assert yr.get(ref, timeout=30) == "pong"
    assert settled_on == [threading.current_thread().name]


def test_a_claim_younger_than_the_claim_timer_outlives_its_firing(local_runtime, monkeypatch):
    monkeypatch.setattr(claims, "CLAIM_S", 2.0)  # the margin left after the first firing
    gate = Gate.invoke()
    _endpoint(local_runtime, gate)
    assert yr.get(gate.ping.invoke(), timeout=30) == "pong"  # its claim armed the timer
    ref = gate.ping.invoke()  # claimed while the timer is armed for the claim before
    settled_on: list[str] = []
    ref.future.add_done_callback(lambda _: settled_on.append(threading.current_thread().name))
    connection = _connection_to(gate)
    wait_for(
        lambda: connection._timed_claim == connection._claims,
        timeout=30,
        what="the timer armed for the first claim to fire",
    )
    assert connection._claimed, "the firing ended the younger claim: the collector may read"
    assert yr.get(ref, timeout=30) == "pong"
    assert settled_on == [threading.current_thread().name]


def test_a_claim_nobody_uses_ends_and_the_collector_reads_the_reply(local_runtime):
    gate = Gate.invoke()
    _endpoint(local_runtime, gate)
    ref = gate.ping.invoke()  # its sender never waits for it
    wait_for(ref.done, timeout=30, what="the collector to read the reply")
    assert not _connection_to(gate)._claimed


def _call_until_the_claim_timer_backs_off_fully(gate) -> claims.ClaimTimer:
    """Sync calls, each claim used, until firings that ended nothing made the period longest."""
    timer = _connection_to(gate)._claim_timer

    def called_and_backed_off() -> bool:
        assert yr.get(gate.ping.invoke(), timeout=30) == "pong"
        return timer.period == claims.MAX_CLAIM_S

    wait_for(called_and_backed_off, timeout=30, what="the claim timer's period to grow", interval=0)
    return timer


def test_a_claim_timer_whose_firings_end_nothing_fires_less_often(local_runtime):
    gate = Gate.invoke()
    _endpoint(local_runtime, gate)
    timer = _connection_to(gate)._claim_timer
    assert timer.period == claims.CLAIM_S
    _call_until_the_claim_timer_backs_off_fully(gate)


def test_an_unused_claim_after_used_ones_still_ends_and_the_timer_hurries_again(local_runtime):
    gate = Gate.invoke()
    _endpoint(local_runtime, gate)
    timer = _call_until_the_claim_timer_backs_off_fully(gate)
    ref = gate.ping.invoke()  # its sender never waits for it
    wait_for(ref.done, timeout=30, what="the collector to read the reply")
    assert ref.future.result() == "pong"
    assert timer.period == claims.CLAIM_S


def test_an_instance_that_dies_under_a_claim_fails_its_call_at_once(local_runtime, monkeypatch):
    monkeypatch.setattr(claims, "CLAIM_S", 60.0)  # the claim outlasts the wait below
    gate = Gate.invoke()
    pid = yr.get(gate.pid.invoke(), timeout=60)
    ref = gate.wait_for_file.invoke("/nonexistent/never-created")  # its sender never waits
    assert _connection_to(gate)._claimed
    os.kill(pid, signal.SIGKILL)
    wait_for(ref.done, timeout=30, what="the call to the dead instance to fail")
    with pytest.raises(yr.YRInstanceDiedError):
        ref.future.result()


def _thread_cpu_s(thread: threading.Thread) -> float:
    [times] = [times for times in psutil.Process().threads() if times.id == thread.native_id]
    return times.user_time + times.system_time


def test_a_hang_up_while_a_thread_reads_leaves_the_collector_asleep(local_runtime):
    gate = Gate.invoke()
    pid = yr.get(gate.pid.invoke(), timeout=60)
    connection = _connection_to(gate)
    collector_cpu_s: list[object] = []

    def die_while_the_role_is_held(_: object) -> None:  # on the thread reading the reply
        try:
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: connection._parked, timeout=30, what="the collector to stop watching")
            before = _thread_cpu_s(connection._collector)
            threading.Event().wait(0.5)  # a window to watch it in, not a synchronisation
            collector_cpu_s.append(_thread_cpu_s(connection._collector) - before)
        except AssertionError as error:  # a callback's exception would be swallowed
            collector_cpu_s.append(error)

    ref = gate.ping.invoke()
    ref.future.add_done_callback(die_while_the_role_is_held)
    assert yr.get(ref, timeout=30) == "pong"
    [spent] = collector_cpu_s
    assert isinstance(spent, float) and spent < 0.2, f"the collector spun: {spent}"
    wait_for(lambda: connection.failure is not None, timeout=30, what="the hang-up to be read")


def test_waiting_without_reading_ends_the_claim_at_once(local_runtime, monkeypatch):
    monkeypatch.setattr(claims, "CLAIM_S", 60.0)
    gate = Gate.invoke()
    _endpoint(local_runtime, gate)
    ref = gate.ping.invoke()
    ready, _ = yr.wait([ref], timeout=30)  # waits on the future: the collector must read it
    assert ready == [ref]
