"""A caller and its instance that answer each other within microseconds poll for a moment
before they sleep.

Asleep, each turn of a synchronous call costs a wake-up: on this 2-vCPU VM a context switch
between two processes, with cold caches after it, costs more than the call's Python (sync calls
ran at about 6,000/s with both asleep on one CPU, colocation.py). A thread that polls its socket
for up to ``SPIN_S`` first, yielding its CPU between polls, finds a prompt partner's bytes with
no wake-up at all: with the caller and the instance each polling on its own CPU, 13,000-16,000
sync calls/s. Polling pays only when the partner answers within the budget, so it is adaptive:
a poll that finds nothing makes its ``Spinner`` skip the next 1, 2, 4 ... waits (up to
``MAX_SKIPPED``), and one that finds bytes makes it poll every time again. A caller of long
calls, or a caller that does its own work between calls, polls once in 64 waits at most.
``YR_SPIN=0`` turns it off.
"""

from __future__ import annotations

import os
import select
import time

from yr.localcall import colocation

ENVIRONMENT_KEY = "YR_SPIN"
# About one do-nothing call's work on the other side: long enough for a prompt partner, short
# enough that a poll that finds nothing costs a tenth of a millisecond.
SPIN_S = 100e-6
MAX_SKIPPED = 64


def enabled_by_environment() -> bool:
    """Whether ``YR_SPIN`` leaves polling on (the default); a value that is neither on nor
    off is refused, naming the variable (``yr.init`` checks it before anything starts)."""
    return colocation.switch_from_environment(
        ENVIRONMENT_KEY, turns_off="to let a caller and its instance sleep at once when they wait"
    )


def configure_from_environment() -> None:
    """Read ``YR_SPIN`` again (``yr.init`` does, so a driver's setting holds from its
    ``init`` on); a value that is neither on nor off raises before anything starts."""
    global ENABLED
    ENABLED = enabled_by_environment()


# An instance reads it on import: it inherits the setting its driver's yr.init() accepted.
ENABLED = colocation.switch_setting(ENVIRONMENT_KEY) is not False


class Spinner:
    """Polls one socket for a moment before its owner sleeps in it; owned by one thread at a
    time (the connection's reader, or the instance's method thread)."""

    __slots__ = ("_poller", "_skip", "_skipped")

    def __init__(self, descriptor: int) -> None:
        self._poller = select.poll()
        self._poller.register(descriptor, select.POLLIN)
        self._skip = 0  # waits to let pass without polling, after a poll that found nothing
        self._skipped = 0

    def readable_soon(self) -> bool:
        """Poll for up to ``SPIN_S``: True once the socket has bytes (or its end) to read;
        False at once while polling is off or skipped, or when the budget ran out."""
        if not ENABLED:
            return False
        if self._skipped < self._skip:
            self._skipped += 1
            return False
        poll, give_way = self._poller.poll, os.sched_yield
        until = time.perf_counter() + SPIN_S
        while True:
            if poll(0):
                self._skip = self._skipped = 0
                return True
            if time.perf_counter() >= until:
                self._skip, self._skipped = min(max(1, 2 * self._skip), MAX_SKIPPED), 0
                return False
            give_way()  # a partner runnable on this CPU runs now, not at our next tick
