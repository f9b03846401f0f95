"""Instance classes the collective tests create (importable, so children can load them)."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np

import yr
from yr import collective


def make_array(rank: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """A rank's deterministic input: different per rank, exactly representable sums."""
    # a period of 1000 repeated: a large array is a copy loop, not arithmetic over every element
    period = (np.arange(1000, dtype=np.int64) * (rank + 1) - 500 * rank).astype(dtype)
    return np.resize(period, int(np.prod(shape))).reshape(shape)


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100, memory=100))
class Member:
    def rank_and_size(self, group: str = "default") -> tuple[int, int]:
        return collective.get_rank(group), collective.get_world_size(group)

    def pid(self) -> int:
        return os.getpid()

    def transport(self, group: str = "default") -> str:
        from yr.collective.member import communicator

        return communicator(group).transport

    def allreduce(self, shape, dtype, op="sum", group="default", in_place=False):
        array = make_array(collective.get_rank(group), tuple(shape), dtype)
        out = array if in_place else None
        result = collective.allreduce(array, group_name=group, op=op, out=out)
        assert not in_place or result is array
        return result

    def allreduce_array(self, array, op="sum", group="default"):
        return collective.allreduce(array, group_name=group, op=op)

    def allreduce_transposed(self, shape, dtype, group="default"):
        array = make_array(collective.get_rank(group), tuple(shape), dtype).T
        return collective.allreduce(array, group_name=group)

    def broadcast(self, shape, dtype, src, group="default"):
        rank = collective.get_rank(group)
        array = make_array(rank, tuple(shape), dtype)
        return collective.broadcast(array, src=src, group_name=group, out=np.empty_like(array))

    def allgather(self, shape, dtype, group="default"):
        array = make_array(collective.get_rank(group), tuple(shape), dtype)
        return collective.allgather(array, group_name=group)

    def barrier_then_count(self, group="default") -> int:
        collective.barrier(group)
        collective.barrier(group)
        return collective.get_rank(group)

    def allreduce_many(self, count: int, size: int, group="default") -> float:
        """``count`` allreduces; returns the last sum's first element."""
        array = np.ones(size, np.float32)
        for _ in range(count):
            result = collective.allreduce(array, group_name=group)
        return float(result[0])

    def allreduce_after_announcing(self, size: int, marker: str, group="default"):
        """Mark the file once the collective is about to start, then allreduce."""
        array = np.ones(size, np.float32)
        with open(marker, "w"):
            pass
        return collective.allreduce(array, group_name=group)

    # checks run in the member, so large arrays never travel to the driver
    def check_allreduce(self, shape, dtype, op="sum", group="default") -> str:
        world_size = collective.get_world_size(group)
        result = self.allreduce(shape, dtype, op, group)
        return _compare(result, expected_allreduce(world_size, shape, dtype, op))

    def check_rank_order_fold(self, count: int, group="default") -> str:
        """A float32 sum whose rounding depends on the order of the fold: rank order expected."""
        world_size = collective.get_world_size(group)
        inputs = [_rounding_array(rank, count) for rank in range(world_size)]
        expected = inputs[0].copy()
        for part in inputs[1:]:
            expected += part
        result = collective.allreduce(inputs[collective.get_rank(group)], group_name=group)
        return _compare(result, expected)

    def check_broadcast(self, shape, dtype, src, group="default") -> str:
        return _compare(self.broadcast(shape, dtype, src, group), make_array(src, shape, dtype))

    def check_allgather(self, shape, dtype, group="default") -> str:
        world_size = collective.get_world_size(group)
        result = self.allgather(shape, dtype, group)
        if result.shape != (world_size, *shape):
            return f"got shape {result.shape}, expected {(world_size, *shape)}"
        # rank by rank: a stacked copy of every input would double the memory a large case takes
        for rank in range(world_size):
            verdict = _compare(result[rank], make_array(rank, tuple(shape), dtype))
            if verdict != "ok":
                return f"rank {rank}'s part: {verdict}"
        return "ok"

    def die_in_allreduce(self, size: int, group="default"):
        """Start a large allreduce and SIGKILL this process while peers wait on it."""
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGKILL)).start()
        array = np.ones(size, np.float32)
        while True:
            collective.allreduce(array, group_name=group)


def _rounding_array(rank: int, count: int) -> np.ndarray:
    return np.random.default_rng(rank).standard_normal(count).astype(np.float32) * 10.0**rank


def expected_allreduce(world_size: int, shape, dtype: str, op: str) -> np.ndarray:
    """Every rank's input folded in rank order, one at a time: no stack of all of them."""
    combine = {"sum": np.add, "mean": np.add, "max": np.maximum, "min": np.minimum}
    combine["product"] = np.multiply
    result = make_array(0, tuple(shape), dtype)
    for rank in range(1, world_size):
        combine[op](result, make_array(rank, tuple(shape), dtype), out=result)
    return result / world_size if op == "mean" else result


def _compare(result: np.ndarray, expected: np.ndarray) -> str:
    if result.shape != expected.shape or result.dtype != expected.dtype:
        return f"got {result.dtype} {result.shape}, expected {expected.dtype} {expected.shape}"
    if not np.array_equal(result, expected):
        wrong = int(np.count_nonzero(result != expected))
        return f"{wrong} of {result.size} elements differ"
    return "ok"
