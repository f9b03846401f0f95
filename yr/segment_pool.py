"""Reused shared-memory segments, so a large buffer is copied into warm pages, not fresh ones.

Writing 100 MiB into a new /dev/shm file makes the kernel allocate, zero and map 25,600 pages:
several times the cost of the copy itself. Each process instead keeps the segments it wrote
mapped and writes the next buffer into one its receiver is done with:

- an argument segment is done when the reply comes back and does not name it in
  ``Outcome.kept`` (after the call the instance checks whether anything still maps it);
- a result segment is done when the caller names it in a later request's ``released`` (its
  last view of the value was dropped); if no call to the instance follows, the caller sends
  an empty request to say so within about a second (``yr.client.RELEASE_SWEEP_S``).

A segment its receiver keeps is handed over: unlinked and forgotten here, its memory lives on
in the receiver's mapping until that lets go. The pool holds at most ``YR_SHM_POOL_MB`` of
segments (free ones are dropped, least recently used first, to make room, and any free for
``YR_SHM_POOL_IDLE_S``); past that, a buffer takes a segment of its own, which its receiver
removes once mapped. Pool segments are
named ``<session prefix>-<writer pid, 8 hex><8 random hex>``, so the fork server removes those
of an instance that died.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from yr import serialization, sharedmem
from yr.options import env_seconds

POOL_ENVIRONMENT_KEY = "YR_SHM_POOL_MB"
DEFAULT_POOL_MB = 1024
IDLE_ENVIRONMENT_KEY = "YR_SHM_POOL_IDLE_S"
DEFAULT_IDLE_S = 30.0
_GRANULE = 1 << 20  # capacities are whole MiB, so a slightly larger buffer fits next time


def pool_limit_bytes() -> int:
    """The most one process keeps in reused segments (``YR_SHM_POOL_MB``, 0: none)."""
    raw = os.environ.get(POOL_ENVIRONMENT_KEY, "").strip()
    if not raw:
        return DEFAULT_POOL_MB << 20
    try:
        megabytes = int(raw)
    except ValueError:
        megabytes = -1
    if megabytes < 0:
        raise ValueError(f"{POOL_ENVIRONMENT_KEY}={raw!r} is not a whole number of MiB (>= 0)")
    return megabytes << 20


def pool_idle_seconds() -> float:
    """How long a free segment stays mapped unused (``YR_SHM_POOL_IDLE_S``)."""
    return env_seconds(IDLE_ENVIRONMENT_KEY, DEFAULT_IDLE_S)


@dataclass(eq=False)
class _Segment:
    name: str
    capacity: int
    mapping: mmap.mmap  # shared and writable: what the receivers map is what we wrote
    view: memoryview
    lent: bool
    used_at: float  # when it was last lent or given back (monotonic): who goes first


class SegmentPool:
    """One process's reused segments for one session (thread-safe)."""

    def __init__(self, prefix: str, *, limit_bytes: int, idle_s: float = DEFAULT_IDLE_S) -> None:
        self.prefix = prefix
        self.limit_bytes = limit_bytes
        self.idle_s = idle_s
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._segments: dict[str, _Segment] = {}
        self._reserved = 0  # capacity of segments being created outside the lock
        self._trimming = False  # a thread drops segments that stay free too long

    def lend(self, data: memoryview) -> tuple[str, int] | None:
        """Copy ``data`` into a free segment (or a new one, within the limit) and lend it out:
        its name and the size written; None when the pool has no room for it."""
        data = data.cast("B") if data.format != "B" or data.ndim != 1 else data
        size = data.nbytes
        capacity = -(-size // _GRANULE) * _GRANULE
        if capacity > self.limit_bytes:
            return None
        evicted: list[_Segment] = []
        with self._lock:
            segment = self._free_fitting_locked(size, capacity)
            if segment is not None:
                segment.lent, segment.used_at = True, time.monotonic()
            elif self._make_room_locked(capacity, evicted):
                self._reserved += capacity  # created below, outside the lock
            else:
                capacity = 0
        _close_all(evicted)
        if segment is None:
            if not capacity:
                return None
            try:
                segment = self._create(capacity)
            except OSError:  # e.g. /dev/shm is full: a segment of its own says why, if it must
                return None
            finally:
                with self._lock:
                    self._reserved -= capacity
                    if segment is not None:
                        self._segments[segment.name] = segment
        try:
            segment.view[:size] = data  # the one copy; outside the lock
        except BaseException:
            self.forget([segment.name])
            raise
        return segment.name, size

    def _free_fitting_locked(self, size: int, capacity: int) -> _Segment | None:
        """The smallest free segment that holds ``size`` without wasting more than its size."""
        fitting = [
            segment
            for segment in self._segments.values()
            if not segment.lent and size <= segment.capacity <= 2 * capacity
        ]
        return min(fitting, key=lambda segment: segment.capacity, default=None)

    def _make_room_locked(self, capacity: int, evicted: list[_Segment]) -> bool:
        """Drop free segments, least recently used first, until ``capacity`` more fits."""
        held = self._reserved + sum(segment.capacity for segment in self._segments.values())
        if held + capacity <= self.limit_bytes:
            return True
        free = sorted(
            (segment for segment in self._segments.values() if not segment.lent),
            key=lambda segment: segment.used_at,
        )
        for segment in free:
            del self._segments[segment.name]
            evicted.append(segment)
            held -= segment.capacity
            if held + capacity <= self.limit_bytes:
                return True
        return False

    def _create(self, capacity: int) -> _Segment:
        name = f"{self.prefix}-{os.getpid():08x}{secrets.token_hex(4)}"
        path = os.path.join(sharedmem.SHM_DIRECTORY, name)
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            # Allocate every page now: a full /dev/shm is an OSError here, never a SIGBUS
            # in the middle of a copy; and MAP_POPULATE maps them in one go.
            os.posix_fallocate(descriptor, 0, capacity)
            mapping = mmap.mmap(
                descriptor, capacity, flags=mmap.MAP_SHARED | _POPULATE, prot=_READ_WRITE
            )
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise
        finally:
            os.close(descriptor)
        return _Segment(name, capacity, mapping, memoryview(mapping), True, time.monotonic())

    def returned(self, names: Iterable[str], *, kept: Iterable[str] = ()) -> None:
        """Its receiver is done with each of ``names`` but those in ``kept`` (handed over)."""
        kept = set(kept)
        forgotten: list[_Segment] = []
        with self._lock:
            for name in names:
                segment = self._segments.get(name)
                if segment is None or not segment.lent:
                    continue
                if name in kept:
                    forgotten.append(self._segments.pop(name))
                else:
                    segment.lent, segment.used_at = False, time.monotonic()
                    self._trim_later_locked()
        _close_all(forgotten)

    def _trim_later_locked(self) -> None:
        if not self._trimming:
            self._trimming = True
            threading.Thread(target=self._trim_idle, name="yr-shm-trim", daemon=True).start()

    def _trim_idle(self) -> None:
        """Drop segments free for ``idle_s``; the thread ends once none is free."""
        while True:
            with self._lock:
                now = time.monotonic()
                free = [segment for segment in self._segments.values() if not segment.lent]
                idle = [segment for segment in free if now - segment.used_at >= self.idle_s]
                for segment in idle:
                    del self._segments[segment.name]
                waits = [segment.used_at + self.idle_s - now for segment in free]
                waits = [wait for wait in waits if wait > 0]
                if not idle and not waits:
                    self._trimming = False
                    return
            _close_all(idle)
            if waits:
                with self._lock:
                    self._wake.wait(min(waits))

    def forget(self, names: Iterable[str]) -> None:
        """Remove ``names`` (a receiver may still map them: they are its own from now on)."""
        with self._lock:
            forgotten = [self._segments.pop(name) for name in names if name in self._segments]
        _close_all(forgotten)

    def owns(self, name: str) -> bool:
        return name in self._segments

    def held_bytes(self) -> int:
        """The capacity of the segments this pool holds, lent or free."""
        with self._lock:
            return sum(segment.capacity for segment in self._segments.values())

    def close(self) -> None:
        with self._lock:
            segments, self._segments = list(self._segments.values()), {}
            self._wake.notify_all()
        _close_all(segments)


_POPULATE = getattr(mmap, "MAP_POPULATE", 0)
_READ_WRITE = mmap.PROT_READ | mmap.PROT_WRITE


def _close_all(segments: list[_Segment]) -> None:
    for segment in segments:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(sharedmem.SHM_DIRECTORY, segment.name))
        with contextlib.suppress(BufferError):  # a copy into it still runs (shutdown): it
            segment.view.release()  # is unmapped when that ends
            segment.mapping.close()


_pools: dict[str, SegmentPool] = {}
_pools_lock = threading.Lock()


def _forget_the_parents_pools() -> None:
    """A forked child: the parent's segments are not its own to reuse or remove."""
    global _pools, _pools_lock
    _pools, _pools_lock = {}, threading.Lock()


os.register_at_fork(after_in_child=_forget_the_parents_pools)


def pool_for(prefix: str) -> SegmentPool | None:
    """This process's pool for the session named by ``prefix`` (None when pooling is off)."""
    pool = _pools.get(prefix)
    if pool is not None:
        return pool
    with _pools_lock:
        pool = _pools.get(prefix)
        if pool is None:
            limit = pool_limit_bytes()
            if not limit:
                return None
            pool = _pools[prefix] = SegmentPool(
                prefix, limit_bytes=limit, idle_s=pool_idle_seconds()
            )
        return pool


def close_pool(prefix: str) -> None:
    """Remove this process's segments of a session (it ends, or this process does)."""
    with _pools_lock:
        pool = _pools.pop(prefix, None)
    if pool is not None:
        pool.close()


def _pool_of(name: str) -> SegmentPool | None:
    pool = _pools.get(name.rsplit("-", 1)[0])
    return pool if pool is not None and pool.owns(name) else None


def returned(names: Iterable[str], *, kept: Iterable[str] = ()) -> None:
    """A call was answered: its pool segments go back to their pool but those ``kept``; a
    segment of its own was removed by its receiver already (removed here if not)."""
    kept = list(kept)
    for name in names:
        pool = _pool_of(name)
        if pool is not None:
            pool.returned([name], kept=kept)
        else:
            sharedmem.discard([name])


def released(names: Iterable[str]) -> None:
    """Segments this process lent out (results) that their receiver let go of: reusable.
    Names of any other segment are ignored: a receiver removes nothing it does not own."""
    for name in names:
        pool = _pool_of(name)
        if pool is not None:
            pool.returned([name])


def forget(names: Iterable[str]) -> None:
    """A call will never be answered (or was never sent): nothing is reused, all removed."""
    for name in names:
        pool = _pool_of(name)
        if pool is not None:
            pool.forget([name])
        else:
            sharedmem.discard([name])


def discard_written_by(prefix: str, pid: int) -> None:
    """Remove the pool segments a dead process of the session left (its receivers keep
    whatever they still map)."""
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(sharedmem.SHM_DIRECTORY):
            if name.startswith(f"{prefix}-{pid:08x}"):
                sharedmem.discard([name])


def dumps_sharing(value: Any, *, prefix: str, what: str) -> tuple[bytes, list[str], list[int]]:
    """Pickle ``value`` (``what``, for errors) with its large buffers in this process's reused
    segments of session ``prefix``: the pickle, the segments' names and the sizes written."""
    writer = sharedmem.BufferWriter(prefix=prefix, pool=pool_for(prefix))
    try:
        pickled = serialization.dumps_named(
            sharedmem.value_out_of_band(value), what=what, buffer_callback=writer
        )
    except BaseException:
        returned(writer.names)  # nobody saw them
        raise
    return pickled, writer.names, writer.sizes
