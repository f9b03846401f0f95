"""Large pickle buffers through shared memory, for callers on the same machine as the instance.

Pickle protocol 5 hands large contiguous buffers (numpy arrays, bytes-likes) to a callback; we
write each one once into a file under /dev/shm and send only its name. The receiver maps it
copy-on-write and unlinks it, so the argument arrives without further copies (Ray's object
store does the same for its actors).
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import pickle
import re
import secrets
from collections.abc import Iterable
from typing import Any

SHM_DIRECTORY = "/dev/shm"
THRESHOLD_BYTES = 1 << 20  # below this a copy through gRPC is cheaper than a file
_NAME = re.compile(r"^yr-[0-9a-f]{8,64}-[0-9a-f]{16}$")


def available() -> bool:
    return os.path.isdir(SHM_DIRECTORY) and os.access(SHM_DIRECTORY, os.W_OK)


class BufferWriter:
    """A pickle ``buffer_callback`` that moves large buffers into shared-memory files."""

    def __init__(self, *, prefix: str) -> None:
        self.prefix = prefix
        self.names: list[str] = []

    def __call__(self, buffer: pickle.PickleBuffer) -> bool:
        view = buffer.raw()
        if view.nbytes < THRESHOLD_BYTES:
            return True  # keep it in band
        self.names.append(write_segment(self.prefix, view))
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
    name = f"{prefix}-{secrets.token_hex(8)}"
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


def open_buffers(names: list[str]) -> list[memoryview]:
    """Map (copy-on-write) and unlink each named segment; the mapping lives on with its view."""
    return [_map(name, unlink=True) for name in names]


def map_buffers(names: list[str]) -> list[memoryview]:
    """Map (copy-on-write) each named segment and leave it for the next reader (an instance's
    constructor arguments, read again by each incarnation)."""
    return [_map(name, unlink=False) for name in names]


def _map(name: str, *, unlink: bool) -> memoryview:
    if not _NAME.match(name):
        raise ValueError(f"not a yr shared-memory segment name: {name!r}")
    path = os.path.join(SHM_DIRECTORY, name)
    descriptor = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(descriptor).st_size
        mapped = mmap.mmap(descriptor, size, access=mmap.ACCESS_COPY) if size else b""
    finally:
        os.close(descriptor)
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return memoryview(mapped)


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
