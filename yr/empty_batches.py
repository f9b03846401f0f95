"""Requests that carry no call: a seq that will never come, and result segments given back.

Both are sent without waiting for their (empty) reply: a ``concurrency=1`` instance answers
them only after the call it is running, which may be another caller's and last for hours.
"""

from __future__ import annotations

from collections.abc import Callable

from yr.calls import Batch
from yr.localcall.channel import LocalChannel
from yr.pipeline import Pipeline
from yr.protocol import yr_pb2


def fill_gap(pipeline: Pipeline, batch: Batch, *, caller_id: str) -> None:
    """Tell the server ``batch``'s seq will never arrive: a later batch may wait for it."""
    filler = Batch([], batch.seq, batch.stub, batch.metadata, batch.incarnation, batch.instance_id)
    filler.settled_below = pipeline.settled_below(batch)
    _send_unanswered(filler, filler.request(caller_id), then=lambda *_: None)


def give_back_released(pipeline: Pipeline, *, caller_id: str) -> None:
    """Send the result segments let go of to an instance no request is going to: it may reuse
    or free them now, not at this caller's next call, which may never come."""
    with pipeline.lock:
        batch = pipeline.release_batch_locked()
    if batch is None:
        return

    def settled(*_: object) -> None:  # answered, or the instance is gone with the segments
        with pipeline.lock:
            pipeline.settle_locked(batch)

    _send_unanswered(batch, batch.request(caller_id), then=settled)


def _send_unanswered(
    batch: Batch, request: yr_pb2.CallRequest, *, then: Callable[..., None]
) -> None:
    """Send ``request`` on ``batch``'s stub; ``then`` runs once it is answered or failed."""
    try:
        if isinstance(batch.stub, LocalChannel):
            batch.stub.start(request, then)
        else:
            batch.stub.Call.future(request, metadata=batch.metadata).add_done_callback(then)
    except Exception:  # never left this process (a lost connection, a closed channel)
        then()
