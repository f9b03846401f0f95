"""The call path: per-instance pipelines that keep submission order, over cached gRPC channels.

A call is queued on its target instance's pipeline; the pipeline waits for the instance's
endpoint and for the call's ObjectRef arguments, then sends calls in order with a per-caller
sequence number the server uses to run them in that order. A transport failure is turned into
the runtime's account of how the instance died.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

import grpc

from yr import serialization
from yr.errors import (
    YRError,
    YRInstanceDiedError,
    YRProtocolError,
    invoke_error_for,
)
from yr.protocol import (
    CHANNEL_OPTIONS,
    PROTOCOL_METADATA_KEY,
    PROTOCOL_VERSION,
    ROUTE_METADATA_KEY,
    TOKEN_METADATA_KEY,
    yr_pb2,
    yr_pb2_grpc,
)
from yr.refs import ObjectRef
from yr.runtime.base import ClassInfo, Endpoint, Runtime

# Transport failures after which we ask the runtime whether the instance died.
_DEATH_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)
DEATH_REPORT_TIMEOUT_S = 10.0


@dataclass
class _Call:
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    arguments: bytes | None  # pickled once every ObjectRef argument is ready
    refs: list[ObjectRef]
    order: int = 0  # submission order, to put a re-sent call back in its place


@dataclass
class _Pipeline:
    instance_id: str
    class_info: ClassInfo
    lock: threading.Lock = field(default_factory=threading.Lock)
    queue: collections.deque[_Call] = field(default_factory=collections.deque)
    endpoint: Endpoint | None = None
    stub: Any = None
    metadata: tuple[tuple[str, str], ...] = ()
    resolving: bool = False
    min_incarnation: int = 0
    next_seq: int = 0
    failure: BaseException | None = None


class CallClient:
    """Sends method calls from this process to instances and turns replies into refs."""

    def __init__(self, runtime: Runtime, *, caller_id: str) -> None:
        self._runtime = runtime
        self._caller_id = caller_id
        self._metadata = (
            (TOKEN_METADATA_KEY, runtime.session_token),
            (PROTOCOL_METADATA_KEY, str(PROTOCOL_VERSION)),
        )
        self._pipelines: dict[str, _Pipeline] = {}
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()
        self._helpers = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="yr-client"
        )
        self._closed = False
        self._order = itertools.count()

    # -- submitting -------------------------------------------------------------------------

    def submit(
        self,
        instance_id: str,
        class_info: ClassInfo,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        return_nums: int = 1,
    ) -> list[ObjectRef]:
        """Queue one call; the refs resolve to its result(s)."""
        target = f"{class_info.short_name}.{method}"
        waiting = any(
            isinstance(value, ObjectRef) and not value.done() for value in (*args, *kwargs.values())
        )
        arguments = (
            None if waiting else serialization.dumps_call_arguments(args, kwargs, target=target)
        )
        refs = [ObjectRef() for _ in range(max(return_nums, 1))]
        call = _Call(method, args, kwargs, arguments, refs, next(self._order))
        if return_nums == 0:
            refs = []
        pipeline = self._pipeline(instance_id, class_info)
        with pipeline.lock:
            pipeline.queue.append(call)
        self._drain(pipeline)
        return refs if return_nums != 1 else refs[:1]

    def forget(self, instance_id: str, error: BaseException) -> None:
        """Fail every queued call to a terminated instance."""
        pipeline = self._pipelines.get(instance_id)
        if pipeline is not None:
            with pipeline.lock:
                pipeline.failure = error
            self._drain(pipeline)

    def _pipeline(self, instance_id: str, class_info: ClassInfo) -> _Pipeline:
        pipeline = self._pipelines.get(instance_id)
        if pipeline is None:
            with self._lock:
                pipeline = self._pipelines.setdefault(
                    instance_id, _Pipeline(instance_id, class_info)
                )
        return pipeline

    # -- the pipeline -----------------------------------------------------------------------

    def _drain(self, pipeline: _Pipeline) -> None:
        to_send: list[tuple[_Call, int, Any, int]] = []
        to_fail: list[tuple[_Call, BaseException]] = []
        wait_on: concurrent.futures.Future | None = None
        resolve_from: int | None = None
        with pipeline.lock:
            while pipeline.queue:
                if pipeline.failure is not None:
                    to_fail.extend((call, pipeline.failure) for call in pipeline.queue)
                    pipeline.queue.clear()
                    break
                if pipeline.endpoint is None:
                    if not pipeline.resolving:
                        pipeline.resolving = True
                        resolve_from = pipeline.min_incarnation
                    break
                call = pipeline.queue[0]
                if call.arguments is None:
                    blocker = next(
                        (
                            v
                            for v in (*call.args, *call.kwargs.values())
                            if isinstance(v, ObjectRef) and not v.done()
                        ),
                        None,
                    )
                    if blocker is not None:
                        wait_on = blocker.future
                        break
                    try:
                        call.arguments = serialization.dumps_call_arguments(
                            call.args,
                            call.kwargs,
                            target=f"{pipeline.class_info.short_name}.{call.method}",
                        )
                    except BaseException as error:
                        pipeline.queue.popleft()
                        to_fail.append((call, error))
                        continue
                pipeline.queue.popleft()
                to_send.append(
                    (call, pipeline.next_seq, pipeline.stub, pipeline.endpoint.incarnation)
                )
                pipeline.next_seq += 1
        for call, error in to_fail:
            _fail(call, error)
        for call, seq, stub, incarnation in to_send:
            self._send(pipeline, call, seq, stub, incarnation)
        if wait_on is not None:
            wait_on.add_done_callback(lambda _: self._drain(pipeline))
        if resolve_from is not None:
            self._resolve(pipeline, resolve_from)

    def _resolve(self, pipeline: _Pipeline, min_incarnation: int) -> None:
        future = self._runtime.endpoint(pipeline.instance_id, min_incarnation=min_incarnation)

        def resolved(done: concurrent.futures.Future) -> None:
            error = done.exception()
            with pipeline.lock:
                pipeline.resolving = False
                if error is not None:
                    pipeline.failure = error
                else:
                    endpoint: Endpoint = done.result()
                    if pipeline.endpoint is None or (
                        pipeline.endpoint.incarnation != endpoint.incarnation
                    ):
                        pipeline.next_seq = 0
                    pipeline.endpoint = endpoint
                    # "host:port#instance" is an instance behind a gateway that routes by name.
                    address, _, route = endpoint.address.partition("#")
                    pipeline.stub = yr_pb2_grpc.InstanceStub(self._channel(address))
                    pipeline.metadata = (
                        (*self._metadata, (ROUTE_METADATA_KEY, route)) if route else self._metadata
                    )
            self._drain(pipeline)

        future.add_done_callback(resolved)

    def _channel(self, address: str) -> grpc.Channel:
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
                self._channels[address] = channel
            return channel

    def _send(self, pipeline: _Pipeline, call: _Call, seq: int, stub: Any, incarnation: int):
        request = yr_pb2.CallRequest(
            caller=self._caller_id, seq=seq, method=call.method, arguments=call.arguments
        )
        call.args, call.kwargs = (), {}  # the pickled form is all we need now
        try:
            reply_future = stub.Call.future(request, metadata=pipeline.metadata)
        except Exception as error:
            _fail(call, YRError(f"could not send {call.method}: {error}"))
            return
        reply_future.add_done_callback(
            lambda done: self._on_reply(pipeline, call, incarnation, done)
        )

    # -- replies ----------------------------------------------------------------------------

    def _on_reply(
        self, pipeline: _Pipeline, call: _Call, incarnation: int, done: grpc.Future
    ) -> None:
        try:
            reply = done.result()
        except grpc.RpcError as error:
            code = error.code()
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.FAILED_PRECONDITION):
                _fail(call, YRProtocolError(error.details()))
            elif code in _DEATH_CODES and not self._closed:
                self._helpers.submit(self._explain_failure, pipeline, call, incarnation, error)
            else:
                _fail(call, YRError(f"call {call.method} failed: {code.name}: {error.details()}"))
            return
        except Exception as error:
            _fail(call, YRError(f"call {call.method} failed: {error}"))
            return
        if reply.HasField("error"):
            _fail(call, _rebuild_error(reply.error))
            return
        try:
            value = serialization.loads(reply.value)
        except BaseException as error:
            _fail(call, YRError(f"the result of {call.method} could not be unpickled: {error}"))
            return
        _deliver(call, value)

    def _explain_failure(
        self, pipeline: _Pipeline, call: _Call, incarnation: int, error: grpc.RpcError
    ) -> None:
        try:
            death = self._runtime.await_death(
                pipeline.instance_id, incarnation, timeout=DEATH_REPORT_TIMEOUT_S
            )
        except BaseException as lookup_error:
            _fail(
                call,
                YRError(
                    f"call {call.method} failed ({error.details()}); "
                    f"the runtime could not say why: {lookup_error}"
                ),
            )
            return
        if death is None:
            _fail(
                call,
                YRError(
                    f"call {call.method} to instance {pipeline.instance_id} failed: "
                    f"{error.code().name}: {error.details()}"
                ),
            )
            return
        died = YRInstanceDiedError(pipeline.instance_id, pipeline.class_info.class_name, death)
        resend = death.will_restart and _never_delivered(error)
        with pipeline.lock:
            if pipeline.endpoint is not None and pipeline.endpoint.incarnation == incarnation:
                pipeline.endpoint = None
                pipeline.stub = None
            pipeline.min_incarnation = max(pipeline.min_incarnation, incarnation + 1)
            if not death.will_restart:
                pipeline.failure = died
            if resend:  # it never reached the dead incarnation: the next one serves it
                position = sum(1 for queued in pipeline.queue if queued.order < call.order)
                pipeline.queue.insert(position, call)
        if not resend:
            _fail(call, died)
        self._drain(pipeline)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()
        self._helpers.shutdown(wait=False, cancel_futures=True)


def _never_delivered(error: grpc.RpcError) -> bool:
    """True when the transport failed before the call reached the instance (nothing ran)."""
    details = (error.details() or "").lower()
    return error.code() == grpc.StatusCode.UNAVAILABLE and (
        "connection refused" in details or "failed to connect" in details
    )


def _deliver(call: _Call, value: Any) -> None:
    if len(call.refs) == 1:
        call.refs[0].future.set_result(value)
        return
    try:
        values = list(value)
    except TypeError:
        values = None
    if values is None or len(values) != len(call.refs):
        _fail(
            call,
            YRError(
                f"{call.method} was declared with return_nums={len(call.refs)} but returned "
                f"{type(value).__name__} {value!r:.80}"
            ),
        )
        return
    for ref, item in zip(call.refs, values, strict=True):
        ref.future.set_result(item)


def _fail(call: _Call, error: BaseException) -> None:
    for ref in call.refs:
        if not ref.future.done():
            ref.future.set_exception(error)


def _rebuild_error(remote: yr_pb2.RemoteError) -> BaseException:
    cause: BaseException | None = None
    if remote.exception:
        try:
            cause = serialization.loads(remote.exception)
        except Exception:
            cause = None
    if isinstance(cause, YRError) and not remote.traceback:
        return cause
    if cause is None:
        cause = YRError(f"{remote.type_name}: {remote.message}")
    return invoke_error_for(cause, remote.traceback)
