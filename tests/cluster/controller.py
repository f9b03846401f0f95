"""The loop every in-process controller runs: wake on store events, do one pass, repeat."""

from __future__ import annotations

import asyncio
import logging

from tests.cluster.store import Store
from tests.cluster.watches import Event

log = logging.getLogger("controller")


class Controller:
    """Subclasses say which events concern them and what one pass does."""

    name = "controller"

    def __init__(self, store: Store) -> None:
        self.store = store
        self.dirty = asyncio.Event()
        self.dirty.set()
        store.listeners.append(self._on_event)

    def concerns(self, event: Event) -> bool:
        return True

    def _on_event(self, event: Event) -> None:
        if self.concerns(event):
            self.dirty.set()

    def pass_once(self) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        while True:
            await self.dirty.wait()
            self.dirty.clear()
            try:
                self.pass_once()
            except Exception:  # a bug here must not stop the controller for good
                log.exception("%s pass failed", self.name)
            await asyncio.sleep(0)
