"""A local instance builds its gRPC server only when its gRPC port is dialled (yr/grpc_on_demand):
idle, it runs none of gRPC's threads; dialled, the port serves the same object as the socket."""

from __future__ import annotations

import os
import subprocess
import sys

import grpc
import pytest

import yr
from tests.instances import Counter
from tests.support import wait_for
from yr import serialization
from yr.localcall.wire import transport
from yr.protocol import (
    PROTOCOL_METADATA_KEY,
    PROTOCOL_VERSION,
    TOKEN_METADATA_KEY,
    yr_pb2,
    yr_pb2_grpc,
)

pytestmark = pytest.mark.skipif(
    transport() != "local", reason="with YR_TRANSPORT=grpc every instance serves gRPC at once"
)


def _foreign_threads(pid: int) -> list[str]:
    """Threads a C library started and named (gRPC's core names each of its own); Python's
    threads keep the process's name."""
    with open(f"/proc/{pid}/comm") as comm:
        own = comm.read().strip()
    names = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as comm:
                names.append(comm.read().strip())
        except FileNotFoundError:  # a thread that just ended
            continue
    return [name for name in names if name != own]


def _metadata(runtime) -> tuple[tuple[str, str], ...]:
    return (
        (TOKEN_METADATA_KEY, runtime.session_token),
        (PROTOCOL_METADATA_KEY, str(PROTOCOL_VERSION)),
    )


@pytest.fixture
def idle_counter(local_runtime):
    counter = Counter.invoke()
    pid = yr.get(counter.pid.invoke(), timeout=30)  # a call over the socket, not gRPC
    endpoint = local_runtime.endpoint(counter.instance_id).result(10)
    return counter, pid, endpoint.address


def test_an_idle_local_instance_runs_none_of_grpcs_threads(idle_counter):
    _, pid, _ = idle_counter
    assert _foreign_threads(pid) == []


def test_dialling_the_grpc_port_starts_grpc_in_the_instance(local_runtime, idle_counter):
    _, pid, address = idle_counter
    with grpc.insecure_channel(address) as channel:
        reply = yr_pb2_grpc.InstanceStub(channel).Hello(
            yr_pb2.HelloRequest(), metadata=_metadata(local_runtime), timeout=30
        )
    assert reply.pid == pid
    wait_for(lambda: _foreign_threads(pid), timeout=10, what="gRPC's threads in the instance")


def test_a_grpc_call_reaches_the_object_the_socket_calls_reach(local_runtime, idle_counter):
    counter, _, address = idle_counter
    yr.get(counter.add.invoke(5), timeout=30)
    invocation = yr_pb2.Invocation(method="add", arguments=serialization.dumps(((2,), {})))
    request = yr_pb2.CallRequest(caller="grpc-test", seq=0, invocations=[invocation])
    with grpc.insecure_channel(address) as channel:
        reply = yr_pb2_grpc.InstanceStub(channel).Call(
            request, metadata=_metadata(local_runtime), timeout=30
        )
    assert serialization.loads(reply.outcomes[0].value) == 7
    assert yr.get(counter.add.invoke(0), timeout=30) == 7


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1])


# Connects as another user, sends what is not HTTP/2, and waits until the instance hangs up.
_FOREIGN_DIALLER = """
import os, socket, sys
os.setgid(65534); os.setuid(65534)
host, port = sys.argv[1].rsplit(":", 1)
with socket.socket() as sock:  # an address literal: no name lookup as nobody
    sock.settimeout(60)
    sock.connect((host, int(port)))
    try:
        sock.sendall(b"not a gRPC preface, just garbage\\r\\n" * 100)
        while sock.recv(65536):
            pass
    except ConnectionError:  # hung up on while sending: as good as EOF
        pass
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="dialling as another user needs root")
def test_another_users_connection_does_not_make_the_instance_build_grpc(idle_counter):
    _, pid, address = idle_counter
    before = _rss_kib(pid)
    subprocess.run([sys.executable, "-c", _FOREIGN_DIALLER, address], check=True, timeout=120)
    assert _foreign_threads(pid) == []
    assert _rss_kib(pid) - before < 4096  # building gRPC's server costs ~8.6 MiB
