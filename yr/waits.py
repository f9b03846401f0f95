"""Which thread of this process is a ``concurrency=1`` instance's only method thread.

That thread can never wait for a call to its own instance: the call would run after the
waiting method returns. ``yr.get`` asks here first and raises at once instead of hanging.
Its waits on other instances are reported to the runtime, which refuses one that would close
a cycle of such waits (A waits on B waits on A).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Protocol

from yr.errors import YRError

_serial: dict[int, str] = {}  # thread ident -> the instance whose calls it runs one by one


class WaitReporter(Protocol):
    def block_wait(self, waiter: str, targets: list[str]) -> None: ...
    def end_wait(self, waiter: str, targets: list[str]) -> None: ...


_reporter: WaitReporter | None = None


def report_waits_to(reporter: WaitReporter | None) -> None:
    """The runtime that keeps this process's wait-for edges (set with the session)."""
    global _reporter
    _reporter = reporter


@contextlib.contextmanager
def waiting_on(targets: set[str]) -> Iterator[None]:
    """Around a blocking wait: on a serial method thread, record it (or refuse a cycle)."""
    waiter = _serial.get(threading.get_ident())
    reporter = _reporter
    targets.discard(waiter or "")
    if waiter is None or reporter is None or not targets:
        yield
        return
    ordered = sorted(targets)
    reporter.block_wait(waiter, ordered)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # the runtime may be gone; the wait is over
            reporter.end_wait(waiter, ordered)


def declare_serial_thread(instance_id: str) -> None:
    """Called on the method thread of a ``concurrency=1`` instance, before any user code."""
    _serial[threading.get_ident()] = instance_id


def refuse_self_wait(target_instance: str, method: str) -> None:
    """Raise if this thread is ``target_instance``'s only method thread (a wait on itself)."""
    instance_id = _serial.get(threading.get_ident())
    if instance_id is not None and instance_id == target_instance:
        raise YRError(
            f"deadlock: instance {instance_id} (concurrency=1) waits in yr.get for its own call "
            f"{method}, which cannot run until the waiting method returns "
            f"(cycle: {instance_id} -> {instance_id}). Return the ref instead of waiting for it, "
            "or give the instance concurrency > 1"
        )
