"""The instance server and the driver's control server against callers without the token."""

from __future__ import annotations

import os
import subprocess
import sys

import yr
from tests.instances import Counter


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class Spawner:
    def child_environment_token(self) -> str:
        """What a process started by the user's code finds in YR_SESSION_TOKEN."""
        code = "import os; print(os.environ.get('YR_SESSION_TOKEN', ''))"
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        ).stdout.strip()

    def own_environment_token(self) -> str:
        return os.environ.get("YR_SESSION_TOKEN", "")

    def nested_call(self) -> int:
        return yr.get(Counter.invoke(41).add.invoke(1))


def test_processes_started_by_an_instance_do_not_inherit_the_session_token(local_runtime):
    spawner = Spawner.invoke()
    assert yr.get(spawner.child_environment_token.invoke()) == ""
    assert yr.get(spawner.own_environment_token.invoke()) == ""


def test_an_instance_without_the_token_in_its_environment_still_creates_instances(local_runtime):
    spawner = Spawner.invoke()
    assert yr.get(spawner.own_environment_token.invoke()) == ""
    assert yr.get(spawner.nested_call.invoke()) == 42


# Sends unauthenticated requests from another process, so that only the target's memory counts.
_SENDER = """
import sys, grpc
address, method, size, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def varint(n):
    out = b""
    while n >= 0x80:
        out, n = out + bytes([n & 0x7F | 0x80]), n >> 7
    return out + bytes([n])
# A well-formed message of any type: one big unknown field (number 1000, length-delimited).
request = varint(1000 << 3 | 2) + varint(size) + bytes(size)
options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
with grpc.insecure_channel(address, options=options) as channel:
    call = channel.unary_unary(method)
    for _ in range(count):
        try:
            call(request, timeout=120)
            print("OK")
        except grpc.RpcError as error:
            print(error.code().name)
"""
REQUEST_BYTES = 100 << 20
GROWTH_BOUND_BYTES = 32 << 20


def _status_bytes(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def _peak_growth_from_unauthenticated_requests(
    pid: int, address: str, method: str, *, count: int = 2
) -> tuple[int, list[str]]:
    """How far ``pid``'s resident memory peaked above its level before the requests."""
    with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # resets the peak (VmHWM) to the current RSS
    before = _status_bytes(pid, "VmRSS")
    sent = subprocess.run(
        [sys.executable, "-c", _SENDER, address, method, str(REQUEST_BYTES), str(count)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sent.returncode == 0, sent.stderr
    return _status_bytes(pid, "VmHWM") - before, sent.stdout.split()


def test_an_unauthenticated_call_is_refused_before_its_body_grows_the_instance(local_runtime):
    counter = Counter.invoke()
    pid = yr.get(counter.pid.invoke())
    address = local_runtime.endpoint(counter.instance_id).result(10).address
    growth, codes = _peak_growth_from_unauthenticated_requests(pid, address, "/yr.v1.Instance/Call")
    assert codes == ["UNAUTHENTICATED", "UNAUTHENTICATED"]
    assert growth < GROWTH_BOUND_BYTES, f"the instance grew by {growth >> 20} MiB"


def test_an_unauthenticated_health_check_is_answered_without_reading_its_body(local_runtime):
    counter = Counter.invoke()
    pid = yr.get(counter.pid.invoke())
    address = local_runtime.endpoint(counter.instance_id).result(10).address
    growth, codes = _peak_growth_from_unauthenticated_requests(
        pid, address, "/grpc.health.v1.Health/Check"
    )
    assert codes == ["OK", "OK"]
    assert growth < GROWTH_BOUND_BYTES, f"the instance grew by {growth >> 20} MiB"


def test_an_unauthenticated_request_is_refused_before_its_body_grows_the_driver(local_runtime):
    address = local_runtime._control.address
    growth, codes = _peak_growth_from_unauthenticated_requests(
        os.getpid(), address, "/yr.v1.Runtime/Create"
    )
    assert codes == ["UNAUTHENTICATED", "UNAUTHENTICATED"]
    assert growth < GROWTH_BOUND_BYTES, f"the driver grew by {growth >> 20} MiB"


def test_the_instance_server_has_a_help_message():
    shown = subprocess.run(
        [sys.executable, "-m", "yr.server", "--help"], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert "usage: python -m yr.server" in shown.stdout
    assert "YR_SESSION_TOKEN" in shown.stdout
