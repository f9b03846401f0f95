"""One shared-memory segment per rank, the data path of large collectives on one machine.

Each rank writes only its own segment and maps its peers' read-only. A segment is unlinked as
soon as every peer has mapped it, so nothing stays in /dev/shm even if a member is SIGKILLed;
names carry the session prefix, so the session's sweep removes one caught in between.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os

import numpy as np

from yr import sharedmem

_ALIGN = 1 << 20  # grow in whole MiB so that arrays of similar sizes reuse a segment


class PeerSegmentGone(Exception):
    """A peer's segment was removed before this rank mapped it: that peer died."""

    def __init__(self, rank: int) -> None:
        super().__init__(f"the shared-memory segment of rank {rank} is gone")
        self.rank = rank


class Segments:
    """This rank's writable segment and read-only maps of its peers', all of one capacity."""

    def __init__(self, *, prefix: str, group_id: str, rank: int, world_size: int) -> None:
        self._prefix = prefix
        self._group_id = group_id
        self.rank = rank
        self.world_size = world_size
        self.capacity = 0
        self.generation = 0
        self.views: list[np.ndarray] = []  # uint8, one per rank; views[rank] is writable
        self._own_name = ""

    def needs(self, nbytes: int) -> bool:
        return nbytes > self.capacity

    def _name(self, rank: int, generation: int) -> str:
        # the shape of sharedmem's names, so the session's sweep recognises and removes it
        digest = hashlib.sha256(f"{self._group_id}-{rank}-{generation}".encode()).hexdigest()
        return f"{self._prefix}-{digest[:16]}"

    def create_own(self, nbytes: int) -> None:
        """Step 1 of growing: make this rank's bigger segment (peers map it after a barrier)."""
        self.generation += 1
        capacity = -(-nbytes // _ALIGN) * _ALIGN
        self._own_name = self._name(self.rank, self.generation)
        path = os.path.join(sharedmem.SHM_DIRECTORY, self._own_name)
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(descriptor, capacity)
            own = mmap.mmap(descriptor, capacity, access=mmap.ACCESS_WRITE)
        finally:
            os.close(descriptor)
        self.capacity = capacity
        self.views = [np.empty(0, np.uint8)] * self.world_size
        self.views[self.rank] = np.frombuffer(own, dtype=np.uint8)

    def map_peers(self) -> None:
        """Step 2: map every peer's segment of this generation (they exist after the barrier)."""
        for peer in range(self.world_size):
            if peer == self.rank:
                continue
            path = os.path.join(sharedmem.SHM_DIRECTORY, self._name(peer, self.generation))
            try:
                descriptor = os.open(path, os.O_RDONLY)
            except FileNotFoundError:  # it existed at the barrier: a rank saw its owner die
                raise PeerSegmentGone(peer) from None
            try:
                mapped = mmap.mmap(descriptor, self.capacity, access=mmap.ACCESS_READ)
            finally:
                os.close(descriptor)
            self.views[peer] = np.frombuffer(mapped, dtype=np.uint8)

    def unlink_own(self) -> None:
        """Step 3 (after every peer mapped it): the name goes, the mappings stay."""
        if self._own_name:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(sharedmem.SHM_DIRECTORY, self._own_name))
            self._own_name = ""

    def unlink_peer(self, rank: int) -> None:
        """Remove what a dead peer may have left: it dies before unlinking its segment, at this
        generation or (if it got through an exchange this rank had not finished) the next."""
        for generation in (self.generation, self.generation + 1):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(sharedmem.SHM_DIRECTORY, self._name(rank, generation)))

    def typed(self, rank: int, dtype: np.dtype, count: int) -> np.ndarray:
        return self.views[rank][: count * dtype.itemsize].view(dtype)

    def close(self) -> None:
        self.unlink_own()
        self.views = []
        self.capacity = 0
