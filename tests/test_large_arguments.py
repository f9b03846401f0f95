"""Large arguments travel through shared memory on one machine, and leave nothing behind."""

from __future__ import annotations

import hashlib
import os
import signal

import numpy as np
import pytest

import yr
from tests.call_instances import Keeper, KeeperMaker, Mirror
from tests.instances import Counter
from tests.support import wait_for
from yr import sharedmem
from yr.client import shared_memory_prefix
from yr.runtime.base import InstanceSpec


def _segments(runtime) -> list[str]:
    """This session's segments (other sessions on the machine may come and go meanwhile)."""
    prefix = shared_memory_prefix(runtime.session_token) + "-"
    return [name for name in os.listdir(sharedmem.SHM_DIRECTORY) if name.startswith(prefix)]


@pytest.fixture
def shared_memory_writes(monkeypatch) -> list[int]:
    """The sizes of the buffers this process moved into shared memory (observed, not faked)."""
    sizes: list[int] = []
    original = sharedmem.BufferWriter.__call__

    def observed(writer, buffer):
        in_band = original(writer, buffer)
        if not in_band:
            sizes.append(buffer.raw().nbytes)
        return in_band

    monkeypatch.setattr(sharedmem.BufferWriter, "__call__", observed)
    return sizes


def test_a_large_array_argument_arrives_intact(local_runtime, shared_memory_writes):
    counter = Counter.invoke()
    array = np.arange(4 * 1024 * 1024, dtype=np.float64)  # 32 MiB
    echoed = yr.get(counter.echo.invoke(array))
    assert echoed.shape == array.shape and np.array_equal(echoed, array)
    assert shared_memory_writes == [array.nbytes]


def test_a_large_argument_leaves_no_shared_memory_behind(local_runtime, shared_memory_writes):
    counter = Counter.invoke()
    yr.get([counter.echo.invoke(np.ones(1 << 20)) for _ in range(3)])
    assert len(shared_memory_writes) == 3
    yr.finalize()  # segments are reused while the session lives
    assert _segments(local_runtime) == []


def test_an_instance_may_modify_its_copy_of_a_shared_argument(local_runtime, shared_memory_writes):
    counter = Counter.invoke()
    array = np.zeros(1 << 20)
    assert yr.get(counter.fill.invoke(array, 2.0)) == 2.0 * array.size
    assert shared_memory_writes == [array.nbytes]
    assert not array.any()  # the caller's array is untouched


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_large_bytes_arguments_travel_through_shared_memory(
    local_runtime, shared_memory_writes, kind
):
    mirror = Mirror.invoke()
    data = kind(os.urandom(3 << 20))
    assert yr.get(mirror.size.invoke(data)) == (kind.__name__, len(data))
    assert yr.get(mirror.both.invoke([data], {"k": data})) == ([data], {"k": data})
    assert shared_memory_writes == [len(data)] * 3


def test_large_bytes_keyword_arguments_travel_through_shared_memory(
    local_runtime, shared_memory_writes
):
    mirror = Mirror.invoke()
    data = os.urandom(3 << 20)
    assert yr.get(mirror.size.invoke(value=data)) == ("bytes", len(data))
    assert shared_memory_writes == [len(data)]


def test_small_bytes_arguments_stay_in_the_call(local_runtime, shared_memory_writes):
    mirror = Mirror.invoke()
    assert yr.get(mirror.size.invoke(b"x" * 1000)) == ("bytes", 1000)
    assert shared_memory_writes == []


def test_only_yr_segment_names_are_opened():
    with pytest.raises(ValueError, match="not a yr shared-memory segment"):
        sharedmem.open_buffers(["../../etc/passwd"])


def _digest(data) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_a_large_constructor_argument_travels_through_shared_memory(
    local_runtime, shared_memory_writes, kind
):
    data = kind(os.urandom(3 << 20))
    keeper = Keeper.invoke(data)
    assert yr.get(keeper.described.invoke(), timeout=60) == (kind.__name__, _digest(data))
    assert shared_memory_writes == [len(data)]


def test_an_instance_may_modify_a_large_array_its_constructor_was_given(
    local_runtime, shared_memory_writes
):
    array = np.ones(1 << 20)
    keeper = Keeper.invoke(array)
    assert yr.get(keeper.array_is_writable.invoke(), timeout=60) is True
    assert shared_memory_writes == [array.nbytes]


def test_a_restarted_instance_gets_its_large_constructor_argument_again(local_runtime):
    data = os.urandom(3 << 20)
    keeper = Keeper.options(yr.InvokeOptions(cpu=100, recover_retry_times=1)).invoke(data)
    first = yr.get(keeper.pid.invoke(), timeout=60)
    os.kill(first, signal.SIGKILL)

    def next_incarnation() -> int | None:
        try:
            pid = yr.get(keeper.pid.invoke(), timeout=60)
        except yr.YRInstanceDiedError:
            return None  # the call reached the dying incarnation
        return pid if pid != first else None

    wait_for(next_incarnation, timeout=60, what="the restarted incarnation")
    assert yr.get(keeper.described.invoke(), timeout=60) == ("bytes", _digest(data))


def test_an_instance_gives_its_child_a_large_constructor_argument_through_shared_memory(
    local_runtime,
):
    (kind, digest), expected, keeper = yr.get(KeeperMaker.invoke().make.invoke(3 << 20), timeout=60)
    assert (kind, digest) == ("bytes", expected)
    assert len(_segments(local_runtime)) == 1  # kept for the child's restart
    keeper.terminate()
    wait_for(lambda: not _segments(local_runtime), timeout=30, what="the segment to go")


def test_constructor_segments_stay_while_a_restart_may_need_them(local_runtime):
    keeper = Keeper.options(yr.InvokeOptions(cpu=100, recover_retry_times=1)).invoke(
        os.urandom(3 << 20)
    )
    yr.get(keeper.pid.invoke(), timeout=60)
    assert len(_segments(local_runtime)) == 1
    keeper.terminate()
    wait_for(lambda: not _segments(local_runtime), timeout=30, what="the segment to go")


def test_constructor_segments_go_once_no_restart_can_need_them(local_runtime):
    keeper = Keeper.invoke(os.urandom(3 << 20))
    assert yr.get(keeper.described.invoke(), timeout=60)[0] == "bytes"
    wait_for(lambda: not _segments(local_runtime), timeout=30, what="the segment to go")


def test_constructor_segments_go_when_the_constructor_fails(local_runtime):
    keeper = Keeper.invoke(os.urandom(3 << 20), fail=True)
    with pytest.raises(ValueError, match="refused in __init__"):
        yr.get(keeper.described.invoke(), timeout=60)
    wait_for(lambda: not _segments(local_runtime), timeout=30, what="the segment to go")


def test_a_segment_of_another_session_is_refused_before_anything_is_created(local_runtime):
    foreign = sharedmem.session_prefix("another session") + "-" + "0" * 16
    spec = InstanceSpec(
        class_info=Keeper._class_info,
        payload=b"",
        options=yr.InvokeOptions(cpu=100),
        payload_buffers=(foreign,),
    )
    with pytest.raises(ValueError, match="not a shared-memory segment of this session"):
        local_runtime.create(spec, owner_id=None)
    assert local_runtime.pids() == {}
