"""The collective algorithms of one rank, over its mesh (control, small data) and segments.

Every operation starts with an exchange of headers (operation, dtype, shape), so a mismatch is
the same clear error on every rank, and that exchange is also the barrier that says every peer
finished reading the previous operation's data. Small arrays travel inside that exchange and
each rank reduces all of them (one round: latency-optimal). Large arrays go through shared
memory as a reduce-scatter (rank r reduces slice r) and an all-gather (bandwidth-optimal: each
byte is written once and read once per rank); where the kernel lets members read each other's
memory, a large allreduce skips the segments and reads its peers' arrays directly
(single_copy.py).
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from yr.collective.errors import (
    CollectiveError,
    CollectiveMemberDiedError,
    CollectiveMismatchError,
)
from yr.collective.mesh import Message, frame
from yr.collective.segments import PeerSegmentGone, Segments
from yr.collective.single_copy import Probe, SingleCopy, addresses, can_read

INLINE_BYTES = 64 << 10  # at or below this an array rides in the header exchange
REDUCE_BLOCK_BYTES = 256 << 10  # a block of the reduction that fits in L2


class ReduceOp(enum.Enum):
    SUM = "sum"
    MEAN = "mean"
    MAX = "max"
    MIN = "min"
    PRODUCT = "product"


_UFUNCS = {
    ReduceOp.SUM: np.add,
    ReduceOp.MEAN: np.add,
    ReduceOp.MAX: np.maximum,
    ReduceOp.MIN: np.minimum,
    ReduceOp.PRODUCT: np.multiply,
}


@dataclass(frozen=True)
class GroupInfo:
    """What every member knows of its group (openYuanrong's rank_id/world_size/server_list)."""

    name: str
    group_id: str
    member_ids: tuple[str, ...]
    timeout: float

    @property
    def world_size(self) -> int:
        return len(self.member_ids)


def as_reduce_op(op: ReduceOp | str) -> ReduceOp:
    if isinstance(op, ReduceOp):
        return op
    try:
        return ReduceOp(str(op).lower())
    except ValueError:
        names = ", ".join(o.value for o in ReduceOp)
        raise ValueError(f"unknown reduce op {op!r}; use one of {names}") from None


def as_input(array: Any, *, what: str) -> np.ndarray:
    """A C-contiguous numpy array of plain data; non-contiguous input is copied once."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{what} takes a numpy array, got {type(array).__name__}")
    if array.dtype.hasobject:
        raise TypeError(f"{what}: arrays of Python objects (dtype {array.dtype}) cannot be shared")
    return np.ascontiguousarray(array)


def check_out(out: np.ndarray | None, shape: tuple[int, ...], dtype: np.dtype, *, what: str):
    if out is None:
        return np.empty(shape, dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{what}: out must be a numpy array, got {type(out).__name__}")
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(
            f"{what}: out has shape {out.shape} and dtype {out.dtype}, "
            f"the result has shape {shape} and dtype {dtype}"
        )
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"{what}: out must be a writeable C-contiguous array")
    return out


class Communicator:
    """One rank's view of a formed group; operations are called by every rank in one order."""

    def __init__(self, info: GroupInfo, rank: int, mesh: Any, segments: Segments | None) -> None:
        """``mesh`` carries control and small data; ``segments`` is None where members share
        no memory (pods): then large arrays travel through the mesh too."""
        self.info = info
        self.rank = rank
        self.world_size = info.world_size
        self._mesh = mesh
        self._segments = segments
        self._seq = 0
        self._broken: CollectiveError | None = None
        self._single_copy: SingleCopy | None = None
        self._single_copy_tested = False

    @property
    def transport(self) -> str:
        """How large arrays travel: "single-copy" (read from peers' memory, once tested),
        "shared-memory" (through segments) or "streams" (no shared memory: pods)."""
        if self._segments is None:
            return "streams"
        return "single-copy" if self._single_copy is not None else "shared-memory"

    # -- plumbing ------------------------------------------------------------------------------

    def _describe(self, rank: int) -> str:
        return f"instance {self.info.member_ids[rank]}"

    def _exchange(
        self, header: dict[str, Any], payload: Any, deadline: float, *, per_peer=None
    ) -> dict[int, Message]:
        if self._broken is not None:
            raise self._broken
        message = (
            {peer: frame(header, data) for peer, data in per_peer.items()}
            if per_peer is not None
            else frame(header, payload)
        )
        try:
            return self._mesh.exchange(
                message,
                deadline=deadline,
                timeout=self.info.timeout,
                describe=self._describe,
            )
        except CollectiveError as error:  # the mesh is out of step: the group must be re-formed
            self._broken = error
            if isinstance(error, CollectiveMemberDiedError) and self._segments is not None:
                self._segments.unlink_peer(error.rank)  # it may have died before unlinking
            raise

    def _start(
        self, kind: str, array: np.ndarray | None, deadline: float, payload: Any = b"", **extra
    ) -> dict[int, Message]:
        """Exchange headers (and small payloads); every rank checks every rank's call alike."""
        self._seq += 1
        header: dict[str, Any] = {"seq": self._seq, "kind": kind, **extra}
        if array is not None:
            header["dtype"] = np.lib.format.dtype_to_descr(array.dtype)
            header["shape"] = list(array.shape)
        replies = self._exchange(header, payload, deadline)
        calls = {peer: reply[0] for peer, reply in replies.items()}
        calls[self.rank] = header
        if any(call != header for call in calls.values()):
            described = "; ".join(
                f"rank {peer}: {_describe_call(calls[peer])}" for peer in sorted(calls)
            )
            raise CollectiveMismatchError(
                f"collective group {self.info.name!r}: the ranks disagree on the operation "
                f"(every rank must call the same one with the same shape and dtype): {described}"
            )
        return replies

    def _deadline(self) -> float:
        return time.monotonic() + self.info.timeout

    def _ensure_capacity(self, nbytes: int, deadline: float) -> None:
        segments = self._segments
        if not segments.needs(nbytes):
            return
        segments.create_own(nbytes)
        try:
            self._exchange({"grow": segments.generation}, b"", deadline)  # every segment exists
            try:
                segments.map_peers()
            except PeerSegmentGone as gone:  # removed by a rank whose exchange saw it die
                self._broken = CollectiveMemberDiedError(
                    self.info.name, gone.rank, self._describe(gone.rank)
                )
                raise self._broken from None
            self._exchange({"mapped": segments.generation}, b"", deadline)  # every peer mapped
        finally:
            segments.unlink_own()

    def _single_copy_allowed(self, deadline: float) -> SingleCopy | None:
        """Once per group: whether every rank may read every peer's memory (single_copy.py)."""
        if not self._single_copy_tested:
            probe = Probe()  # alive until every peer has tried to read it (the second exchange)
            offers = self._exchange({"probe": probe.offer()}, b"", deadline)
            readable = all(can_read(reply[0]["probe"]) for reply in offers.values())
            verdicts = self._exchange({"can_read": readable}, b"", deadline)
            self._single_copy_tested = True
            if readable and all(reply[0]["can_read"] for reply in verdicts.values()):
                pids = {peer: int(offers[peer][0]["probe"]["pid"]) for peer in sorted(offers)}
                self._single_copy = SingleCopy(self.rank, self.world_size, pids)
        return self._single_copy

    def _step(self, name: str, failure: str, deadline: float, *, dead: int = -1) -> None:
        """End a phase on every rank; if any rank failed in it, every rank raises alike: the
        died-error when a rank found a peer's process gone (``dead``), else what failed."""
        replies = self._exchange({name: self._seq, "failure": failure, "dead": dead}, b"", deadline)
        failures = {peer: reply[0]["failure"] for peer, reply in replies.items()}
        failures[self.rank] = failure
        gone = sorted(({reply[0].get("dead", -1) for reply in replies.values()} | {dead}) - {-1})
        if gone:
            self._broken = CollectiveMemberDiedError(
                self.info.name, gone[0], self._describe(gone[0])
            )
            raise self._broken
        failed = "; ".join(f"rank {peer}: {why}" for peer, why in sorted(failures.items()) if why)
        if failed:
            raise CollectiveError(f"collective group {self.info.name!r}: {name} failed: {failed}")

    # -- operations ----------------------------------------------------------------------------

    def barrier(self) -> None:
        self._start("barrier", None, self._deadline())

    def allreduce(self, array: Any, op: ReduceOp | str, out: np.ndarray | None) -> np.ndarray:
        op = as_reduce_op(op)
        data = as_input(array, what="allreduce")
        result = check_out(out, data.shape, data.dtype, what="allreduce")
        deadline = self._deadline()
        small = data.nbytes <= INLINE_BYTES or self.world_size == 1
        if not small and np.may_share_memory(result, data) and not _same_buffer(result, data):
            data = data.copy()  # an output overlapping the input elsewhere than in place
        if small:
            payload = _raw(data)
        elif self._segments is not None:  # where this rank's arrays are, for a single copy
            payload = _raw(addresses(data, result))
        else:
            payload = b""
        replies = self._start("allreduce", data, deadline, payload, op=op.value, small=small)
        if op is ReduceOp.MEAN and not np.issubdtype(data.dtype, np.inexact):
            raise TypeError(f"allreduce: op mean needs a floating dtype, got {data.dtype}")
        ufunc = _UFUNCS[op]
        mean = op is ReduceOp.MEAN
        if small:
            if np.shares_memory(result, data):  # in place: keep this rank's input intact
                data = data.copy()
            parts = [
                data
                if peer == self.rank
                else np.frombuffer(replies[peer][1], data.dtype).reshape(data.shape)
                for peer in range(self.world_size)
            ]
            np.copyto(result, parts[0])
            for part in parts[1:]:  # every rank folds in rank order: identical results
                ufunc(result, part, out=result)
            if mean:
                np.divide(result, self.world_size, out=result)
        elif self._segments is None:
            self._allreduce_direct(data, result, ufunc, mean, deadline)
        elif (single_copy := self._single_copy_allowed(deadline)) is not None:
            peers = {peer: np.frombuffer(reply[1], np.uint64) for peer, reply in replies.items()}
            single_copy.allreduce(
                data,
                result,
                ufunc,
                mean=mean,
                peer_addresses=peers,
                step=lambda name, failure, dead: self._step(name, failure, deadline, dead=dead),
            )
        else:
            self._allreduce_large(data, result, ufunc, mean, deadline)
        return result

    def _allreduce_large(
        self, data: np.ndarray, result: np.ndarray, ufunc, mean: bool, deadline: float
    ):
        self._ensure_capacity(data.nbytes, deadline)
        count = data.size
        segments = self._segments
        flat = data.reshape(-1)
        mine = segments.typed(self.rank, data.dtype, count)
        low, high = _slice(count, self.rank, self.world_size)
        np.copyto(mine[:low], flat[:low])  # peers read every slice of it but this rank's own
        np.copyto(mine[high:], flat[high:])
        self._exchange({"written": self._seq}, b"", deadline)
        sources = [  # in rank order, as every path folds: the same bits whichever it takes
            flat if peer == self.rank else segments.typed(peer, data.dtype, count)
            for peer in range(self.world_size)
        ]
        block = max(REDUCE_BLOCK_BYTES // data.dtype.itemsize, 1)
        for start in range(low, high, block):  # reduce-scatter: rank r owns slice r; block by
            stop = min(start + block, high)  # block, so the partial sum stays in the cache
            partial = mine[start:stop]
            ufunc(sources[0][start:stop], sources[1][start:stop], out=partial)
            for source in sources[2:]:
                ufunc(partial, source[start:stop], out=partial)
            if mean:  # while the block is in the cache, not as a pass of its own
                np.divide(partial, self.world_size, out=partial)
        self._exchange({"reduced": self._seq}, b"", deadline)
        out = result.reshape(-1)
        for peer in range(self.world_size):  # all-gather: read each slice from its owner
            low, high = _slice(count, peer, self.world_size)
            out[low:high] = segments.typed(peer, data.dtype, count)[low:high]

    def _allreduce_direct(
        self, data: np.ndarray, result: np.ndarray, ufunc, mean: bool, deadline: float
    ):
        """Without shared memory: slice j goes to rank j, which reduces it and sends it back to
        everyone (2 rounds; each rank sends 2(n-1)/n of the array, as a ring would)."""
        flat, out = data.reshape(-1), result.reshape(-1)
        count = data.size
        bounds = [_slice(count, peer, self.world_size) for peer in range(self.world_size)]
        low, high = bounds[self.rank]
        slices = self._exchange(
            {"scatter": self._seq},
            b"",
            deadline,
            per_peer={p: _raw(flat[lo:hi]) for p, (lo, hi) in enumerate(bounds) if p != self.rank},
        )
        parts = [
            flat[low:high] if p == self.rank else np.frombuffer(slices[p][1], data.dtype)
            for p in range(self.world_size)
        ]
        mine = out[low:high]
        np.copyto(mine, parts[0])
        for part in parts[1:]:  # rank order: the same bits whoever reduces
            ufunc(mine, part, out=mine)
        if mean:
            np.divide(mine, self.world_size, out=mine)
        gathered = self._exchange({"gather": self._seq}, _raw(mine), deadline)
        for peer, (lo, hi) in enumerate(bounds):
            if peer != self.rank:
                out[lo:hi] = np.frombuffer(gathered[peer][1], data.dtype)

    def broadcast(self, array: Any, src: int, out: np.ndarray | None) -> np.ndarray:
        data = as_input(array, what="broadcast")
        if not isinstance(src, int) or not 0 <= src < self.world_size:
            raise ValueError(
                f"broadcast: src must be a rank in 0..{self.world_size - 1}, got {src}"
            )
        result = check_out(out, data.shape, data.dtype, what="broadcast")
        deadline = self._deadline()
        small = data.nbytes <= INLINE_BYTES or self._segments is None
        sends = small and self.rank == src
        replies = self._start(
            "broadcast", data, deadline, _raw(data) if sends else b"", src=src, small=small
        )
        if self.rank == src:
            if result is not data:
                np.copyto(result, data)
            if not small:
                self._ensure_capacity(data.nbytes, deadline)
                np.copyto(self._segments.typed(src, data.dtype, data.size), data.reshape(-1))
                self._exchange({"written": self._seq}, b"", deadline)
            return result
        if small:
            result[...] = np.frombuffer(replies[src][1], data.dtype).reshape(data.shape)
            return result
        self._ensure_capacity(data.nbytes, deadline)
        self._exchange({"written": self._seq}, b"", deadline)
        result.reshape(-1)[:] = self._segments.typed(src, data.dtype, data.size)
        return result

    def allgather(self, array: Any, out: np.ndarray | None) -> np.ndarray:
        data = as_input(array, what="allgather")
        result = check_out(out, (self.world_size, *data.shape), data.dtype, what="allgather")
        deadline = self._deadline()
        small = data.nbytes <= INLINE_BYTES or self._segments is None
        replies = self._start(
            "allgather", data, deadline, _raw(data) if small else b"", small=small
        )
        if small:
            for peer in range(self.world_size):
                if peer == self.rank:
                    result[peer] = data
                else:
                    result[peer] = np.frombuffer(replies[peer][1], data.dtype).reshape(data.shape)
            return result
        self._ensure_capacity(data.nbytes, deadline)
        np.copyto(self._segments.typed(self.rank, data.dtype, data.size), data.reshape(-1))
        self._exchange({"written": self._seq}, b"", deadline)
        for peer in range(self.world_size):
            result[peer].reshape(-1)[:] = self._segments.typed(peer, data.dtype, data.size)
        return result

    def close(self) -> None:
        self._mesh.close()
        if self._segments is not None:
            self._segments.close()


def _raw(array: np.ndarray) -> np.ndarray:
    """The bytes of a contiguous array, as a flat uint8 view (what goes on the wire)."""
    return array.reshape(-1).view(np.uint8)


def _same_buffer(first: np.ndarray, second: np.ndarray) -> bool:
    return first.ctypes.data == second.ctypes.data and first.nbytes == second.nbytes


def _slice(count: int, rank: int, world_size: int) -> tuple[int, int]:
    return count * rank // world_size, count * (rank + 1) // world_size


def _describe_call(header: dict[str, Any]) -> str:
    text = f"{header.get('kind')} #{header.get('seq')}"
    if "dtype" in header:
        dtype = np.lib.format.descr_to_dtype(header["dtype"])
        text += f" of {dtype} shape {tuple(header['shape'])}"
    if "op" in header:
        text += f" op {header['op']}"
    if "src" in header:
        text += f" src {header['src']}"
    return text
