"""Who waits on whom: the wait-for graph of ``concurrency=1`` instances blocked in ``yr.get``.

An edge X -> Y means "instance X, which runs one call at a time, is blocked in yr.get on calls
to Y". X can make no progress until Y answers, so a cycle of such edges is a deadlock that no
timeout will undo: the wait that would close one is refused at once instead.
"""

from __future__ import annotations

import collections
import threading
import time

from yr.errors import YRError


class WaitGraph:
    """Edges are counted: one instance may wait on the same target from nested waits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._edges: dict[str, collections.Counter[str]] = {}
        # The cycles refused lately, (wall time, cycle), for `yr tree` to name them.
        self.refused: collections.deque[tuple[float, list[str]]] = collections.deque(maxlen=20)

    def block(self, waiter: str, targets: list[str]) -> None:
        """Record ``waiter``'s wait on ``targets``, or raise if it would close a cycle."""
        with self._lock:
            for target in targets:
                path = self._path(target, waiter)
                if path is not None:
                    self.refused.append((time.time(), [waiter, *path]))
                    cycle = " -> ".join([waiter, *path])
                    raise YRError(
                        f"deadlock: instance {waiter} (concurrency=1) would wait in yr.get for "
                        f"{target}, which already waits, directly or not, for {waiter} "
                        f"(cycle: {cycle}). Return refs instead of waiting for them, or give "
                        "one instance of the cycle concurrency > 1"
                    )
            self._edges.setdefault(waiter, collections.Counter()).update(targets)

    def unblock(self, waiter: str, targets: list[str]) -> None:
        with self._lock:
            edges = self._edges.get(waiter)
            if edges is None:
                return
            edges.subtract(targets)
            for target in targets:
                if edges[target] <= 0:
                    del edges[target]
            if not edges:
                del self._edges[waiter]

    def forget(self, instance_id: str) -> None:
        """An instance ended: it waits on nothing any more."""
        with self._lock:
            self._edges.pop(instance_id, None)

    def snapshot(self) -> dict[str, list[str]]:
        """Every blocked instance and what it waits on, for a live view of the tree."""
        with self._lock:
            return {waiter: sorted(edges) for waiter, edges in self._edges.items()}

    def _path(self, start: str, goal: str) -> list[str] | None:
        """The instances from ``start`` to ``goal`` following edges, if ``goal`` is reachable."""
        if start == goal:
            return [goal]
        parents: dict[str, str] = {start: start}
        frontier = [start]
        while frontier:
            node = frontier.pop()
            for following in self._edges.get(node, ()):
                if following in parents:
                    continue
                parents[following] = node
                if following == goal:
                    path = [goal]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return path[::-1]
                frontier.append(following)
        return None
