"""Claims on a connection's reading role, and the timer that ends those nobody used.

A thread that sends a call on a connection nobody is reading keeps the reading role for a
moment (a claim): its own ``yr.get``, which usually comes next, then reads the reply itself,
even when the reply is there before it is (on a small virtual machine the instance often
answers while the sender is still returning from ``send``), and the connection's collector is
never woken for it. A claim not turned into a read in time (below) is ended when the
connection's ``ClaimTimer`` fires in the collector's epoll, which hands the connection back to
the collector: that bounds how much later than before a reply nobody waits for is read.

The timer is a Linux ``timerfd`` (through ctypes: ``os.timerfd_*`` needs Python 3.13). It is
armed by the first claim after it last fired, not by every claim: arming it costs more than
the rest of a claim (on a virtual machine, reprogramming a timer leaves the guest), so a thread
that calls and waits in a loop arms it, and wakes the collector, once per period at most.
When it fires it ends only the claim it was armed for, if that is still unused; a claim made
since is young (its sender is about to read) and gets the timer armed anew. (Ending young claims
too cost a thread hop for every call whose claim the firing happened to meet: 10-15% of the
throughput of calls in a loop.) A firing that ends nothing doubles the timer's period, up to
``MAX_CLAIM_S``, and one that ends a claim sets it back to ``CLAIM_S``: a thread that calls and
waits in a loop, whose claims are all used, wakes the collector about 60 times a second instead
of 500 (each wake-up takes the GIL from the calling thread: at 500 a second, 5-10% of its
calls). So an unused claim ends ``CLAIM_S`` to ``2 * MAX_CLAIM_S`` after it was made, the
longest right after a run of used ones. Where the timer cannot be made, nobody claims
(``ClaimTimer.make`` is None).
"""

from __future__ import annotations

import contextlib
import ctypes
import os

CLAIM_S = 0.002
MAX_CLAIM_S = 0.016

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.c_void_p,
        ]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


class ClaimTimer:
    """A one-shot timer to watch in an epoll: readable ``period`` after it is armed."""

    def __init__(self, descriptor: int) -> None:
        self._descriptor = descriptor
        self.armed = False
        self._shortest = CLAIM_S
        self._longest = max(CLAIM_S, MAX_CLAIM_S)
        self._setting = _Itimerspec()  # reused: arming allocates nothing
        self._pointer = ctypes.pointer(self._setting)
        self.period = 0.0
        self._set_period(CLAIM_S)

    def _set_period(self, seconds: float) -> None:
        """The delay of the next arming (the one armed now keeps its own)."""
        if seconds != self.period:
            self.period = seconds
            self._setting.it_value.tv_sec = int(seconds)
            self._setting.it_value.tv_nsec = int((seconds - int(seconds)) * 1e9)

    def back_off(self) -> None:
        """A firing ended no claim: fire half as often, down to once per ``MAX_CLAIM_S``."""
        self._set_period(min(self.period * 2, self._longest))

    def ended_a_claim(self) -> None:
        """A firing ended an unused claim: claims go unused here, check them promptly again."""
        self._set_period(self._shortest)

    @classmethod
    def make(cls) -> ClaimTimer | None:
        if _LIBC is None:
            return None
        descriptor = _LIBC.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        return None if descriptor < 0 else cls(descriptor)

    def fileno(self) -> int:
        return self._descriptor

    def arm(self) -> bool:
        """Fire ``period`` from now, unless armed already (the caller serialises calls);
        False if the timer could not be set (then nothing may be claimed)."""
        if not self.armed:
            failed = _LIBC.timerfd_settime(self._descriptor, 0, self._pointer, None)  # type: ignore[union-attr]
            self.armed = failed == 0
        return self.armed

    def clear(self) -> None:
        """Take the firing (the descriptor stops being readable); the next claim arms it."""
        with contextlib.suppress(BlockingIOError):
            os.read(self._descriptor, 8)
        self.armed = False

    def close(self) -> None:
        os.close(self._descriptor)
