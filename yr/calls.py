"""One queued method call, and how a reply (or a failure) settles its refs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from yr import serialization
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

    def request(self, caller: str, *, settled_below: int) -> yr_pb2.CallRequest:
        return yr_pb2.CallRequest(
            caller=caller,
            seq=self.seq,
            settled_below=settled_below,
            instance_id=self.instance_id,
            incarnation=self.incarnation,
            invocations=[
                yr_pb2.Invocation(method=c.method, arguments=c.arguments, buffers=c.buffers)
                for c in self.calls
            ],
        )


def deliver_all(calls: list[Call], reply: yr_pb2.CallReply) -> None:
    if len(reply.outcomes) != len(calls):
        fail_all(
            calls, YRError(f"the instance answered {len(reply.outcomes)} of {len(calls)} calls")
        )
        return
    for call, outcome in zip(calls, reply.outcomes, strict=True):
        if outcome.HasField("error"):
            fail(call, _rebuild_error(outcome.error))
            continue
        try:
            value = serialization.loads(outcome.value)
        except BaseException as error:
            fail(call, YRError(f"the result of {call.method} could not be unpickled: {error}"))
            continue
        _deliver(call, value)


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
