"""The instance server: one user object behind gRPC, run by every local process and every pod.

``python -m yr.server`` reads its configuration from the environment (see
docs/kubernetes-contract.md and yr/bootstrap.py); the local runtime calls :func:`serve` in a
forked process. This module knows nothing of sessions: bootstrap.py wires them in.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from yr import credentials, debug, segment_pool, sharedmem, waits
from yr.dispatch import CallOrder, CallRefused, LoopCallOrder, SerialRunner
from yr.grpc_on_demand import OnDemandGrpcServer
from yr.localcall.server import LocalCallServer
from yr.protocol import (
    PROTOCOL_METADATA_KEY,
    PROTOCOL_VERSION,
    SERVER_OPTIONS,
    WRONG_INSTANCE_CODE,
    yr_pb2,
    yr_pb2_grpc,
)
from yr.protocol.chunks import joined_request
from yr.protocol.gate import TokenGate, one_token
from yr.tls import server_credentials as tls_credentials
from yr.user_object import UserObject

DEFAULT_SHUTDOWN_GRACE_S = 30.0  # openYuanrong's default graceful shutdown time

# Takes a batch's reply, or why it was refused.
Answer = Callable[["yr_pb2.CallReply | CallRefused"], None]


class InstanceServicer(yr_pb2_grpc.InstanceServicer):
    """The gRPC face of one instance: authenticates, orders, and runs calls."""

    def __init__(
        self,
        user: UserObject,
        *,
        instance_id: str,
        concurrency: int,
        incarnation: int | None = None,
    ) -> None:
        self._user = user
        self._instance_id = instance_id
        self._incarnation = incarnation  # None: not known to this server, not checked
        self._order = LoopCallOrder()  # gRPC callers, and local ones when concurrency > 1
        self._runner = SerialRunner(asyncio.get_running_loop()) if concurrency == 1 else None
        # A concurrency=1 instance's local callers, read and ordered on its method thread.
        self._order_here: CallOrder[tuple[yr_pb2.CallRequest, Answer]] = CallOrder()
        self._expiry_at: float | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="yr-method"
        )
        self.constructed = asyncio.Event()

    @property
    def init_error(self) -> yr_pb2.RemoteError | None:
        return self._user.init_error

    async def construct(self) -> None:
        if self._runner is not None:  # __init__ and methods share one thread
            await self._runner.submit(waits.declare_serial_thread, self._instance_id)
            await self._runner.submit(self._user.construct)
        else:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._user.construct)
        self.constructed.set()

    async def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        """The token was checked by the TokenGate before the request was read; the version
        is checked here, before anything in the request is unpickled."""
        version = next(
            (v for k, v in context.invocation_metadata() or () if k == PROTOCOL_METADATA_KEY), ""
        )
        refusal = self.version_refusal(version)
        if refusal is not None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, refusal)

    async def Hello(self, request, context):
        await self._authorize(context)
        return yr_pb2.HelloReply(
            protocol_version=PROTOCOL_VERSION,
            instance_id=self._instance_id,
            class_name=self._user.class_name,
            pid=os.getpid(),
        )

    def _refuse_if_meant_for_another(self, request: yr_pb2.CallRequest) -> None:
        """A reused address must not run a call meant for an instance that lived there."""
        if not request.instance_id:
            return  # a caller that does not name instances
        if request.instance_id != self._instance_id or (
            self._incarnation is not None and request.incarnation != self._incarnation
        ):
            raise CallRefused(
                WRONG_INSTANCE_CODE,
                f"this is instance {self._instance_id} incarnation {self._incarnation}, not "
                f"{request.instance_id} incarnation {request.incarnation}: call refused",
            )

    def version_refusal(self, version: str) -> str | None:
        """Why a caller speaking ``version`` is refused, or None if it speaks ours."""
        if version == str(PROTOCOL_VERSION):
            return None
        return (
            f"yr protocol mismatch: the caller speaks version {version or 'unknown'}, "
            f"instance {self._instance_id} speaks {PROTOCOL_VERSION}; "
            "use the same yr version on both sides"
        )

    async def CallStream(self, chunks, context):
        """A large call sent in pieces (through a gateway): joined, then run as ``Call``."""
        await self._authorize(context)  # before anything is read or unpickled
        return await self.Call(await joined_request(chunks), context)

    async def Call(self, request, context):
        await self._authorize(context)  # before anything in the request is unpickled
        try:
            return await self.serve_call(request)
        except CallRefused as refused:
            await context.abort(refused.code, refused.details)

    @property
    def method_thread(self) -> SerialRunner | None:
        """The thread a ``concurrency=1`` instance runs everything on (None otherwise)."""
        return self._runner

    async def serve_call(self, request: yr_pb2.CallRequest) -> yr_pb2.CallReply:
        """Run one authenticated batch brought by gRPC or, when ``concurrency`` > 1, by the
        local socket: refused if meant for another instance, admitted in the caller's seq
        order."""
        self._refuse_if_meant_for_another(request)
        if not self.constructed.is_set():
            await self.constructed.wait()
        if request.released:  # result segments the caller let go of: ours to reuse
            segment_pool.released(request.released)
        await self._order.admit(request.caller, request.seq, settled_below=request.settled_below)
        if not request.invocations:  # a seq the caller will never send: only fill the gap
            return yr_pb2.CallReply()
        if self._runner is not None:  # concurrency 1: the method thread, in order
            return await self._runner.submit(self._user.run_all, request.invocations)
        loop = asyncio.get_running_loop()
        outcomes = await asyncio.gather(  # started in order, run side by side
            *(
                loop.run_in_executor(self._executor, self._user.run, invocation)
                for invocation in request.invocations
            )
        )
        return yr_pb2.CallReply(outcomes=outcomes)

    def serve_call_here(self, request: yr_pb2.CallRequest, answer: Answer) -> None:
        """On the method thread of a ``concurrency=1`` instance, a batch its local caller's
        connection brought: the same checks and order as ``serve_call``, run right here."""
        try:
            self._refuse_if_meant_for_another(request)
        except CallRefused as refused:
            answer(refused)
            return
        if request.released:  # result segments the caller let go of: ours to reuse
            segment_pool.released(request.released)
        self._run_here(
            self._order_here.admit(
                request.caller, request.seq, (request, answer), settled_below=request.settled_below
            )
        )

    def _run_here(self, ready: list[tuple[yr_pb2.CallRequest, Answer]]) -> None:
        for request, answer in ready:  # a gap filler (no invocations) is answered empty
            try:
                answer(self._user.run_all(request.invocations))
            except Exception:
                traceback.print_exc()  # its caller is gone; the others are still answered
        deadline = self._order_here.next_deadline()
        if deadline is not None and deadline != self._expiry_at and self._runner is not None:
            self._expiry_at = deadline
            self._runner.call_at(deadline, self._expire_here)

    def _expire_here(self) -> None:
        self._expiry_at = None
        self._run_here(self._order_here.overdue())

    def shutdown(self) -> None:
        self._user.method_loop.stop()
        if self._runner is not None:
            self._runner.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)


async def serve(
    *,
    payload: bytes,
    payload_buffers: Sequence[memoryview] = (),
    instance_id: str,
    class_name: str,
    token: str,
    host: str,
    port: int,
    concurrency: int,
    on_ready: Callable[[int], None] | None = None,
    incarnation: int | None = None,
    on_init_error: Callable[[yr_pb2.RemoteError], None] | None = None,
    shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S,
    extra_handlers: Sequence[grpc.GenericRpcHandler] = (),
    system_methods: Mapping[str, Callable[..., Any]] | None = None,
    tls: tuple[bytes, bytes] | None = None,
    health_port: int | None = None,
    local_socket: str = "",
) -> None:
    """Serve one instance until SIGTERM/SIGINT; report the bound port when ready.

    On SIGTERM the user object's ``__yr_shutdown__(grace_period_seconds)`` runs, if it has
    one, for at most ``shutdown_grace_s`` (whoever sent the signal kills after that anyway).

    With ``incarnation`` known, calls naming another incarnation are refused. With
    ``on_init_error``, an ``__init__`` that raises is reported there and ends the serving (a
    failed constructor is a failed instance); without it, every call answers that error.
    ``tls`` (certificate, key; PEM) makes the port TLS-only; ``health_port`` adds a plaintext
    port that serves the health service and nothing else (for probes that cannot speak TLS).
    ``local_socket`` is a Unix socket path where the same calls are served to callers on this
    machine (yr/localcall); ``on_ready`` is told it once it listens. With it (and no TLS), the
    gRPC server is built only when the port is first dialled (yr/grpc_on_demand.py).
    """
    credentials.adopt_session_token(token)  # before the user's code can start a process
    health_servicer = health.aio.HealthServicer()
    gate = TokenGate(
        one_token(token),
        refusal_message=f"instance {instance_id} refused the call: missing or wrong session token",
        open_methods={_HEALTH_CHECK: _probe_handler(health_servicer)},
    )
    shm_prefix = sharedmem.session_prefix(token) if sharedmem.available() else ""
    user = UserObject(
        payload,
        class_name=class_name,
        system_methods=system_methods,
        payload_buffers=payload_buffers,
        shm_prefix=shm_prefix,
    )
    servicer = InstanceServicer(
        user,
        instance_id=instance_id,
        concurrency=concurrency,
        incarnation=incarnation,
    )
    del payload, payload_buffers  # the user object drops them once constructed

    def build_grpc_server() -> grpc.aio.Server:
        server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=[gate])
        yr_pb2_grpc.add_InstanceServicer_to_server(servicer, server)
        if extra_handlers:  # services the composition root adds (collective links in a pod)
            server.add_generic_rpc_handlers(tuple(extra_handlers))
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        debug.add_to_server(server, instance_id=instance_id)  # behind the token gate, like calls
        return server

    await health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    address = _join_host_port(host, port)
    server: grpc.aio.Server | OnDemandGrpcServer
    if local_socket and tls is None:  # calls come over the socket: gRPC only when dialled
        server = OnDemandGrpcServer(build_grpc_server)
        bound = await server.listen(host, port)
    else:
        server = build_grpc_server()
        if tls is not None:
            bound = server.add_secure_port(address, tls_credentials(*tls))
        else:
            bound = server.add_insecure_port(address)
        if bound == 0:
            raise OSError(f"instance server could not bind {host}:{port}")
        await server.start()
    health_server = None
    if health_port is not None:
        health_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
        if health_server.add_insecure_port(_join_host_port(host, health_port)) == 0:
            raise OSError(f"instance server could not bind its health port {host}:{health_port}")
        await health_server.start()
    local_server = None
    if local_socket:
        local_server = LocalCallServer(
            local_socket,
            token=token,
            serve_call=servicer.serve_call,
            method_thread=servicer.method_thread,
            serve_call_here=servicer.serve_call_here,
            version_refusal=servicer.version_refusal,
            refusal_message=(
                f"instance {instance_id} refused the connection: missing or wrong session token"
            ),
        )
        await local_server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await servicer.construct()
    if on_init_error is not None and servicer.init_error is not None:
        on_init_error(servicer.init_error)
        if local_server is not None:
            await local_server.stop()
        await server.stop(grace=None)
        servicer.shutdown()
        return
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    if on_ready is not None:
        on_ready(bound)
    await stopping.wait()
    await health_servicer.enter_graceful_shutdown()
    if local_server is not None:
        await local_server.stop()
    await server.stop(grace=1.0)
    await _run_shutdown_hook(user, shutdown_grace_s)
    if health_server is not None:
        await health_server.stop(grace=None)
    servicer.shutdown()
    segment_pool.close_pool(shm_prefix)  # callers keep what they still map


async def _run_shutdown_hook(user: UserObject, grace_s: float) -> None:
    """openYuanrong's graceful shutdown: ``__yr_shutdown__`` within the grace period."""
    hook = getattr(user.instance, "__yr_shutdown__", None)
    if hook is None or not callable(hook):
        return
    thread = threading.Thread(target=_call_hook, args=(hook, grace_s), name="yr-shutdown")
    thread.daemon = True  # a hook that overruns its grace period does not hold the exit
    thread.start()
    await asyncio.get_running_loop().run_in_executor(None, thread.join, grace_s)


def _call_hook(hook: Callable[[float], Any], grace_s: float) -> None:
    try:
        hook(grace_s)
    except BaseException:
        traceback.print_exc()  # the instance's output reaches the driver


_HEALTH_CHECK = "/grpc.health.v1.Health/Check"


def _probe_handler(health_servicer: health.aio.HealthServicer) -> grpc.RpcMethodHandler:
    """The health check for callers without the token (readiness probes): it answers the
    overall status and never reads the request, so its size cannot matter."""

    async def check(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        return await health_servicer.Check(health_pb2.HealthCheckRequest(), context)

    return grpc.stream_unary_rpc_method_handler(
        check, response_serializer=health_pb2.HealthCheckResponse.SerializeToString
    )


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


if __name__ == "__main__":  # ``python -m yr.server``: a pod's entry point, wired elsewhere
    from yr.bootstrap import main

    main()
