"""Large allreduce on one machine with one copy per byte: the kernel's cross-memory read.

Through shared segments every rank copies its input in, reduces its slice and copies the whole
result out: about five passes over the array per rank, and four ranks on a small machine pay
them all out of one memory bus. ``process_vm_readv`` (Linux's cross-memory attach, the single-
copy path of Open MPI's and UCX's shared-memory transports) lets a rank read its peers' arrays
where they are: the owner of slice r reads slice r of every peer's input into a cache-sized
block, reduces it into its own output, and every rank then reads the reduced slices straight
from their owners' outputs. Nothing is staged and nothing ever writes into another process, so
a peer that dies (or a pid reused) can at worst make a read fail, never corrupt anything.

The kernel allows it where this rank may ptrace the peer (same user, and Yama's ptrace_scope
permitting); a group tests that once and otherwise keeps to shared segments. Setting
``YR_COLLECTIVE_SINGLE_COPY=0`` in the members' environment does the same.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
from collections.abc import Callable
from typing import Any

import numpy as np

SWITCH_ENVIRONMENT_VARIABLE = "YR_COLLECTIVE_SINGLE_COPY"
BLOCK_BYTES = 1 << 20  # a block of the reduction: few reads per slice, and it stays in the cache


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


def _bind() -> Callable[..., int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).process_vm_readv
    except (OSError, AttributeError):  # not Linux, or a libc without it
        return None
    function.restype = ctypes.c_ssize_t
    function.argtypes = [
        ctypes.c_int,
        ctypes.POINTER(_IoVec),
        ctypes.c_ulong,
        ctypes.POINTER(_IoVec),
        ctypes.c_ulong,
        ctypes.c_ulong,
    ]
    return function


_process_vm_readv = _bind()


NO_RANK = -1


def read_remote(pid: int, address: int, into: np.ndarray) -> None:
    """Copy ``into.nbytes`` bytes from ``address`` in process ``pid`` into ``into``."""
    base, total, done = into.ctypes.data, into.nbytes, 0
    while done < total:
        local = _IoVec(base + done, total - done)
        remote = _IoVec(address + done, total - done)
        got = _process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if got <= 0:
            number = ctypes.get_errno() if got < 0 else errno.EFAULT
            raise OSError(number, f"reading process {pid}: {os.strerror(number)}")
        done += got


def wanted() -> bool:
    return _process_vm_readv is not None and os.environ.get(SWITCH_ENVIRONMENT_VARIABLE) != "0"


class Probe:
    """A few random bytes this rank shows its peers, to learn whether they may read it."""

    def __init__(self) -> None:
        self._nonce = np.frombuffer(secrets.token_bytes(16), np.uint8).copy()

    def offer(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "address": self._nonce.ctypes.data,
            "nonce": self._nonce.tobytes().hex(),
        }


def can_read(offer: dict[str, Any]) -> bool:
    """Whether this process may read the peer that made ``offer`` (and finds its nonce)."""
    if not wanted():
        return False
    found = np.empty(16, np.uint8)
    try:
        read_remote(int(offer["pid"]), int(offer["address"]), found)
    except (OSError, KeyError, TypeError, ValueError):
        return False
    return found.tobytes().hex() == offer.get("nonce")


def addresses(data: np.ndarray, result: np.ndarray) -> np.ndarray:
    """What a rank tells its peers for one allreduce: where its input and output are."""
    return np.array([data.ctypes.data, result.ctypes.data], np.uint64)


class SingleCopy:
    """One rank's single-copy allreduce, given its peers' pids."""

    def __init__(self, rank: int, world_size: int, pids: dict[int, int]) -> None:
        self.rank = rank
        self.world_size = world_size
        self.pids = pids
        # two peers' blocks (the first fold may take two) and, in place, this rank's own;
        # kept for the group's life, so they are never faulted in again
        self._blocks = tuple(np.empty(BLOCK_BYTES, np.uint8) for _ in range(3))

    def allreduce(
        self,
        data: np.ndarray,
        result: np.ndarray,
        ufunc: np.ufunc,
        *,
        mean: bool,
        peer_addresses: dict[int, np.ndarray],
        step: Callable[[str, str, int], None],
    ) -> None:
        """Reduce slice ``rank`` from every peer's input into ``result``, then read the other
        slices from their owners' results. ``step(name, failure)`` is the exchange that ends a
        phase: every rank learns there whether any rank failed to read, and raises alike (the
        died-error when a read found a peer's process gone)."""
        flat, out = data.reshape(-1), result.reshape(-1)
        itemsize, count = data.dtype.itemsize, data.size
        low, high = _slice(count, self.rank, self.world_size)
        in_place = flat.ctypes.data == out.ctypes.data
        per_block = max(BLOCK_BYTES // itemsize, 1)
        failure, dead = "", NO_RANK
        peer = NO_RANK
        try:
            for start in range(low, high, per_block):  # block by block: the partial stays cached
                stop = min(start + per_block, high)
                partial, own = out[start:stop], flat[start:stop]
                if in_place and self.rank >= 2:  # the first fold (ranks 0 and 1) overwrites it
                    own = _typed(self._blocks[2], stop - start, data.dtype)
                    np.copyto(own, flat[start:stop])
                previous = own
                for peer in range(self.world_size):  # in rank order, as the small path folds
                    source = own
                    if peer != self.rank:
                        source = _typed(self._blocks[peer % 2], stop - start, data.dtype)
                        address = int(peer_addresses[peer][0]) + start * itemsize
                        read_remote(self.pids[peer], address, source)
                    if peer == 1:  # the first fold writes the output: nothing copied before it
                        ufunc(previous, source, out=partial)
                    elif peer > 1:
                        ufunc(partial, source, out=partial)
                    previous = source
                if mean:
                    np.divide(partial, self.world_size, out=partial)
        except OSError as error:
            failure, dead = error.strerror or str(error), _dead_peer(error, peer)
        step("reduced", failure, dead)  # every slice is final in its owner's output
        try:
            for peer, pid in self.pids.items():
                low, high = _slice(count, peer, self.world_size)
                read_remote(pid, int(peer_addresses[peer][1]) + low * itemsize, out[low:high])
        except OSError as error:
            failure, dead = error.strerror or str(error), _dead_peer(error, peer)
        step("gathered", failure, dead)  # no peer reads this rank's arrays any more


def _typed(block: np.ndarray, count: int, dtype: np.dtype) -> np.ndarray:
    return block[: count * dtype.itemsize].view(dtype)


def _dead_peer(error: OSError, peer: int) -> int:
    """The rank whose process is gone (ESRCH: it died mid-read, perhaps after it had already
    sent its part of the step), else NO_RANK."""
    return peer if error.errno == errno.ESRCH else NO_RANK


def _slice(count: int, rank: int, world_size: int) -> tuple[int, int]:
    return count * rank // world_size, count * (rank + 1) // world_size
