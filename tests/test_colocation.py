"""A synchronous caller and the serial instance it waits on take turns on one CPU: each sleeps
pinned to the CPU the other runs on, and gets its own affinity back the moment it wakes, so no
user code (and no thread it starts) ever runs pinned (yr/localcall/colocation.py)."""

from __future__ import annotations

import os
import pickle
import socket
import threading
import time
from collections.abc import Iterator

import pytest

import yr
from tests.colocation_instances import Affinities
from tests.instances import Counter
from tests.local_fixtures import local_session
from tests.support import assert_init_refused_starting_nothing, wait_for
from yr.localcall import colocation, spinning, wire
from yr.protocol import PROTOCOL_VERSION, yr_pb2
from yr.runtime.local.runtime import LocalRuntime

pytestmark = [
    pytest.mark.skipif(
        len(os.sched_getaffinity(0)) < 2, reason="pinning to one CPU needs two to choose from"
    ),
    pytest.mark.skipif(not colocation.ENABLED, reason="YR_COLOCATE=0 in this environment"),
]


@pytest.fixture
def local_runtime(monkeypatch) -> Iterator[LocalRuntime]:
    """Polling before a sleep off (spinning.py), in the driver and its instances: what is
    tested here is where the two sleep."""
    monkeypatch.setenv(spinning.ENVIRONMENT_KEY, "0")
    with local_session() as runtime:
        yield runtime


def _affinity(thread_id: int) -> set[int]:
    return os.sched_getaffinity(thread_id)


def _colocated(handle, method_thread: int, everywhere: set[int]) -> None:
    """Call from this thread until the instance lingers pinned for it: this thread is then
    the process's lone caller (colocation.SHARED_QUIET_S after any other thread waited)."""

    def pinned_after_a_call() -> bool:
        yr.get(handle.noop.invoke())
        return _affinity(method_thread) != everywhere

    wait_for(pinned_after_a_call, timeout=30, what="the method thread to linger pinned")


def _instance(handle) -> tuple[int, set[int]]:
    """The method thread of ``handle``'s instance, and the CPUs it may use."""
    return yr.get(handle.method_thread.invoke()), set(yr.get(handle.own_affinity.invoke()))


def _busy(seconds: float) -> None:
    """The caller's own work (a busy loop: sleeping would leave its CPU free)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.fixture
def prompt_whatever_the_clock(monkeypatch) -> None:
    """Every wait counts as prompt: what is tested is the pin, not how fast a loaded machine
    gets from a send to its wait (colocation.PROMPT_WAIT_S has its own test)."""
    monkeypatch.setattr(colocation, "PROMPT_WAIT_S", 600.0)


def test_a_caller_asleep_on_its_call_is_pinned_and_gets_its_affinity_back(
    local_runtime, tmp_path, prompt_whatever_the_clock
):
    handle = Affinities.invoke()
    method_thread, everywhere = _instance(handle)
    release = tmp_path / "release"
    seen: dict[str, object] = {}

    def call() -> None:
        _colocated(handle, method_thread, everywhere)
        seen["before"] = os.sched_getaffinity(0)
        yr.get(handle.wait_for_file.invoke(str(release)), timeout=60)
        seen["after"] = os.sched_getaffinity(0)

    caller = threading.Thread(target=call)
    caller.start()
    try:
        wait_for(
            lambda: caller.native_id and len(_affinity(caller.native_id)) == 1,
            timeout=30,
            what="the waiting caller to sleep pinned to one CPU",
        )
    finally:
        release.touch()
        caller.join(timeout=60)
    assert not caller.is_alive()
    assert seen["after"] == seen["before"]


def test_a_serial_instance_waits_for_its_waiting_callers_next_call_pinned_to_one_cpu(
    local_runtime, prompt_whatever_the_clock
):
    handle = Affinities.invoke()
    method_thread, everywhere = _instance(handle)
    _colocated(handle, method_thread, everywhere)
    assert len(_affinity(method_thread)) == 1


def test_a_caller_that_works_before_it_waits_leaves_the_instance_unpinned(local_runtime):
    handle = Affinities.invoke()
    method_thread, everywhere = _instance(handle)
    _colocated(handle, method_thread, everywhere)
    for call in range(100):
        ref = handle.noop.invoke()
        _busy(10 * colocation.PROMPT_WAIT_S)
        yr.get(ref)
        if call >= 1:  # the first call still carried the hint of the prompt waits before
            assert _affinity(method_thread) == everywhere, f"pinned after call {call}"


def test_threads_that_call_side_by_side_leave_their_instances_unpinned(local_runtime, monkeypatch):
    # A window no test run outlasts (the rule, not the clock), and none left from before.
    monkeypatch.setattr(colocation, "SHARED_QUIET_S", 600.0)
    monkeypatch.setattr(colocation, "_shared_until", 0.0)
    handles = [Affinities.invoke() for _ in range(2)]
    instances = [_instance(handle) for handle in handles]
    both_called = threading.Barrier(2, timeout=60)
    pinned: list[str] = []

    def calls(index: int) -> None:
        handle, (method_thread, everywhere) = handles[index], instances[index]
        yr.get(handle.noop.invoke())
        both_called.wait()
        for call in range(200):
            yr.get(handle.noop.invoke())
            if _affinity(method_thread) != everywhere:
                pinned.append(f"instance {index} after call {call}")

    callers = [threading.Thread(target=calls, args=(index,)) for index in range(2)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=120)
    assert not any(caller.is_alive() for caller in callers)
    assert pinned == []


def test_user_code_never_runs_pinned_on_either_side(local_runtime):
    handle = Affinities.invoke()
    driver_before = os.sched_getaffinity(0)
    everywhere = yr.get(handle.own_affinity.invoke())
    assert len(everywhere) >= 2
    for _ in range(200):
        assert yr.get(handle.own_affinity.invoke()) == everywhere
        assert os.sched_getaffinity(0) == driver_before
    assert yr.get(handle.affinity_of_a_thread_started_here.invoke()) == everywhere


def test_a_thread_its_user_pinned_stays_pinned(local_runtime):
    handle = Affinities.invoke()
    cpus = sorted(os.sched_getaffinity(0))
    yr.get(handle.pin_own_thread.invoke([cpus[0]]))
    seen: list[set[int]] = []

    def calls_from_another_cpu() -> None:
        os.sched_setaffinity(0, [cpus[1]])
        for _ in range(100):
            seen.append(set(yr.get(handle.own_affinity.invoke())))
        seen.append(os.sched_getaffinity(0))

    caller = threading.Thread(target=calls_from_another_cpu)
    caller.start()
    caller.join(timeout=60)
    assert not caller.is_alive()
    assert seen[:-1] == [{cpus[0]}] * 100
    assert seen[-1] == {cpus[1]}


def test_yr_colocate_0_before_init_leaves_the_method_thread_unpinned(monkeypatch):
    monkeypatch.setenv(colocation.ENVIRONMENT_KEY, "0")
    with local_session(yr.Config(num_cpus=4)):
        handle = Affinities.invoke()
        method_thread = yr.get(handle.method_thread.invoke())
        everywhere = set(yr.get(handle.own_affinity.invoke()))
        for _ in range(300):
            yr.get(handle.noop.invoke())
            assert _affinity(method_thread) == everywhere


def test_a_waited_hint_that_makes_no_sense_is_ignored_and_its_call_runs(local_runtime):
    counter = Counter.invoke()
    assert yr.get(counter.add.invoke(0)) == 0  # started and served
    path = local_runtime.endpoint(counter.instance_id).result(10).local_socket
    call = yr_pb2.CallRequest(
        caller="hinting-caller",
        seq=0,
        invocations=[yr_pb2.Invocation(method="add", arguments=pickle.dumps(((1,), {})))],
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(path)
        sock.sendall(
            wire.hello(local_runtime.session_token, PROTOCOL_VERSION)
            + wire.frame(wire.CONNECTION_ID, wire.WAITED, b"12345")  # malformed
            + wire.frame(wire.CONNECTION_ID, wire.WAITED, colocation.CPU.pack(65535))  # no CPU
            + wire.frame(7, wire.REQUEST, call.SerializeToString())
        )
        answer = sock.makefile("rb")
        request_id, kind, length = wire.FRAME.unpack(answer.read(wire.FRAME.size))
        reply = yr_pb2.CallReply.FromString(answer.read(length))
    assert (request_id, kind) == (7, wire.REPLY)
    assert pickle.loads(reply.outcomes[0].value) == 1
    assert yr.get(counter.add.invoke(1)) == 2


@pytest.mark.parametrize("value", ["maybe", "2"])
def test_a_misspelt_yr_colocate_is_refused_before_anything_starts(monkeypatch, value):
    monkeypatch.setenv(colocation.ENVIRONMENT_KEY, value)
    assert_init_refused_starting_nothing(f"{colocation.ENVIRONMENT_KEY}={value!r}")


@pytest.mark.parametrize(("value", "on"), [("0", False), ("off", False), ("1", True), ("", True)])
def test_yr_colocate_says_on_or_off(monkeypatch, value, on):
    monkeypatch.setenv(colocation.ENVIRONMENT_KEY, value)
    assert colocation.enabled_by_environment() is on
