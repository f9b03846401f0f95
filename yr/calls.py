"""One queued method call, and how a reply (or a failure) settles its refs."""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from yr import serialization, sharedmem
from yr.errors import YRError, invoke_error_for
from yr.protocol import yr_pb2
from yr.refs import ObjectRef


@dataclass(slots=True)
class Call:
    """A call from ``invoke`` until its refs are settled."""

    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    arguments: bytes | None  # pickled once every ObjectRef in the arguments is ready
    buffers: list[str]  # shared-memory segments holding large argument buffers
    refs: list[ObjectRef]
    order: int  # submission order, to put a re-sent call back in its place
    batch: Batch | None = None  # once batched: what yr.get may send itself
    failure: BaseException | None = None  # its arguments could not be pickled
    buffer_sizes: list[int] = field(default_factory=list)  # per buffer: >0 in a reused segment


@dataclass(slots=True)
class SharedResults:
    """Large results of one instance, mapped from this session's shared memory; the reused
    segments this caller has let go of go back with its next request to the instance."""

    prefix: str
    released: collections.deque[str] = field(default_factory=collections.deque)
    # Called once the first reused segment is mapped: from then on, what is let go of while
    # no request to the instance is due goes back on its own (CallClient's release sweep).
    on_first_mapped: Callable[[], None] | None = None

    def map(self, names: Sequence[str], sizes: Sequence[int]) -> list[memoryview]:
        # a deque's append is atomic: the last view may die in any thread, even in the GC
        views = sharedmem.map_returned(
            names, sizes, prefix=self.prefix, released=self.released.append
        )
        if self.on_first_mapped is not None and any(sizes):
            first, self.on_first_mapped = self.on_first_mapped, None
            first()
        return views

    def take_released(self) -> list[str]:
        taken = []
        while self.released:
            taken.append(self.released.popleft())
        return taken


@dataclass(slots=True)
class Batch:
    """Calls sent as one RPC, under one per-caller sequence number."""

    calls: list[Call]
    seq: int
    stub: Any
    metadata: tuple[tuple[str, str], ...]
    incarnation: int
    instance_id: str = ""
    connection: Any = None  # the local connection it was written to (yr.get reads its reply)
    results: SharedResults | None = None  # large results may come through shared memory
    # The lowest seq of its incarnation still out when it was made (its own at most): the
    # server need not wait for any below it.
    settled_below: int = 0

    def request(self, caller: str) -> yr_pb2.CallRequest:
        # Filled in place: building nested messages from keyword lists costs twice as much.
        request = yr_pb2.CallRequest(
            caller=caller,
            seq=self.seq,
            settled_below=self.settled_below,
            instance_id=self.instance_id,
            incarnation=self.incarnation,
        )
        shared = self.results is not None
        for call in self.calls:
            invocation = request.invocations.add(
                method=call.method, arguments=call.arguments, results_in_shared_memory=shared
            )
            if call.buffers:
                invocation.buffers.extend(call.buffers)
                invocation.buffer_sizes.extend(call.buffer_sizes)
        if shared and self.results.released:
            request.released.extend(self.results.take_released())
        return request


def deliver_all(
    calls: list[Call], reply: yr_pb2.CallReply, results: SharedResults | None = None
) -> None:
    if len(reply.outcomes) != len(calls):
        fail_all(
            calls, YRError(f"the instance answered {len(reply.outcomes)} of {len(calls)} calls")
        )
        return
    for call, outcome in zip(calls, reply.outcomes, strict=True):
        _settle(call, outcome, results)
        _forget_flush(call)


def _settle(call: Call, outcome: yr_pb2.Outcome, results: SharedResults | None) -> None:
    if outcome.HasField("error"):
        fail(call, _rebuild_error(outcome.error))
        return
    try:
        buffers = _result_buffers(outcome, results) if outcome.buffers else None
        value = serialization.loads(outcome.value, buffers=buffers)
    except BaseException as error:
        fail(call, YRError(f"the result of {call.method} could not be unpickled: {error}"))
        return
    _deliver(call, value)


def _forget_flush(call: Call) -> None:
    """A settled ref needs no way to send its call: dropping it breaks the ref -> call ->
    ref cycle, so a value (a large result's mapping) goes as soon as the user drops it,
    not at the next garbage collection."""
    for ref in call.refs:
        ref._flush = None


def _result_buffers(outcome: yr_pb2.Outcome, results: SharedResults | None) -> list[memoryview]:
    if results is None:
        raise YRError("it came through shared memory, which this caller did not ask for")
    return results.map(outcome.buffers, outcome.buffer_sizes)


def _deliver(call: Call, value: Any) -> None:
    if len(call.refs) == 1:
        call.refs[0].future.set_result(value)
        return
    try:
        values = list(value)
    except TypeError:
        values = None
    if values is None or len(values) != len(call.refs):
        fail(
            call,
            YRError(
                f"{call.method} was declared with return_nums={len(call.refs)} but returned "
                f"{type(value).__name__} {value!r:.80}"
            ),
        )
        return
    for ref, item in zip(call.refs, values, strict=True):
        ref.future.set_result(item)


def fail_all(calls: list[Call], error: BaseException) -> None:
    for call in calls:
        fail(call, error)


def fail(call: Call, error: BaseException) -> None:
    for ref in call.refs:
        if not ref.future.done():
            ref.future.set_exception(error)
    _forget_flush(call)


def _rebuild_error(remote: yr_pb2.RemoteError) -> BaseException:
    cause: BaseException | None = None
    why_not = ""
    if remote.exception:
        try:
            cause = serialization.loads(remote.exception)
        except Exception as error:
            why_not = f" (it could not be rebuilt here: {type(error).__name__}: {error})"
    if isinstance(cause, YRError) and not remote.traceback:
        return cause
    if cause is None:
        cause = YRError(f"{remote.type_name}: {remote.message}{why_not}")
    return invoke_error_for(cause, remote.traceback)
