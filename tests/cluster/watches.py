"""Watch plumbing of the emulated API: change events, their history, and per-stream filters."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.cluster.meta import ApiError, bad_request
from tests.cluster.selectors import Predicate

# Events kept for watches that resume from a resourceVersion. Short, as the real watch cache
# is (a few minutes of events): clients must survive 410 Gone, and tests can provoke it.
HISTORY = 1000
Obj = dict[str, Any]


@dataclass(frozen=True)
class Event:
    rv: int
    key: tuple[str, str]  # (group, plural)
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj
    old: Obj | None


class Watch:
    """One watch stream's queue and filter; selector transitions become ADDED/DELETED."""

    def __init__(self, key: tuple[str, str], namespace: str | None, *preds: Predicate) -> None:
        self.key = key
        self.namespace = namespace
        self.preds = preds
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        if self.namespace and obj["metadata"].get("namespace") != self.namespace:
            return False
        return all(pred(obj) for pred in self.preds)

    def translate(self, event: Event) -> str | None:
        """The event type this stream reports, or None when it does not concern it."""
        now, before = self.matches(event.obj), self.matches(event.old)
        if event.type != "MODIFIED":
            return event.type if now else None
        if now:
            return "MODIFIED" if before else "ADDED"
        return "DELETED" if before else None


class Hub:
    """Fans committed events out to watches and listeners, and remembers recent ones."""

    def __init__(self, history: int = HISTORY) -> None:
        self.history: deque[Event] = deque(maxlen=history)
        self.floor = 0  # a watch from before this resourceVersion gets 410 Expired
        self.watches: set[Watch] = set()
        self.listeners: list[Callable[[Event], None]] = []

    def emit(self, event: Event) -> None:
        if len(self.history) == self.history.maxlen:
            self.floor = self.history[0].rv
        self.history.append(event)
        for watch in list(self.watches):
            if watch.key == event.key:
                watch.queue.put_nowait(event)
        for listener in self.listeners:
            listener(event)

    def open(
        self, watch: Watch, since: str | None, current: Callable[[], list[Obj]], rv: int
    ) -> None:
        """From "now" (no or "0" resourceVersion): ADDED for what exists; else replay history."""
        if since in (None, "", "0"):
            for obj in current():
                watch.queue.put_nowait(Event(rv, watch.key, "ADDED", obj, None))
        else:
            try:
                since_rv = int(since)
            except ValueError:
                raise bad_request(f"invalid resource version {since!r}") from None
            if since_rv < self.floor:
                raise ApiError(
                    410, "Expired", f"too old resource version: {since_rv} ({self.floor})"
                )
            for event in self.history:
                if event.rv > since_rv and event.key == watch.key:
                    watch.queue.put_nowait(event)
        self.watches.add(watch)

    def close(self, watch: Watch) -> None:
        self.watches.discard(watch)
