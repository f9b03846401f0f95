"""Instance classes for the call-path tests (importable, so instances can load them)."""

from __future__ import annotations

import gc
import hashlib
import os
import sys
import time

import yr


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class Mirror:
    """A concurrency=1 instance that can be told its own handle, or a peer's."""

    def __init__(self) -> None:
        self.peer = None

    def remember(self, handle) -> None:
        self.peer = handle

    def ask_peer(self, timeout: float) -> str:
        return yr.get(self.peer.ping.invoke(), timeout=timeout)

    def ask_peer_to_ask(self, timeout: float) -> str:
        return yr.get(self.peer.ask_peer.invoke(timeout), timeout=timeout)

    def ping(self) -> str:
        return "pong"

    def slow(self, seconds: float, value):
        time.sleep(seconds)
        return value

    def busy_until(self, path: str, timeout: float, value):
        """Busy (a concurrency=1 instance serves nothing else) until ``path`` exists."""
        deadline = time.monotonic() + timeout
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        return value

    def both(self, first, second):
        return first, second

    def size(self, value) -> tuple[str, int]:
        return type(value).__name__, len(value)


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100, concurrency=2))
class ParallelMirror:
    def __init__(self) -> None:
        self.me = None

    def remember(self, handle) -> None:
        self.me = handle

    def ask_myself(self) -> str:
        return yr.get(self.me.ping.invoke(), timeout=30)

    def ping(self) -> str:
        return "pong"


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class Keeper:
    """Describes what its constructor was given (large constructor arguments' tests)."""

    def __init__(self, data, *, fail: bool = False) -> None:
        if fail:
            raise ValueError("refused in __init__")
        self.kind = type(data).__name__
        self.digest = hashlib.sha256(data).hexdigest()
        self.writable = getattr(data, "flags", None) is not None and data.flags.writeable

    def described(self) -> tuple[str, str]:
        return self.kind, self.digest

    def array_is_writable(self) -> bool:
        return self.writable

    def pid(self) -> int:
        return os.getpid()


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class Probe:
    """Reports on its own process (what a forked instance inherited and imported)."""

    def frozen_objects(self) -> int:
        return gc.get_freeze_count()

    def modules(self) -> list[str]:
        return sorted(sys.modules)


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class KeeperMaker:
    """Creates a Keeper of its own, as a supervisor creates its workers."""

    def make(self, size: int):
        data = os.urandom(size)
        keeper = Keeper.options(yr.InvokeOptions(cpu=100, recover_retry_times=1)).invoke(data)
        described = yr.get(keeper.described.invoke(), timeout=60)
        return described, hashlib.sha256(data).hexdigest(), keeper
