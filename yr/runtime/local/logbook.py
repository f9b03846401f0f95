"""The last lines each instance printed, kept (bounded) until finalize for ``yr logs``.

An instance that died can no longer be asked what it printed: its last words are exactly what
a user wants to read, so the driver keeps them as they pass through its output forwarder.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass

MAX_LINES_PER_INSTANCE = 1000
MAX_LINE_CHARS = 4096


@dataclass(frozen=True)
class LogLine:
    number: int  # 1, 2, 3, ... per instance, so a follower asks only for newer lines
    stream: str
    text: str


class LogBook:
    """Per instance, its newest ``MAX_LINES_PER_INSTANCE`` lines (each cut to a bounded size)."""

    def __init__(self, max_lines: int = MAX_LINES_PER_INSTANCE) -> None:
        self._lock = threading.Lock()
        self._max_lines = max_lines
        self._lines: dict[str, collections.deque[LogLine]] = {}
        self._counts: dict[str, int] = {}

    def add(self, instance_id: str, stream: str, text: str) -> None:
        with self._lock:
            number = self._counts.get(instance_id, 0) + 1
            self._counts[instance_id] = number
            kept = self._lines.setdefault(instance_id, collections.deque(maxlen=self._max_lines))
            kept.append(LogLine(number, stream, text[:MAX_LINE_CHARS]))

    def lines(self, instance_id: str, *, after: int = 0) -> list[LogLine]:
        with self._lock:
            return [line for line in self._lines.get(instance_id, ()) if line.number > after]
