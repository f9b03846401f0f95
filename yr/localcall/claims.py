"""Claims on a connection's reading role, and the one thread that ends those nobody used.

A thread that sends a call on a connection nobody is reading keeps the reading role for a
moment (a claim): its own ``yr.get``, which usually comes next, then reads the reply itself,
even when the reply is there before it is (on a small virtual machine the instance often
answers while the sender is still returning from ``send``), and the connection's collector is
never woken for it. A claim not turned into a read within ``CLAIM_S`` is ended here, which
hands the connection back to its collector: that bounds how much later than before a reply
nobody waits for is read. One thread serves every connection of the process, and it sleeps
untimed while no claim is outstanding.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from typing import Protocol

CLAIM_S = 0.002


class Claimable(Protocol):
    def end_claim(self, claim: int) -> None:
        """End ``claim`` if it still holds the reading role (else nothing)."""


class _Reaper:
    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        # A heap of (when it ends, tie-breaker, connection, claim).
        self._due: list[tuple[float, int, Claimable, int]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, connection: Claimable, claim: int) -> None:
        ends = time.monotonic() + CLAIM_S
        with self._changed:
            order = next(self._order)
            heapq.heappush(self._due, (ends, order, connection, claim))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="yr-claims", daemon=True)
                self._thread.start()
            elif self._due[0][1] == order:
                self._changed.notify()  # it sleeps until a later end, or untimed

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._due:
                    self._changed.wait()
                now = time.monotonic()
                if self._due[0][0] > now:
                    self._changed.wait(self._due[0][0] - now)
                    continue
                ended = []
                while self._due and self._due[0][0] <= now:
                    ended.append(heapq.heappop(self._due))
            for _, _, connection, claim in ended:
                connection.end_claim(claim)


_reaper = _Reaper()


def end_later(connection: Claimable, claim: int) -> None:
    """Have ``claim`` on ``connection`` ended ``CLAIM_S`` from now, if still unused."""
    _reaper.watch(connection, claim)


def _forked() -> None:
    global _reaper
    _reaper = _Reaper()  # the parent's thread does not exist in the child


os.register_at_fork(after_in_child=_forked)
