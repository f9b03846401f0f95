"""How an instance server orders and runs calls: per-caller sequence, one method thread."""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
import traceback
from collections.abc import Callable
from typing import Any

import grpc

from yr.futures import settle

# A caller whose seq numbers have a gap this long (a lost call) is let through anyway.
SEQUENCE_GAP_TIMEOUT_S = 30.0


class CallRefused(Exception):
    """A batch refused before anything in it ran; each transport reports it its own way."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class CallOrder:
    """Admits each caller's calls strictly in their seq order, whatever order they arrive in."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {}
        self._waiting: dict[str, dict[int, asyncio.Future[None]]] = {}

    async def admit(self, caller: str, seq: int, *, settled_below: int = 0) -> None:
        """Wait for the caller's earlier batches; those below ``settled_below`` the caller
        has given up on (answered, or never sent), so they are not waited for."""
        expected = self._next.get(caller, 0)
        if settled_below > expected:
            self._skip_to(caller, settled_below)
            expected = settled_below
        if seq <= expected:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(caller, {})[seq] = waiter
        try:
            await asyncio.wait_for(asyncio.shield(waiter), SEQUENCE_GAP_TIMEOUT_S)
        except asyncio.TimeoutError:
            self._waiting[caller].pop(seq, None)
            self._next[caller] = seq  # give up on the missing calls

    def _skip_to(self, caller: str, seq: int) -> None:
        self._next[caller] = seq
        waiter = self._waiting.get(caller, {}).pop(seq, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def done(self, caller: str, seq: int) -> None:
        """Mark ``seq`` admitted; wake the caller's next call if it is already waiting."""
        following = max(self._next.get(caller, 0), seq + 1)
        self._next[caller] = following
        waiter = self._waiting.get(caller, {}).pop(following, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class SerialRunner:
    """One thread that runs an instance's calls one at a time, handing results to the loop.

    Cheaper per call than ``run_in_executor``: a queue put, and one wake-up of the loop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="yr-method", daemon=True)
        self._thread.start()

    def submit(self, function: Callable[..., Any], *args: Any) -> asyncio.Future:
        future = self._loop.create_future()
        self._queue.put((future, function, args))
        return future

    def post(self, function: Callable[..., Any], *args: Any) -> None:
        """Run ``function`` on the thread, in turn, and tell the loop nothing: it hands on its
        own result (a reply written straight to its caller's socket)."""
        self._queue.put((None, function, args))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, function, args = item
            if future is None:
                try:
                    function(*args)
                except BaseException:
                    traceback.print_exc()
                continue
            try:
                result = function(*args)
            except BaseException as error:
                self._loop.call_soon_threadsafe(functools.partial(settle, future, error=error))
            else:
                self._loop.call_soon_threadsafe(functools.partial(settle, future, result=result))

    def stop(self) -> None:
        self._queue.put(None)
