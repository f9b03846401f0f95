"""One event loop per instance for its ``async def`` methods, in a thread of its own.

``asyncio.run`` per call would give each call a fresh loop: state shared between calls
(an ``asyncio.Event``, a client session) would belong to a dead loop, and calls could never
overlap. Here every coroutine of the instance runs on the same loop; the method threads that
submitted them wait for their results, so the instance's ``concurrency`` still bounds how
many calls are in flight while the loop interleaves their awaits.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from typing import Any


class MethodLoop:
    """Started on the first coroutine; stopped with the instance server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def run(self, awaitable: Awaitable[Any]) -> Any:
        """Run ``awaitable`` on the instance's loop; block this method thread until done."""
        return asyncio.run_coroutine_threadsafe(_await(awaitable), self._running_loop()).result()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=loop.run_forever, name="yr-async-methods", daemon=True
                )
                self._thread.start()
                self._loop = loop
            return self._loop

    def stop(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
