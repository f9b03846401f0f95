"""Reconcile an object again later: one timer per object (the earliest wins), and the task it
starts kept until done. The instance and resource-group reconcilers both requeue this way."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

Key = tuple[str, str]  # (namespace, name)


class Requeue:
    """Timers that run ``run(namespace, name)`` once their delay has passed."""

    def __init__(self, run: Callable[[str, str], Awaitable[None]]) -> None:
        self._run = run
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def after(self, key: Key, delay: float) -> None:
        """Run for ``key`` in ``delay`` seconds, unless an earlier run is already due."""
        loop = asyncio.get_running_loop()
        when = loop.time() + max(0.0, delay)
        old = self._timers.get(key)
        if old is not None and not old.cancelled() and old.when() <= when:
            return
        if old is not None:
            old.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def cancel(self, key: Key) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        task = asyncio.ensure_future(self._run(*key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
