"""Large pickle buffers through shared memory, for callers on the same machine as the instance.

Pickle protocol 5 hands large contiguous buffers (numpy arrays, bytes-likes) to a callback; we
write each one once into a file under /dev/shm and send only its name. The receiver maps it
copy-on-write, so the value arrives without further copies (Ray's object store does the same
for its actors). A buffer written into a reused segment (yr/segment_pool.py) travels with its
size, and the receiver leaves the segment in place and tells when it is done with it; one
written into a segment of its own travels with size 0, and the receiver unlinks it once mapped.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import pickle
import re
import secrets
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

SHM_DIRECTORY = "/dev/shm"
THRESHOLD_BYTES = 1 << 20  # below this a copy through gRPC is cheaper than a file
_NAME = re.compile(r"^yr-[0-9a-f]{8,64}-[0-9a-f]{16}$")


def available() -> bool:
    return os.path.isdir(SHM_DIRECTORY) and os.access(SHM_DIRECTORY, os.W_OK)


class Lender(Protocol):
    """Where reused segments come from (yr/segment_pool.py)."""

    def lend(self, data: memoryview) -> tuple[str, int] | None: ...


class BufferWriter:
    """A pickle ``buffer_callback`` that moves large buffers into shared-memory files: into
    reused segments of ``pool`` while it has room, else into segments of their own."""

    def __init__(self, *, prefix: str, pool: Lender | None = None) -> None:
        self.prefix = prefix
        self.pool = pool
        self.names: list[str] = []
        self.sizes: list[int] = []  # per name: the size in a reused segment, 0: its own

    def __call__(self, buffer: pickle.PickleBuffer) -> bool:
        view = buffer.raw()
        if view.nbytes < THRESHOLD_BYTES:
            return True  # keep it in band
        lent = self.pool.lend(view) if self.pool is not None else None
        name, size = lent if lent is not None else (write_segment(self.prefix, view), 0)
        self.names.append(name)
        self.sizes.append(size)
        return False


class _OutOfBand:
    """Stands in for a large ``bytes``/``bytearray`` so pickle hands it to the buffer callback
    (pickle writes those types in band); it unpickles as the original type, not as itself."""

    __slots__ = ("value",)

    def __init__(self, value: bytes | bytearray) -> None:
        self.value = value

    def __reduce_ex__(self, protocol: int):
        return type(self.value), (pickle.PickleBuffer(self.value),)


_WALKED = frozenset({bytes, bytearray, list, tuple, dict})


def large_bytes_out_of_band(value: Any, *, budget: int = 10_000) -> Any:
    """``value`` with its large bytes and bytearrays (at the top, or inside lists, tuples and
    dicts, visiting at most ``budget`` items) marked to travel through shared memory."""
    remaining = [budget]

    def visit(item: Any) -> Any:
        remaining[0] -= 1
        kind = type(item)
        if kind is bytes or kind is bytearray:
            return _OutOfBand(item) if len(item) >= THRESHOLD_BYTES else item
        if remaining[0] < 0:
            return item
        if kind is list or kind is tuple:
            # every call goes through here: allocate only when something may change
            if not _holds_walked(item):
                remaining[0] -= len(item)
                return item
            changed = [visit(member) for member in item]
            if any(new is not old for new, old in zip(changed, item, strict=True)):
                return kind(changed)
            return item
        if kind is dict:
            if not _holds_walked(item.values()):
                remaining[0] -= len(item)
                return item
            values = {key: visit(member) for key, member in item.items()}
            if any(values[key] is not member for key, member in item.items()):
                return values
            return item
        return item

    return visit(value)


def value_out_of_band(value: Any) -> Any:
    """``large_bytes_out_of_band`` for a return value; nothing walked unless it is bytes or a
    container (most results)."""
    return large_bytes_out_of_band(value) if type(value) in _WALKED else value


def call_arguments_out_of_band(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``large_bytes_out_of_band`` for a call's arguments; nothing walked when they hold
    no bytes or containers (most calls)."""
    if _holds_walked(args) or _holds_walked(kwargs.values()):
        return large_bytes_out_of_band((args, kwargs))
    return args, kwargs


def _holds_walked(values: Iterable[Any]) -> bool:
    return not _WALKED.isdisjoint(map(type, values))  # the loop runs in C


def write_segment(prefix: str, data: bytes | memoryview) -> str:
    """Write ``data`` into a new segment named after ``prefix``; return the segment's name."""
    view = memoryview(data).cast("B")
    name = f"{prefix}-{_random_tag()}"
    descriptor = os.open(
        os.path.join(SHM_DIRECTORY, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600
    )
    try:
        written = 0
        while written < view.nbytes:
            written += os.write(descriptor, view[written:])
    except BaseException:
        discard([name])
        raise
    finally:
        os.close(descriptor)
    return name


def _random_tag() -> str:
    """16 random hex digits, never starting "00": those begin the name of a reused segment
    (a writer's pid), which the fork server removes when that writer dies."""
    while (tag := secrets.token_hex(8)).startswith("00"):
        pass
    return tag


def open_buffers(names: list[str]) -> list[memoryview]:
    """Map (copy-on-write) and unlink each named segment; the mapping lives on with its view."""
    return [_map(name, unlink=True) for name in names]


def map_buffers(names: list[str]) -> list[memoryview]:
    """Map (copy-on-write) each named segment and leave it for the next reader (an instance's
    constructor arguments, read again by each incarnation)."""
    return [_map(name, unlink=False) for name in names]


def _map(name: str, *, unlink: bool) -> memoryview:
    return memoryview(_mapping(name, 0, unlink=unlink))


def _mapping(name: str, size: int, *, unlink: bool) -> mmap.mmap | bytes:
    """Map the first ``size`` bytes of segment ``name`` (0: all of it), copy-on-write: the
    receiver may modify its value without the writer ever seeing it."""
    if not _NAME.match(name):
        raise ValueError(f"not a yr shared-memory segment name: {name!r}")
    path = os.path.join(SHM_DIRECTORY, name)
    descriptor = os.open(path, os.O_RDONLY)
    try:
        size = size or os.fstat(descriptor).st_size  # mmap refuses a size past the end
        return mmap.mmap(descriptor, size, access=mmap.ACCESS_COPY) if size else b""
    finally:
        os.close(descriptor)
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


class ReceivedBuffers:
    """One message's out-of-band buffers as its receiver maps them; afterwards, the reused
    segments it still maps (a view of them outlived the call)."""

    def __init__(self, names: Sequence[str], sizes: Sequence[int]) -> None:
        self.views: list[memoryview] = []
        self._reused: list[tuple[str, mmap.mmap]] = []
        try:
            for name, size in _with_sizes(names, sizes):
                mapped = _mapping(name, size, unlink=not size)
                if size:
                    self._reused.append((name, mapped))
                self.views.append(memoryview(mapped))
        except BaseException:
            self.close()
            raise

    def close(self) -> list[str]:
        """Unmap what nothing views any more; the names of reused segments still viewed."""
        self.views = []
        kept = []
        for name, mapped in self._reused:
            try:
                mapped.close()
            except BufferError:  # a view of it lives on: the segment is ours now
                kept.append(name)
        self._reused = []
        return kept


def map_returned(
    names: Sequence[str], sizes: Sequence[int], *, prefix: str, released: Callable[[str], None]
) -> list[memoryview]:
    """Map a reply's buffers; ``released(name)`` is called for a reused segment once the last
    view of it is gone (its writer may then reuse it). Only this session's segments."""
    check_session_segments(names, prefix)
    views = []
    pending = [name for name, size in _with_sizes(names, sizes) if size]
    try:
        for name, size in _with_sizes(names, sizes):
            mapped = _mapping(name, size, unlink=not size)
            if size:
                pending.remove(name)
                weakref.finalize(mapped, released, name).atexit = False
            views.append(memoryview(mapped))
    finally:
        for name in pending:  # never mapped: nothing here will ever view them
            released(name)
    return views


def _with_sizes(names: Sequence[str], sizes: Sequence[int]) -> Iterable[tuple[str, int]]:
    if sizes and len(sizes) != len(names):
        raise ValueError(f"{len(names)} shared-memory buffers but {len(sizes)} sizes")
    return zip(names, sizes or [0] * len(names), strict=True)


def check_session_segments(names: tuple[str, ...] | list[str], prefix: str) -> None:
    """Refuse segment names that are not this session's (a caller naming another's file)."""
    for name in names:
        if not (_NAME.match(name) and name.startswith(prefix + "-")):
            raise ValueError(f"not a shared-memory segment of this session: {name!r}")


def discard(names: list[str]) -> None:
    """Remove segments a call no longer needs (the receiver may have done so already)."""
    for name in names:
        if _NAME.match(name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(SHM_DIRECTORY, name))


def discard_prefix(prefix: str) -> None:
    """Remove every segment a session left behind (a call that never reached its instance)."""
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(SHM_DIRECTORY):
            if name.startswith(prefix + "-"):
                discard([name])


def session_prefix(session_token: str) -> str:
    """The name prefix of one session's segments (removed at shutdown, or swept after)."""
    return "yr-" + hashlib.sha256(session_token.encode()).hexdigest()[:16]
