"""Large arguments and results reuse shared-memory segments, never one still viewed."""

from __future__ import annotations

import os
import secrets

import numpy as np
import pytest

import yr
from tests.shm_instances import ParallelStore, Store
from tests.support import assert_init_refused_starting_nothing, wait_for
from yr import segment_pool, sharedmem

MIB = 1 << 20
ARRAY_BYTES = 8 * MIB


def _prefix() -> str:
    return sharedmem.session_prefix(yr.session.current().runtime.session_token)


def _written_by(pid: int, prefix: str | None = None) -> list[str]:
    """The reused segments process ``pid`` holds (their names start with its pid)."""
    start = f"{prefix or _prefix()}-{pid:08x}"
    return sorted(name for name in os.listdir(sharedmem.SHM_DIRECTORY) if name.startswith(start))


def test_a_second_large_argument_is_copied_into_the_first_ones_segment(local_runtime):
    store = Store.invoke()
    array = np.ones(ARRAY_BYTES // 8)
    assert yr.get(store.total.invoke(array)) == array.size
    first = _written_by(os.getpid())
    assert yr.get(store.total.invoke(array * 2)) == 2 * array.size
    assert len(first) == 1 and _written_by(os.getpid()) == first


def test_an_argument_the_instance_keeps_is_never_written_over(local_runtime):
    store = Store.invoke()
    assert yr.get(store.keep.invoke(np.full(ARRAY_BYTES // 8, 1.0))) == ARRAY_BYTES // 8
    for value in (2.0, 3.0):
        yr.get(store.total.invoke(np.full(ARRAY_BYTES // 8, value)))
    assert yr.get(store.kept_totals.invoke()) == [ARRAY_BYTES // 8 * 1.0]


def test_calls_in_flight_each_get_a_segment_of_their_own(local_runtime):
    store = ParallelStore.invoke()
    refs = [store.slow_total.invoke(np.full(MIB // 8, float(i)), 0.3) for i in range(4)]
    assert yr.get(refs, timeout=60) == [float(i * (MIB // 8)) for i in range(4)]


def test_a_large_result_comes_back_through_a_segment_of_the_instance(local_runtime):
    store = Store.invoke()
    pid = yr.get(store.pid.invoke())
    result = yr.get(store.filled.invoke(ARRAY_BYTES, 3.0))
    assert result.shape == (ARRAY_BYTES // 8,) and (result == 3.0).all()
    assert len(_written_by(pid)) == 1


def test_a_caller_may_modify_a_large_result(local_runtime):
    store = Store.invoke()
    result = yr.get(store.filled.invoke(ARRAY_BYTES, 3.0))
    result += 1.0  # its own copy-on-write view: the instance's segment is untouched
    again = yr.get(store.filled.invoke(ARRAY_BYTES, 3.0))
    assert (result == 4.0).all() and (again == 3.0).all()


def test_large_bytes_results_come_back_through_shared_memory(local_runtime):
    store = Store.invoke()
    pid = yr.get(store.pid.invoke())
    assert yr.get(store.zeros.invoke(3 * MIB)) == bytes(3 * MIB)
    assert len(_written_by(pid)) == 1


def test_a_result_the_caller_keeps_is_never_written_over(local_runtime):
    store = Store.invoke()
    first = yr.get(store.filled.invoke(ARRAY_BYTES, 1.0))
    for value in (2.0, 3.0, 4.0):
        assert yr.get(store.filled.invoke(ARRAY_BYTES, value))[0] == value
    assert (first == 1.0).all()


def test_a_result_segment_is_reused_once_the_caller_drops_the_value(local_runtime):
    store = Store.invoke()
    pid = yr.get(store.pid.invoke())
    for value in range(4):
        result = yr.get(store.filled.invoke(ARRAY_BYTES, float(value)))
        assert result[-1] == value
        del result  # no garbage collection needed: nothing holds it in a cycle
    assert len(_written_by(pid)) == 1


@pytest.fixture
def free_segments_dropped_after_half_a_second(monkeypatch) -> None:
    monkeypatch.setenv(segment_pool.IDLE_ENVIRONMENT_KEY, "0.5")  # instances inherit it


def test_a_result_the_caller_lets_go_of_goes_back_to_its_instance_without_another_call(
    free_segments_dropped_after_half_a_second, local_runtime
):
    store = Store.invoke()
    pid = yr.get(store.pid.invoke())
    result = yr.get(store.filled.invoke(ARRAY_BYTES, 1.0))
    assert len(_written_by(pid)) == 1
    del result  # and no call to the instance follows to say so
    wait_for(
        lambda: not _written_by(pid),
        timeout=30,
        what="the instance to drop the result segment its caller let go of",
    )


@pytest.fixture
def pool_of_20_mib(monkeypatch) -> None:
    monkeypatch.setenv(segment_pool.POOL_ENVIRONMENT_KEY, "20")  # instances inherit it


def test_results_a_caller_keeps_never_grow_the_instances_pool_past_its_limit(
    pool_of_20_mib, local_runtime
):
    store = Store.invoke()
    pid = yr.get(store.pid.invoke())
    kept = [yr.get(store.filled.invoke(ARRAY_BYTES, float(value))) for value in range(5)]
    held = sum(os.path.getsize(f"/dev/shm/{name}") for name in _written_by(pid))
    assert 0 < held <= 20 * MIB
    assert [array[0] for array in kept] == [0.0, 1.0, 2.0, 3.0, 4.0]


@pytest.fixture
def pool() -> segment_pool.SegmentPool:
    prefix = sharedmem.session_prefix(secrets.token_hex(8))
    made = segment_pool.SegmentPool(prefix, limit_bytes=3 * MIB)
    yield made
    made.close()
    assert _written_by(os.getpid(), prefix) == []


def test_a_pool_lends_no_more_than_its_limit(pool):
    lent = [pool.lend(memoryview(bytes(MIB))) for _ in range(4)]
    assert all(lent[:3]) and lent[3] is None
    assert pool.held_bytes() == 3 * MIB


def test_a_pool_drops_free_segments_to_make_room(pool):
    small = [pool.lend(memoryview(bytes(MIB)))[0] for _ in range(3)]
    pool.returned(small)
    assert pool.lend(memoryview(bytes(2 * MIB))) is not None
    assert pool.held_bytes() <= 3 * MIB


def test_a_pool_drops_segments_that_stay_free(monkeypatch):
    prefix = sharedmem.session_prefix(secrets.token_hex(8))
    pool = segment_pool.SegmentPool(prefix, limit_bytes=3 * MIB, idle_s=0.2)
    try:
        name, _ = pool.lend(memoryview(bytes(MIB)))
        pool.returned([name])
        wait_for(lambda: not _written_by(os.getpid(), prefix), timeout=10, what="the trim")
        assert pool.held_bytes() == 0
    finally:
        pool.close()


def test_a_release_naming_a_segment_this_process_did_not_lend_removes_nothing(pool):
    own = sharedmem.write_segment(pool.prefix, bytes(16))
    try:
        segment_pool.released([own])
        assert os.path.exists(os.path.join(sharedmem.SHM_DIRECTORY, own))
    finally:
        sharedmem.discard([own])


def test_a_result_segment_of_another_session_is_refused():
    other = sharedmem.write_segment(sharedmem.session_prefix("another-session"), bytes(MIB))
    released: list[str] = []
    try:
        with pytest.raises(ValueError, match="not a shared-memory segment of this session"):
            sharedmem.map_returned(
                [other], [MIB], prefix=sharedmem.session_prefix("ours"), released=released.append
            )
    finally:
        sharedmem.discard([other])


def test_the_segments_of_an_instance_that_crashed_are_removed(local_runtime):
    store = Store.invoke()
    pid = yr.get(store.pid.invoke())
    result = yr.get(store.filled.invoke(ARRAY_BYTES, 5.0))
    assert _written_by(pid)
    store.crash.invoke()
    wait_for(lambda: not _written_by(pid), timeout=20, what="the fork server's sweep")
    assert (result == 5.0).all()  # what the caller mapped lives on


def test_the_argument_segment_of_a_call_its_instance_died_in_is_removed(local_runtime):
    store = Store.invoke()
    with pytest.raises(yr.YRInstanceDiedError):
        yr.get(store.crash.invoke(np.ones(ARRAY_BYTES // 8)), timeout=60)
    assert _written_by(os.getpid()) == []  # never reused: the call may have kept it


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (segment_pool.POOL_ENVIRONMENT_KEY, "lots"),
        (segment_pool.POOL_ENVIRONMENT_KEY, "-1"),
        (segment_pool.IDLE_ENVIRONMENT_KEY, "0"),
        (segment_pool.IDLE_ENVIRONMENT_KEY, "inf"),
    ],
)
def test_a_bad_pool_setting_is_refused_before_anything_starts(monkeypatch, key, value):
    monkeypatch.setenv(key, value)
    assert_init_refused_starting_nothing(f"{key}={value!r}")
