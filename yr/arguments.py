"""A call's arguments, pickled: refs inside them waited for, large buffers via shared memory.

Pickling never happens under a pipeline's lock: pickling a ready ref is cheap, but a pending
one must first be sent (which takes its pipeline's lock), so pending refs are only collected,
and the call is pickled again once every one of them has settled.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable

from yr import segment_pool, serialization, sharedmem
from yr.calls import Call
from yr.refs import ObjectRef, PendingCollector


def pickle_arguments(call: Call, *, target: str, shm_prefix: str) -> list[ObjectRef]:
    """Pickle ``call``'s arguments into it, or return the pending refs found in them."""
    if not call.args and not call.kwargs:  # nothing to walk, share or wait for
        call.arguments = serialization.NO_ARGUMENTS
        return []
    writer = (
        sharedmem.BufferWriter(prefix=shm_prefix, pool=segment_pool.pool_for(shm_prefix))
        if shm_prefix
        else None
    )
    args, kwargs = call.args, call.kwargs
    if writer:
        args, kwargs = sharedmem.call_arguments_out_of_band(args, kwargs)
    try:
        with PendingCollector() as pending:
            pickled = serialization.dumps_call_arguments(
                args, kwargs, target=target, buffer_callback=writer
            )
    except BaseException:
        if writer:
            segment_pool.returned(writer.names)  # never sent: reusable at once
        raise
    if pending:
        if writer:
            segment_pool.returned(writer.names)
        return pending
    call.arguments = pickled
    if writer:
        call.buffers, call.buffer_sizes = writer.names, writer.sizes
    call.args, call.kwargs = (), {}  # the pickled form is all we need now
    return []


def pickle_when_settled(
    call: Call,
    pending: list[ObjectRef],
    *,
    target: str,
    shm_prefix: str,
    then: Callable[[], None],
) -> None:
    """Send the calls behind ``pending``; once all settled, pickle ``call`` (or record why it
    cannot be) and run ``then``. Meanwhile the call keeps its place in its queue."""
    remaining = [len(pending)]
    counter = threading.Lock()

    def settled(_: concurrent.futures.Future) -> None:
        with counter:
            remaining[0] -= 1
            if remaining[0]:
                return
        try:
            still_pending = pickle_arguments(call, target=target, shm_prefix=shm_prefix)
        except BaseException as error:
            call.failure = error
            still_pending = []
        if still_pending:  # refs inside the values of the refs that just settled
            pickle_when_settled(
                call, still_pending, target=target, shm_prefix=shm_prefix, then=then
            )
        else:
            then()

    for ref in pending:
        ref.future.add_done_callback(settled)
    for ref in pending:
        ref._request()
