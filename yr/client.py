"""The call path: per-instance pipelines that keep submission order and batch calls.

``invoke`` pickles the arguments and queues the call on its instance's pipeline. When nothing
is on the wire to that instance the call is sent at once; while batches are out, a flusher
thread (or ``yr.get``) sends everything queued meanwhile as one batch RPC, so thousands of
calls in flight cost tens of RPCs, not thousands. Batches carry a per-caller sequence number
that the server uses to run them in order. A transport failure is turned into the runtime's
account of how the instance died; a call that provably never reached a dead incarnation goes
to the next one.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import threading
import time
from typing import Any

import grpc

from yr import segment_pool, sharedmem, waits
from yr.arguments import pickle_arguments, pickle_when_settled
from yr.call_failures import (
    death_report_timeout_s,
    finalized_error,
    may_be_a_death,
    never_delivered,
    plain_failure,
)
from yr.calls import Batch, Call, SharedResults, deliver_all, fail, fail_all
from yr.channels import Channels
from yr.empty_batches import fill_gap, give_back_released
from yr.errors import YRError, YRInstanceDiedError
from yr.localcall.channel import LocalChannel
from yr.pipeline import Pipeline
from yr.protocol import ROUTE_METADATA_KEY, yr_pb2
from yr.protocol.chunks import STREAM_ABOVE_BYTES, request_chunks
from yr.refs import ObjectRef
from yr.runtime.base import ClassInfo, Endpoint, Runtime

MAX_BATCH_CALLS = 512
MAX_BATCH_BYTES = 8 << 20
# How often result segments let go of are given back to instances no request is going to.
RELEASE_SWEEP_S = 1.0


class CallClient:
    """Sends method calls from this process to instances and turns replies into refs."""

    def __init__(self, runtime: Runtime, *, caller_id: str) -> None:
        self._runtime = runtime
        self._caller_id = caller_id
        self._death_report_timeout_s = death_report_timeout_s()
        waits.report_waits_to(runtime)
        self._shm_prefix = (
            shared_memory_prefix(runtime.session_token)
            if runtime.shares_memory and sharedmem.available()
            else ""
        )
        self._pipelines: dict[str, Pipeline] = {}
        self._channels = Channels(runtime)
        self._lock = threading.Lock()
        self._order = itertools.count()
        self._helpers = concurrent.futures.ThreadPoolExecutor(
            max_workers=16, thread_name_prefix="yr-client"
        )
        # Each batch waits for its reply on a sender thread; idle threads are reused, and there
        # are as many as batches in flight, so a long call never holds up another.
        self._senders = concurrent.futures.ThreadPoolExecutor(
            max_workers=4096, thread_name_prefix="yr-send"
        )
        self._dirty: dict[int, Pipeline] = {}
        self._lending: list[Pipeline] = []  # whose instances lent us result segments
        self._dirty_changed = threading.Condition()
        self._closed = False
        self._flusher = threading.Thread(target=self._flush_forever, name="yr-flush", daemon=True)
        self._flusher.start()

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
        if self._closed:
            raise YRError(f"cannot call {method}: yr.finalize() ended the session")
        call = Call(method, args, kwargs, None, [], [], next(self._order))
        target = f"{class_info.short_name}.{method}"
        pending = pickle_arguments(call, target=target, shm_prefix=self._shm_prefix)
        pipeline = self._pipeline(instance_id, class_info)
        flush = functools.partial(self._flush_call, pipeline, call)
        origin = (instance_id, target)
        call.refs = [ObjectRef(flush=flush, origin=origin) for _ in range(max(return_nums, 1))]
        with pipeline.lock:
            pipeline.queue.append(call)
            idle = pipeline.in_flight == 0
        if pending:
            pickle_when_settled(
                call,
                pending,
                target=target,
                shm_prefix=self._shm_prefix,
                then=functools.partial(self._drain, pipeline),
            )
        elif idle:  # nothing on the wire: send now, so an invoked call is a call in flight
            self._drain(pipeline, claim=True)
        else:  # batches are out: let the flusher gather what follows into the next one
            with self._dirty_changed:
                self._dirty[id(pipeline)] = pipeline
                self._dirty_changed.notify()
        if return_nums == 0:
            return []
        return call.refs

    def cancel(self, ref: ObjectRef, error: BaseException) -> bool:
        """Withdraw the call behind ``ref`` if it has not left this process; True if it had not."""
        pipeline = self._pipelines.get(ref._origin[0]) if ref._origin else None
        if pipeline is None:
            return False
        with pipeline.lock:
            call = next((c for c in pipeline.queue if any(r is ref for r in c.refs)), None)
            if call is None:
                return False
            pipeline.queue.remove(call)
        _release([call])
        fail(call, error)
        return True

    def forget(self, instance_id: str, error: BaseException) -> None:
        """Fail every queued call to a terminated instance."""
        pipeline = self._pipelines.get(instance_id)
        if pipeline is not None:
            with pipeline.lock:
                pipeline.failure = error
            self._drain(pipeline)

    def _pipeline(self, instance_id: str, class_info: ClassInfo) -> Pipeline:
        pipeline = self._pipelines.get(instance_id)
        if pipeline is None:
            with self._lock:
                pipeline = self._pipelines.get(instance_id)
                if pipeline is None:
                    pipeline = Pipeline(instance_id, class_info)
                    if self._shm_prefix:
                        pipeline.results = SharedResults(
                            self._shm_prefix,
                            on_first_mapped=functools.partial(self._lent, pipeline),
                        )
                    self._pipelines[instance_id] = pipeline
        return pipeline

    # -- sending ----------------------------------------------------------------------------

    def _flush_forever(self) -> None:
        next_sweep = 0.0
        while True:
            with self._dirty_changed:
                while not self._dirty and not self._closed:
                    sweep_in = RELEASE_SWEEP_S if self._lending else None
                    if not self._dirty_changed.wait(sweep_in):
                        break
                if self._closed:
                    return
                pipelines, self._dirty = list(self._dirty.values()), {}
                lending = list(self._lending)
            for pipeline in pipelines:
                self._drain(pipeline)
            if lending and time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + RELEASE_SWEEP_S
                for pipeline in lending:
                    give_back_released(pipeline, caller_id=self._caller_id)

    def _lent(self, pipeline: Pipeline) -> None:
        with self._dirty_changed:
            self._lending.append(pipeline)
            self._dirty_changed.notify()  # the flusher starts sweeping

    def _flush_call(
        self,
        pipeline: Pipeline,
        call: Call,
        ref: ObjectRef,
        *,
        wait: bool = False,
        deadline: float | None = None,
    ) -> None:
        """Called before a wait for ``ref``: send what is queued now. With ``wait`` (this
        thread waits for this call alone), a reply due on a local connection that no other
        thread is reading is read by this thread, until ``deadline``: no thread hop between
        reply and caller. Without, the connection's collector reads it: a claim this
        thread made when it sent the call is ended now rather than when it runs out."""
        if pipeline.queue:  # else nothing waits to be sent (invoke sent it, or a flush did)
            self._drain(pipeline)
        batch = call.batch
        connection = batch.connection if batch is not None else None
        if connection is None:
            return
        if wait:
            connection.read_until(ref.future.done, deadline)
        else:
            connection.end_claim()

    def _drain(self, pipeline: Pipeline, *, claim: bool = False) -> None:
        """Send what is queued to ``pipeline``'s instance, as batches. ``claim``: the calling
        thread will likely wait for these calls next (``LocalChannel.start``)."""
        batches: list[Batch] = []
        failed: list[tuple[Call, BaseException]] = []
        resolve_from: int | None = None
        with pipeline.lock:
            ready: list[Call] = []
            size = 0
            while pipeline.queue:
                if pipeline.failure is not None:
                    failed.extend((call, pipeline.failure) for call in pipeline.queue)
                    pipeline.queue.clear()
                    break
                if pipeline.endpoint is None:
                    if not pipeline.resolving:
                        pipeline.resolving = True
                        resolve_from = pipeline.min_incarnation
                    break
                call = pipeline.queue[0]
                if call.failure is not None:
                    pipeline.queue.popleft()
                    failed.append((call, call.failure))
                    continue
                if call.arguments is None:
                    break  # it waits for refs in its arguments; their callback drains again
                pipeline.queue.popleft()
                ready.append(call)
                size += len(call.arguments or b"")
                if len(ready) >= MAX_BATCH_CALLS or size >= MAX_BATCH_BYTES:
                    batches.append(pipeline.next_batch_locked(ready))
                    ready, size = [], 0
            if ready:
                batches.append(pipeline.next_batch_locked(ready))
        for call, error in failed:
            fail(call, error)
        for batch in batches:
            self._send(pipeline, batch, claim=claim)
        if resolve_from is not None:
            self._resolve(pipeline, resolve_from)

    def _resolve(self, pipeline: Pipeline, min_incarnation: int) -> None:
        future = self._runtime.endpoint(pipeline.instance_id, min_incarnation=min_incarnation)

        def resolved(done: concurrent.futures.Future) -> None:
            error = done.exception()
            with pipeline.lock:
                pipeline.resolving = False
                if error is not None:
                    pipeline.failure = error
                else:
                    endpoint: Endpoint = done.result()
                    pipeline.new_incarnation_locked(endpoint)
                    pipeline.stub, pipeline.metadata = self._channels.reach(endpoint)
            self._drain(pipeline)

        future.add_done_callback(resolved)

    def _send(self, pipeline: Pipeline, batch: Batch, *, claim: bool = False) -> None:
        if isinstance(batch.stub, LocalChannel):
            self._send_local(pipeline, batch, claim=claim)
            return
        try:
            self._senders.submit(self._send_and_wait, pipeline, batch)
        except RuntimeError:  # finalize() shut the senders down meanwhile
            self._finish(pipeline, batch)
            fail_all(batch.calls, finalized_error(batch.calls[0].method))

    def _send_and_wait(self, pipeline: Pipeline, batch: Batch) -> None:
        """A blocking RPC on a reused sender thread: cheaper than grpc's per-call futures."""
        try:
            request = batch.request(self._caller_id)
            if request.ByteSize() > STREAM_ABOVE_BYTES and _through_gateway(batch.metadata):
                # A gateway holds a unary message whole several times; a stream, in pieces.
                reply = batch.stub.CallStream(request_chunks(request), metadata=batch.metadata)
            else:
                reply = batch.stub.Call(request, metadata=batch.metadata)
        except grpc.RpcError as error:
            self._on_failure(pipeline, batch, error)
            return
        except Exception as error:  # never left this process: the seq must not stay a gap
            self._finish(pipeline, batch)
            fill_gap(pipeline, batch, caller_id=self._caller_id)
            fail_all(batch.calls, YRError(f"could not send {batch.calls[0].method}: {error}"))
            return
        self._finish(pipeline, batch, reply)
        deliver_all(batch.calls, reply, batch.results)

    def _send_local(self, pipeline: Pipeline, batch: Batch, *, claim: bool = False) -> None:
        """Write the batch from this thread; its reply settles it in whichever thread reads
        it (a yr.get waiting for it, or the connection's collector): no sender thread."""
        try:
            request = batch.request(self._caller_id)
            batch.connection = batch.stub.start(
                request, functools.partial(self._local_reply, pipeline, batch), claim=claim
            )
        except grpc.RpcError as error:
            self._on_failure(pipeline, batch, error)
        except Exception as error:  # never left this process: the seq must not stay a gap
            self._finish(pipeline, batch)
            fill_gap(pipeline, batch, caller_id=self._caller_id)
            fail_all(batch.calls, YRError(f"could not send {batch.calls[0].method}: {error}"))

    def _local_reply(
        self, pipeline: Pipeline, batch: Batch, body: bytes, error: grpc.RpcError | None
    ) -> None:
        if error is not None:
            self._on_failure(pipeline, batch, error)
            return
        try:
            reply = yr_pb2.CallReply.FromString(body)
        except Exception as bad:
            self._finish(pipeline, batch)
            fail_all(
                batch.calls, YRError(f"the reply to {batch.calls[0].method} was garbled: {bad}")
            )
            return
        self._finish(pipeline, batch, reply)
        deliver_all(batch.calls, reply, batch.results)

    def _finish(
        self, pipeline: Pipeline, batch: Batch, reply: yr_pb2.CallReply | None = None
    ) -> None:
        with pipeline.lock:
            pipeline.settle_locked(batch)
        _release(batch.calls, reply)

    # -- replies ----------------------------------------------------------------------------

    def _on_failure(self, pipeline: Pipeline, batch: Batch, error: grpc.RpcError) -> None:
        if self._closed:
            self._finish(pipeline, batch)
            fail_all(batch.calls, finalized_error(batch.calls[0].method))
        elif may_be_a_death(error):
            self._helpers.submit(self._explain_failure, pipeline, batch, error)
        else:
            self._finish(pipeline, batch)
            fail_all(batch.calls, plain_failure(error, batch.calls[0].method))

    def _explain_failure(self, pipeline: Pipeline, batch: Batch, error: grpc.RpcError) -> None:
        try:
            death = self._runtime.await_death(
                pipeline.instance_id, batch.incarnation, timeout=self._death_report_timeout_s
            )
        except BaseException as lookup_error:
            self._finish(pipeline, batch)
            fail_all(
                batch.calls,
                YRError(
                    f"call {batch.calls[0].method} failed ({error.details()}); "
                    f"the runtime could not say why: {lookup_error}"
                ),
            )
            return
        if death is None:
            self._finish(pipeline, batch)
            if never_delivered(error):
                fill_gap(pipeline, batch, caller_id=self._caller_id)
            fail_all(
                batch.calls,
                YRError(
                    f"call {batch.calls[0].method} to instance {pipeline.instance_id} failed: "
                    f"{error.code().name}: {error.details()}"
                ),
            )
            return
        died = YRInstanceDiedError(pipeline.instance_id, pipeline.class_info.class_name, death)
        resend = death.will_restart and never_delivered(error)
        pipeline.instance_died(batch, died, will_restart=death.will_restart, resend=resend)
        if not resend:
            _release(batch.calls)
            fail_all(batch.calls, died)
        self._drain(pipeline)

    def close(self) -> None:
        """Settle every call not answered yet with a clear error, and stop sending."""
        with self._dirty_changed:
            self._closed = True
            self._dirty_changed.notify_all()
        waits.report_waits_to(None)
        with self._lock:
            pipelines = list(self._pipelines.values())
        for pipeline in pipelines:
            with pipeline.lock:
                pipeline.failure = YRError(
                    "yr.finalize() ended the session before this call to "
                    f"{pipeline.class_info.short_name} was sent"
                )
            self._drain(pipeline)
        self._channels.close()
        self._helpers.shutdown(wait=False, cancel_futures=True)
        self._senders.shutdown(wait=False, cancel_futures=True)
        if self._shm_prefix:
            segment_pool.close_pool(self._shm_prefix)  # instances keep what they still map


def _through_gateway(metadata: tuple[tuple[str, str], ...]) -> bool:
    return any(key == ROUTE_METADATA_KEY for key, _ in metadata)


def _release(calls: list[Call], reply: yr_pb2.CallReply | None = None) -> None:
    """A call is answered (``reply``) or never will be: drop its arguments (its refs may
    outlive it); its reused segments go back to the pool unless the instance kept them."""
    answered = reply is not None and len(reply.outcomes) == len(calls)
    for index, call in enumerate(calls):
        if call.buffers:
            if answered:
                segment_pool.returned(call.buffers, kept=reply.outcomes[index].kept)
            else:
                segment_pool.forget(call.buffers)
        call.arguments, call.buffers, call.batch = b"", [], None
        call.buffer_sizes = []


def shared_memory_prefix(session_token: str) -> str:
    """The name prefix of one session's shared-memory segments (removed at shutdown)."""
    return sharedmem.session_prefix(session_token)
