"""The instance server: one user object behind gRPC, run by every local process and every pod.

``python -m yr.server`` reads its configuration from the environment (see
docs/kubernetes-contract.md); the local runtime calls :func:`serve` in a forked process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import inspect
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from yr import serialization, sharedmem
from yr.dispatch import CallOrder, SerialRunner
from yr.protocol import (
    PROTOCOL_METADATA_KEY,
    PROTOCOL_VERSION,
    SERVER_OPTIONS,
    TOKEN_METADATA_KEY,
    yr_pb2,
    yr_pb2_grpc,
)


class UserObject:
    """Builds the user's object from the payload and runs its methods, in worker threads."""

    def __init__(self, payload: bytes, *, class_name: str) -> None:
        self.class_name = class_name
        self._payload = payload
        self.instance: Any = None
        self.init_error: yr_pb2.RemoteError | None = None

    def construct(self) -> None:
        try:
            cls, args, kwargs = serialization.loads(self._payload)
            self.instance = cls(*args, **kwargs)
        except BaseException as error:
            self.init_error = remote_error(error, context=f"__init__ of {self.class_name}")
        finally:
            self._payload = b""

    def run(self, invocation: yr_pb2.Invocation) -> yr_pb2.Outcome:
        if self.init_error is not None:
            return yr_pb2.Outcome(error=self.init_error)
        method = invocation.method
        try:
            if method == "__yr_collective__":  # group forming (yr/collective), not a user method
                from yr.collective import member_call as target
            else:
                target = getattr(self.instance, method)
            buffers = sharedmem.open_buffers(list(invocation.buffers))
            args, kwargs = serialization.loads(invocation.arguments, buffers=buffers)
            args = resolve_refs(args)
            kwargs = dict(zip(kwargs, resolve_refs(kwargs.values()), strict=True))
            result = target(*args, **kwargs)
            if inspect.isawaitable(result):
                result = asyncio.run(_await(result))
        except BaseException as error:
            return yr_pb2.Outcome(error=remote_error(error))
        try:
            return yr_pb2.Outcome(
                value=serialization.dumps_named(
                    result, what=f"the return value of {self.class_name}.{method}"
                )
            )
        except BaseException as error:
            return yr_pb2.Outcome(error=remote_error(error))

    def run_all(self, invocations: Any) -> yr_pb2.CallReply:
        """Run a batch in order (one instance, one call at a time)."""
        return yr_pb2.CallReply(outcomes=[self.run(invocation) for invocation in invocations])


async def _await(awaitable: Any) -> Any:
    return await awaitable


def resolve_refs(values: Any) -> list[Any]:
    """Replace ``ObjectRef`` arguments by their values (refs arrive already resolved)."""
    from yr.refs import ObjectRef

    return [value.result() if isinstance(value, ObjectRef) else value for value in values]


def remote_error(error: BaseException, *, context: str = "") -> yr_pb2.RemoteError:
    formatted = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    if context:
        formatted = f"(raised in {context})\n{formatted}"
    try:
        blob = serialization.dumps(error)
        serialization.loads(blob)
    except Exception:
        blob = b""
    return yr_pb2.RemoteError(
        exception=blob,
        type_name=f"{type(error).__module__}.{type(error).__qualname__}",
        message=str(error),
        traceback=formatted,
    )


class InstanceServicer(yr_pb2_grpc.InstanceServicer):
    """The gRPC face of one instance: authenticates, orders, and runs calls."""

    def __init__(
        self,
        user: UserObject,
        *,
        instance_id: str,
        token: str,
        concurrency: int,
    ) -> None:
        self._user = user
        self._instance_id = instance_id
        self._token = token.encode()
        self._order = CallOrder()
        self._runner = SerialRunner(asyncio.get_running_loop()) if concurrency == 1 else None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="yr-method"
        )
        self.constructed = asyncio.Event()

    async def construct(self) -> None:
        if self._runner is not None:  # __init__ and methods share one thread
            await self._runner.submit(self._user.construct)
        else:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._user.construct)
        self.constructed.set()

    async def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        token = b""
        version = ""
        for key, value in context.invocation_metadata() or ():
            if key == TOKEN_METADATA_KEY:
                token = value.encode() if isinstance(value, str) else value
            elif key == PROTOCOL_METADATA_KEY:
                version = value
        if not hmac.compare_digest(token, self._token):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"instance {self._instance_id} refused the call: missing or wrong session token",
            )
        if version != str(PROTOCOL_VERSION):
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"yr protocol mismatch: the caller speaks version {version or 'unknown'}, "
                f"instance {self._instance_id} speaks {PROTOCOL_VERSION}; "
                "use the same yr version on both sides",
            )

    async def Hello(self, request, context):
        await self._authorize(context)
        return yr_pb2.HelloReply(
            protocol_version=PROTOCOL_VERSION,
            instance_id=self._instance_id,
            class_name=self._user.class_name,
            pid=os.getpid(),
        )

    async def Call(self, request, context):
        await self._authorize(context)  # before anything in the request is unpickled
        if not self.constructed.is_set():
            await self.constructed.wait()
        caller, seq = request.caller, request.seq
        await self._order.admit(caller, seq)
        loop = asyncio.get_running_loop()
        try:
            if self._runner is not None:  # concurrency 1: the method thread, in order
                running = self._runner.submit(self._user.run_all, request.invocations)
            else:  # started in order, run side by side
                running = asyncio.gather(
                    *(
                        loop.run_in_executor(self._executor, self._user.run, invocation)
                        for invocation in request.invocations
                    )
                )
        finally:
            self._order.done(caller, seq)  # never leave a gap behind, even if cancelled
        result = await running
        return result if isinstance(result, yr_pb2.CallReply) else yr_pb2.CallReply(outcomes=result)

    def shutdown(self) -> None:
        if self._runner is not None:
            self._runner.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)


async def serve(
    *,
    payload: bytes,
    instance_id: str,
    class_name: str,
    token: str,
    host: str,
    port: int,
    concurrency: int,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Serve one instance until SIGTERM/SIGINT; report the bound port when ready."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    servicer = InstanceServicer(
        UserObject(payload, class_name=class_name),
        instance_id=instance_id,
        token=token,
        concurrency=concurrency,
    )
    yr_pb2_grpc.add_InstanceServicer_to_server(servicer, server)
    if os.environ.get("YR_POD_IP"):  # a pod: collective peers stream to this port (yr/collective)
        from yr.collective.link import link_handler

        server.add_generic_rpc_handlers((link_handler(token),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    bound = server.add_insecure_port(_join_host_port(host, port))
    if bound == 0:
        raise OSError(f"instance server could not bind {host}:{port}")
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await servicer.construct()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    if on_ready is not None:
        on_ready(bound)
    await stopping.wait()
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace=1.0)
    servicer.shutdown()


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def main() -> None:
    """Entry point of an instance pod: configuration comes from the environment."""
    env = os.environ
    payload_file = env.get("YR_PAYLOAD_FILE", "/var/run/yr/payload/payload")
    token = env.get("YR_SESSION_TOKEN", "")
    if not token:
        sys.exit("yr.server: YR_SESSION_TOKEN is not set; refusing to serve without a secret")
    try:
        with open(payload_file, "rb") as handle:
            payload = handle.read()
    except OSError as error:
        sys.exit(f"yr.server: cannot read the instance payload {payload_file}: {error}")
    instance_id = env.get("YR_INSTANCE_NAME", "instance")
    from yr import session

    session.attach_instance(instance_id=instance_id)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    threading.current_thread().name = f"yr-instance-{instance_id}"
    asyncio.run(
        serve(
            payload=payload,
            instance_id=instance_id,
            class_name=env.get("YR_CLASS_NAME", "instance"),
            token=token,
            host=env.get("YR_POD_IP", "0.0.0.0"),
            port=int(env.get("YR_PORT", "50051")),
            concurrency=int(env.get("YR_CONCURRENCY", "1")),
        )
    )


if __name__ == "__main__":
    main()
