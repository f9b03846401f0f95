"""yr.collective on the local runtime: results against numpy, bad input, clean shared memory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import yr
from tests.collective_members import Member, expected_allreduce
from tests.support import all_dead, wait_for
from yr import collective
from yr.client import shared_memory_prefix
from yr.collective.single_copy import SWITCH_ENVIRONMENT_VARIABLE

MiB = 1 << 20
DTYPES = ["float32", "float64", "int64"]
# element counts: one element, inline (<= 64 KiB), just past inline, and 64 MiB of the dtype
SIZES = {"1-element": 1, "1000": 1000, "100k": 100_000, "64MiB": None}
TRANSPORTS = ["single-copy", "shared-memory"]


def _count(size: str, dtype: str) -> int:
    return SIZES[size] or 64 * MiB // np.dtype(dtype).itemsize


def shm_segments(session_token: str | None = None) -> list[str]:
    """This session's shared-memory segments (other test runs on the machine have their own)."""
    if session_token is None:
        session_token = yr.session.current().runtime.session_token
    prefix = shared_memory_prefix(session_token) + "-"
    return sorted(name for name in os.listdir("/dev/shm") if name.startswith(prefix))


@pytest.fixture(scope="module", params=TRANSPORTS)
def members(request: pytest.FixtureRequest) -> Iterator[list]:
    """Four members and groups w1..w4 of the first 1..4 of them (one runtime per transport):
    large arrays read from peers' memory where the kernel allows it, or through segments."""
    switched = request.param == "shared-memory"
    if switched:  # the members inherit the driver's environment through the fork server
        os.environ[SWITCH_ENVIRONMENT_VARIABLE] = "0"
    try:
        yr.init(yr.Config(num_cpus=16))
    finally:
        if switched:
            del os.environ[SWITCH_ENVIRONMENT_VARIABLE]
    runtime = yr.session.current().runtime
    token = runtime.session_token
    started = {runtime.zygote_pid}
    try:
        handles = [Member.invoke() for _ in range(4)]
        for world_size in range(1, 5):
            collective.create_group(handles[:world_size], name=f"w{world_size}", timeout=120)
        yield handles
    finally:
        started |= runtime.spawned_pids()
        yr.finalize()
        wait_for(lambda: all_dead(started), timeout=15, what="the session's processes to exit")
    assert shm_segments(token) == []


def _on_group(handles: list, world_size: int, method: str, *args) -> list:
    group = f"w{world_size}"
    return yr.get(
        [getattr(h, method).invoke(*args, group=group) for h in handles[:world_size]], timeout=300
    )


def _siblings_may_read_each_other() -> bool:
    """What the kernel's ptrace check says of two processes of one user (Yama, CAP_SYS_PTRACE)."""
    try:
        scope = int(Path("/proc/sys/kernel/yama/ptrace_scope").read_text())
    except FileNotFoundError:
        return True  # no Yama: the same user may
    status = Path("/proc/self/status").read_text().splitlines()
    effective = int(next(line for line in status if line.startswith("CapEff:"))[7:], 16)
    return scope == 0 or (scope < 3 and bool(effective >> 19 & 1))  # 19: CAP_SYS_PTRACE


def test_large_arrays_take_the_transport_the_members_allow(members, request):
    """Single copy where the kernel lets members read each other; segments where it does not,
    or when the members' environment says so."""
    assert _on_group(members, 4, "check_allreduce", (MiB,), "float32") == ["ok"] * 4
    transport = request.node.callspec.params["members"]
    if not _siblings_may_read_each_other():
        transport = "shared-memory"
    assert yr.get([m.transport.invoke("w4") for m in members]) == [transport] * 4


def test_members_learn_their_rank_and_the_world_size(members):
    assert yr.get([m.rank_and_size.invoke("w3") for m in members[:3]]) == [(0, 3), (1, 3), (2, 3)]


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_allreduce_sum_matches_numpy(members, world_size, dtype, size):
    shape = (_count(size, dtype),)
    assert (
        _on_group(members, world_size, "check_allreduce", shape, dtype, "sum")
        == ["ok"] * world_size
    )


@pytest.mark.parametrize("count", [1000, 3 * MiB])
def test_allreduce_folds_float_sums_in_rank_order_on_every_path(members, count):
    """Inline or large, single copy or segments: every element is ((r0 + r1) + r2) + r3."""
    assert _on_group(members, 4, "check_rank_order_fold", count) == ["ok"] * 4


@pytest.mark.parametrize("size", ["1000", "100k"])
@pytest.mark.parametrize("op", ["mean", "max", "min"])
def test_allreduce_op_matches_numpy(members, op, size):
    shape = (SIZES[size] // 10, 10)
    assert _on_group(members, 3, "check_allreduce", shape, "float64", op) == ["ok"] * 3


@pytest.mark.parametrize("size", ["1000", "100k"])
def test_allreduce_product_matches_numpy(members, size):
    results = _on_group(members, 2, "allreduce", (SIZES[size],), "int64", "product")
    expected = expected_allreduce(2, (SIZES[size],), "int64", "product")
    assert all(np.array_equal(result, expected) for result in results)


def test_allreduce_small_results_are_returned_whole(members):
    results = _on_group(members, 4, "allreduce", (3, 5), "float32")
    assert all(np.array_equal(r, expected_allreduce(4, (3, 5), "float32", "sum")) for r in results)


@pytest.mark.parametrize("size", ["1000", "100k"])
def test_allreduce_writes_into_the_output_buffer_in_place(members, size):
    results = yr.get(
        [m.allreduce.invoke((SIZES[size],), "float64", "sum", "w3", True) for m in members[:3]]
    )
    assert all(
        np.array_equal(r, expected_allreduce(3, (SIZES[size],), "float64", "sum")) for r in results
    )


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_broadcast_gives_every_rank_the_source_array(members, world_size, size):
    dtype = "float64"
    src = world_size - 1
    shape = (_count(size, dtype),)
    assert (
        _on_group(members, world_size, "check_broadcast", shape, dtype, src) == ["ok"] * world_size
    )


@pytest.mark.parametrize("size", ["1-element", "1000", "100k"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_allgather_stacks_every_rank_in_rank_order(members, world_size, dtype, size):
    shape = (_count(size, dtype),)
    assert _on_group(members, world_size, "check_allgather", shape, dtype) == ["ok"] * world_size


def test_allgather_of_64_mib_per_rank(members):
    shape = (16 * MiB,)
    assert _on_group(members, 4, "check_allgather", shape, "float32") == ["ok"] * 4


def test_barrier_returns_on_every_rank(members):
    assert _on_group(members, 4, "barrier_then_count") == [0, 1, 2, 3]


@pytest.mark.parametrize("size", ["1000", "100k"])
def test_non_contiguous_input_is_reduced_as_its_values(members, size):
    shape = (SIZES[size] // 10, 10)
    results = _on_group(members, 2, "allreduce_transposed", shape, "int64")
    expected = expected_allreduce(2, shape, "int64", "sum").T
    assert all(np.array_equal(result, expected) for result in results)


def test_mismatched_shapes_are_a_clear_error_on_every_rank(members):
    refs = [
        m.allreduce.invoke(shape, "float32", "sum", "w2")
        for m, shape in zip(members[:2], [(4,), (5,)], strict=True)
    ]
    for ref in refs:
        with pytest.raises(collective.CollectiveMismatchError) as caught:
            yr.get(ref, timeout=60)
        assert "rank 0: allreduce" in str(caught.value) and "shape (4,)" in str(caught.value)
        assert "shape (5,)" in str(caught.value)
    assert _on_group(members, 2, "check_allreduce", (10,), "int64") == ["ok"] * 2  # still usable


def test_mismatched_dtypes_are_a_clear_error_on_every_rank(members):
    refs = [
        m.allreduce.invoke((200_000,), dtype, "sum", "w2")
        for m, dtype in zip(members[:2], ["float32", "float64"], strict=True)
    ]
    for ref in refs:
        with pytest.raises(collective.CollectiveMismatchError, match="float32.*float64"):
            yr.get(ref, timeout=60)


def test_mean_of_integers_is_a_type_error_on_every_rank(members):
    refs = [m.allreduce.invoke((4,), "int64", "mean", "w2") for m in members[:2]]
    for ref in refs:
        with pytest.raises(TypeError, match="op mean needs a floating dtype"):
            yr.get(ref, timeout=60)


def test_object_arrays_are_refused_by_name(members):
    ref = members[0].allreduce_array.invoke(np.array([object()]), "sum", "w1")
    with pytest.raises(TypeError, match="arrays of Python objects"):
        yr.get(ref, timeout=60)


def test_an_instance_outside_the_group_is_told_how_to_join(members):
    with pytest.raises(collective.CollectiveError, match="not a member of collective group 'nope'"):
        yr.get(members[0].rank_and_size.invoke("nope"), timeout=60)


def test_group_arguments_are_checked_before_any_call(members):
    with pytest.raises(ValueError, match="group name"):
        collective.create_group(members[:2], name="bad name!")
    with pytest.raises(ValueError, match="timeout"):
        collective.create_group(members[:2], name="ok", timeout=0)
    with pytest.raises(TypeError, match="non-empty list"):
        collective.create_group([], name="ok")
    with pytest.raises(ValueError, match="twice"):
        collective.create_group([members[0], members[0]], name="ok")


def test_large_collectives_leave_no_shared_memory_segment(members):
    assert _on_group(members, 4, "check_allreduce", (4 * MiB,), "float32") == ["ok"] * 4
    assert shm_segments() == []


def test_results_are_identical_on_every_rank(members):
    """Every rank must see the same bits, so replicas of a model never drift apart."""
    array = np.random.default_rng(7).standard_normal(300_000).astype(np.float32)
    results = yr.get(
        [m.allreduce_array.invoke(array * (i + 1), "sum", "w4") for i, m in enumerate(members)]
    )
    assert all(np.array_equal(results[0], r) for r in results[1:])
    np.testing.assert_allclose(results[0], array * 10, rtol=1e-5)
