"""The same-machine fast path: calls over a Unix socket, and what it refuses to whom."""

from __future__ import annotations

import os
import pickle
import socket
import stat
import subprocess
import sys
import threading

import grpc
import psutil
import pytest

import yr
from tests.instances import Counter
from tests.support import assert_init_refused_starting_nothing, wait_for
from yr.localcall import wire
from yr.localcall.channel import LocalChannel, LocalRpcError
from yr.protocol import PROTOCOL_VERSION, yr_pb2

NOBODY = 65534
REQUEST_BYTES = 100 << 20
GROWTH_BOUND_BYTES = 32 << 20


class _CreatesFileWhenUnpickled:
    """Unpickling this opens (creates) a file: proof that a payload was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def _socket_of(runtime, handle) -> str:
    yr.get(handle.add.invoke(0))  # started and served
    return runtime.endpoint(handle.instance_id).result(10).local_socket


def _booby_trapped_request(marker: str) -> yr_pb2.CallRequest:
    arguments = pickle.dumps(((_CreatesFileWhenUnpickled(marker),), {}))
    return yr_pb2.CallRequest(
        caller="intruder",
        seq=0,
        invocations=[yr_pb2.Invocation(method="echo", arguments=arguments)],
    )


@pytest.fixture
def grpc_transport(monkeypatch) -> None:
    """YR_TRANSPORT=grpc for the session the next fixture starts."""
    monkeypatch.setenv(wire.ENVIRONMENT_KEY, "grpc")


def test_calls_to_a_local_instance_travel_over_its_unix_socket(local_runtime):
    counter = Counter.invoke()
    path = _socket_of(local_runtime, counter)
    assert path and os.path.dirname(path) == local_runtime._directory.path
    assert yr.get([counter.add.invoke(1) for _ in range(3)]) == [1, 2, 3]
    pid = yr.get(counter.pid.invoke())
    served = [c for c in psutil.Process(pid).net_connections(kind="unix") if c.laddr == path]
    assert len(served) >= 2  # the listening socket, and this driver's connection to it


def test_yr_transport_grpc_serves_no_socket_and_calls_over_grpc(grpc_transport, local_runtime):
    counter = Counter.invoke()
    assert _socket_of(local_runtime, counter) == ""
    assert yr.get(counter.add.invoke(2)) == 2
    pid = yr.get(counter.pid.invoke())
    assert not [c for c in psutil.Process(pid).net_connections(kind="unix") if c.laddr]
    assert not os.path.exists(os.path.join(local_runtime._directory.path, f"{pid}.sock"))


def test_an_unknown_transport_is_refused_before_anything_starts(monkeypatch):
    monkeypatch.setenv(wire.ENVIRONMENT_KEY, "carrier-pigeon")
    assert_init_refused_starting_nothing("YR_TRANSPORT='carrier-pigeon'")


def test_a_reply_nobody_waits_for_still_settles_its_ref(local_runtime):
    counter = Counter.invoke()
    # Sent once the instance is ready, by the thread that learns it is; read by the collector.
    assert yr.get(counter.add.invoke(0), timeout=30) == 0
    ref = counter.add.invoke(5)  # nobody calls yr.get: the connection's collector reads it
    wait_for(ref.done, timeout=30, what="the reply to settle the ref")
    assert yr.get(ref) == 5


def test_a_wrong_token_is_refused_before_anything_is_unpickled(local_runtime, tmp_path):
    path = _socket_of(local_runtime, Counter.invoke())
    marker = str(tmp_path / "unpickled")
    channel = LocalChannel(path, token="not-the-session-token", version=PROTOCOL_VERSION)
    try:
        with pytest.raises(LocalRpcError) as caught:
            channel.Call(_booby_trapped_request(marker))
    finally:
        channel.close()
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not os.path.exists(marker)


def test_a_connection_without_a_token_is_refused_before_anything_is_unpickled(
    local_runtime, tmp_path
):
    path = _socket_of(local_runtime, Counter.invoke())
    marker = str(tmp_path / "unpickled")
    body = _booby_trapped_request(marker).SerializeToString()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(path)
        sock.sendall(wire.frame(1, wire.REQUEST, body))  # no hello at all
        answer = sock.makefile("rb").read()  # everything until the server closes
    request_id, kind, length = wire.FRAME.unpack_from(answer)
    assert (request_id, kind) == (wire.CONNECTION_ID, wire.REFUSAL)
    code, _ = wire.parse_refusal(answer[wire.FRAME.size : wire.FRAME.size + length])
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert not os.path.exists(marker)


def test_a_caller_of_another_protocol_version_is_refused(local_runtime):
    path = _socket_of(local_runtime, Counter.invoke())
    channel = LocalChannel(path, token=local_runtime.session_token, version=PROTOCOL_VERSION + 1)
    try:
        with pytest.raises(LocalRpcError) as caught:
            channel.Call(yr_pb2.CallRequest(caller="old-yr", seq=0))
    finally:
        channel.close()
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "protocol mismatch" in caught.value.details()


# Sends unauthenticated data from another process, so that only the target's memory counts:
# a hello with a wrong token, or one announcing an oversized token, then 100 MiB.
_SENDER = """
import socket, struct, sys
from yr.localcall import wire
path, size, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if mode == "wrong-token":
    opening = wire.hello("x" * 32, 1) + wire.FRAME.pack(1, wire.REQUEST, size)
else:  # announces a 65535-byte token
    opening = wire.HELLO.pack(wire.MAGIC, 1, 65535)
for _ in range(2):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(path)
        try:
            sock.sendall(opening)
            chunk = bytes(1 << 20)
            for _ in range(size >> 20):
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = sock.makefile("rb").read()
        _, kind, length = wire.FRAME.unpack_from(answer)
        print(wire.parse_refusal(answer[wire.FRAME.size:wire.FRAME.size + length])[0].name)
"""


def _status_bytes(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


@pytest.mark.parametrize("mode", ["wrong-token", "oversized-token"])
def test_unauthenticated_data_does_not_grow_the_instance(local_runtime, mode):
    counter = Counter.invoke()
    path = _socket_of(local_runtime, counter)
    pid = yr.get(counter.pid.invoke())
    with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # resets the peak (VmHWM) to the current RSS
    before = _status_bytes(pid, "VmRSS")
    sent = subprocess.run(
        [sys.executable, "-c", _SENDER, path, str(REQUEST_BYTES), mode],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.split() == ["UNAUTHENTICATED", "UNAUTHENTICATED"]
    growth = _status_bytes(pid, "VmHWM") - before
    assert growth < GROWTH_BOUND_BYTES, f"the instance grew by {growth >> 20} MiB"
    assert yr.get(counter.add.invoke(1)) == 1  # and it still serves its session


def test_the_socket_is_not_accessible_to_other_users(local_runtime):
    path = _socket_of(local_runtime, Counter.invoke())
    assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) & 0o077 == 0
    if os.geteuid() != 0:
        pytest.skip("trying as another user needs root to switch users")
    child = os.fork()
    if child == 0:  # become nobody, then try to connect
        code = 3
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(path)
            code = 0
        except PermissionError:
            code = 13
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 13, "another user could connect to the socket"


def test_a_receive_bound_too_small_to_express_still_ends_the_wait():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    outcome: list[object] = []

    def receive() -> None:
        try:
            outcome.append(ours.recv(1))
        except OSError as error:
            outcome.append(error)

    with ours, theirs:
        wire.set_receive_timeout(ours, 1e-9)  # a zero SO_RCVTIMEO would mean no end at all
        reader = threading.Thread(target=receive, daemon=True)
        reader.start()
        reader.join(10)
        alive = reader.is_alive()
        theirs.shutdown(socket.SHUT_RDWR)  # a reader still waiting sees the end and returns
    assert not alive and isinstance(outcome[0], BlockingIOError)
