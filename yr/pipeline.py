"""One instance's call pipeline as a caller keeps it: queued calls and sequence bookkeeping.

Each batch takes the next seq of the instance's current incarnation; the server runs a
caller's batches in seq order. A batch stays "unsettled" until it is answered or known never
to reach the server; every request carries the lowest unsettled seq, so the server never
waits for a batch that will not come.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from typing import Any

from yr.calls import Batch, Call, SharedResults
from yr.runtime.base import ClassInfo, Endpoint


@dataclass(eq=False)
class Pipeline:
    instance_id: str
    class_info: ClassInfo
    lock: threading.Lock = field(default_factory=threading.Lock)
    queue: collections.deque[Call] = field(default_factory=collections.deque)
    endpoint: Endpoint | None = None
    stub: Any = None
    metadata: tuple[tuple[str, str], ...] = ()
    resolving: bool = False
    min_incarnation: int = 0
    next_seq: int = 0
    in_flight: int = 0  # batches sent and not answered
    unsettled: set[tuple[int, int]] = field(default_factory=set)  # (incarnation, seq) out
    failure: BaseException | None = None
    results: SharedResults | None = None  # None: results never through shared memory

    def next_batch_locked(self, calls: list[Call]) -> Batch:
        assert self.endpoint is not None
        batch = Batch(
            calls,
            self.next_seq,
            self.stub,
            self.metadata,
            self.endpoint.incarnation,
            self.instance_id,
            # another session's instance (a kept detached one) writes segments we do not map
            results=None if self.endpoint.session else self.results,
        )
        for call in calls:
            call.batch = batch  # what a yr.get waiting for it alone may read the reply of
        self.next_seq += 1
        self.in_flight += 1
        self.unsettled.add((batch.incarnation, batch.seq))
        batch.settled_below = self._settled_below_locked(batch)
        return batch

    def release_batch_locked(self) -> Batch | None:
        """An empty batch to carry the result segments this caller let go of, when no other
        request would soon: nothing queued or in flight to an instance it can reach."""
        results = self.results
        if results is None or not results.released or self.queue or self.in_flight:
            return None
        if self.endpoint is None or self.endpoint.session or self.failure is not None:
            return None  # dead or not resolved (its segments went with it), or not our session
        return self.next_batch_locked([])

    def settle_locked(self, batch: Batch) -> None:
        """The batch was answered or will never reach the server: no later batch waits on it."""
        self.in_flight -= 1
        self.unsettled.discard((batch.incarnation, batch.seq))

    def settled_below(self, batch: Batch) -> int:
        """The lowest seq of ``batch``'s incarnation still out (``batch``'s own at most)."""
        with self.lock:
            return self._settled_below_locked(batch)

    def _settled_below_locked(self, batch: Batch) -> int:
        if len(self.unsettled) == 1:  # the common case: this batch alone is out
            (incarnation, seq), *_ = self.unsettled
            return seq if incarnation == batch.incarnation else batch.seq
        out = [seq for incarnation, seq in self.unsettled if incarnation == batch.incarnation]
        return min(out, default=batch.seq)

    def instance_died(
        self, batch: Batch, died: BaseException, *, will_restart: bool, resend: bool
    ) -> None:
        """``batch``'s incarnation is dead: later calls go to the next one, or fail with
        ``died`` if none will come; with ``resend`` (they never reached the dead one) the
        batch's calls go back in the queue, in submission order."""
        with self.lock:
            self.settle_locked(batch)
            if self.endpoint is not None and self.endpoint.incarnation == batch.incarnation:
                self.endpoint = None
                self.stub = None
            self.min_incarnation = max(self.min_incarnation, batch.incarnation + 1)
            if not will_restart:
                self.failure = died
            if resend:
                for call in reversed(batch.calls):
                    position = sum(1 for queued in self.queue if queued.order < call.order)
                    self.queue.insert(position, call)

    def new_incarnation_locked(self, endpoint: Endpoint) -> None:
        """Calls go to ``endpoint`` now; a new incarnation numbers its batches from 0."""
        if self.endpoint is None or self.endpoint.incarnation != endpoint.incarnation:
            self.next_seq = 0
            self.unsettled = {key for key in self.unsettled if key[0] != endpoint.incarnation}
        self.endpoint = endpoint
