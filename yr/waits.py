"""What this process's threads wait on, and which one is a ``concurrency=1`` instance's.

Every blocking ``yr.get`` / ``yr.wait`` is noted here (thread, the calls it waits for, since
when): a dict entry per wait, cheap enough to be always on, so ``yr tree`` can ask any process
(the Debug service) "who waits on whom" at any moment.

A serial instance's method thread can never wait for a call to its own instance: the call
would run after the waiting method returns. ``yr.get`` asks here first and raises at once
instead of hanging. Its waits on other instances that last (``REPORT_WAITS_AFTER_S``) are
reported to the runtime, which refuses one that would close a cycle of such waits (A waits on
B waits on A).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from yr.errors import YRError

_serial: dict[int, str] = {}  # thread ident -> the instance whose calls it runs one by one


class Wait(NamedTuple):
    """One thread blocked on calls: (instance id, method) each, since a monotonic time."""

    thread: int
    calls: tuple[tuple[str, str], ...]
    since: float


_blocked: dict[int, Wait] = {}  # thread ident -> its current wait (one per thread)


class WaitReporter(Protocol):
    def block_wait(self, waiter: str, targets: list[str]) -> None: ...
    def end_wait(self, waiter: str, targets: list[str]) -> None: ...


_reporter: WaitReporter | None = None
# A serial instance's wait is reported to the runtime only once it has lasted this long: a
# deadlock lasts forever, so it is refused all the same, and the quick waits of a supervisor
# driving its workers step by step cost no round trips to the runtime.
REPORT_WAITS_AFTER_S = 0.05


def report_waits_to(reporter: WaitReporter | None) -> None:
    """The runtime that keeps this process's wait-for edges (set with the session)."""
    global _reporter
    _reporter = reporter


def waiting_on(calls: Sequence[tuple[str, str]], *, report: bool = True) -> _Waiting:
    """Around a blocking wait for ``calls`` ((instance id, method) each): note it; on a serial
    method thread it is also to be reported to the runtime (``report``), which may refuse a
    cycle, once it has lasted ``REPORT_WAITS_AFTER_S`` (``report_at``, ``report()``)."""
    return _Waiting(calls, report)


class _Waiting:
    """``waiting_on``'s context: a class, not a generator, as every ``yr.get`` enters one."""

    __slots__ = (
        "_calls",
        "_outer",
        "_report",
        "_reported",
        "_reporter",
        "_targets",
        "_thread",
        "_waiter",
        "report_at",
    )

    def __init__(self, calls: Sequence[tuple[str, str]], report: bool) -> None:
        self._calls = calls
        self._report = report
        self._reported = False
        # When the wait is to be reported, if it lasts (monotonic); None: never.
        self.report_at: float | None = None

    def __enter__(self) -> _Waiting:
        calls = self._calls
        if not calls:  # nothing to wait for but puts: no wait worth showing
            self._thread = None
            return self
        self._thread = thread = threading.get_ident()
        self._outer = _blocked.get(thread)  # a wait inside a wait (a ref resolved meanwhile)
        now = time.monotonic()
        _blocked[thread] = Wait(thread, tuple(calls), now)
        self._waiter = waiter = _serial.get(thread) if self._report else None
        self._reporter = reporter = _reporter
        self._targets: list[str] = []
        if waiter is not None and reporter is not None:
            self._targets = sorted({instance for instance, _ in calls} - {waiter})
        if self._targets:
            self.report_at = now + REPORT_WAITS_AFTER_S
        return self

    def report(self) -> None:
        """Tell the runtime this thread's instance waits on the others; raises (the wait is
        over) if the runtime refuses it as closing a cycle."""
        if self.report_at is None or self._reported:
            return
        try:
            self._reporter.block_wait(self._waiter, self._targets)  # type: ignore[union-attr]
        except BaseException:
            self._unblock()
            self._thread = None  # nothing for __exit__ to undo
            raise
        self._reported = True

    def __exit__(self, *_: object) -> None:
        if self._thread is None:
            return
        if self._reported:
            with contextlib.suppress(Exception):  # the runtime may be gone; it is over
                self._reporter.end_wait(self._waiter, self._targets)  # type: ignore[union-attr]
        self._unblock()

    def _unblock(self) -> None:
        if self._outer is None:
            _blocked.pop(self._thread, None)
        else:
            _blocked[self._thread] = self._outer


def current() -> list[Wait]:
    """Every wait of this process right now."""
    return list(_blocked.values())


def declare_serial_thread(instance_id: str) -> None:
    """Called on the method thread of a ``concurrency=1`` instance, before any user code."""
    _serial[threading.get_ident()] = instance_id


def serial_instance() -> str | None:
    """The instance whose only method thread this is, if it is one."""
    return _serial.get(threading.get_ident())


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
