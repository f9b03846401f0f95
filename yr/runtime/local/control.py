"""The control plane a driver serves to its instances: nested creation, lookups, deaths.

Instances reach the driver's LocalRuntime through this gRPC service, as pods reach the
Kubernetes API: every call must carry the session token. Errors travel pickled in trailing
metadata so that the instance re-raises the same exception type the driver would.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import grpc

from yr import serialization
from yr.protocol import (
    ERROR_METADATA_KEY,
    SERVER_OPTIONS,
    SESSION_METADATA_KEY,
    TOKEN_METADATA_KEY,
    groups_pb2,
    groups_pb2_grpc,
    yr_pb2,
    yr_pb2_grpc,
)
from yr.protocol.gate import TokenGate, one_token
from yr.runtime.base import Bundle, ResourceGroupSpec, Runtime


class _RuntimeServicer(yr_pb2_grpc.RuntimeServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def _guard(self, context: grpc.aio.ServicerContext, work: Any) -> Any:
        # The token was checked by the TokenGate, before the request was read.
        try:
            if asyncio.iscoroutinefunction(work):
                return await work()
            return await asyncio.get_running_loop().run_in_executor(None, work)
        except BaseException as error:
            context.set_trailing_metadata(((ERROR_METADATA_KEY, serialization.dumps(error)),))
            await context.abort(grpc.StatusCode.ABORTED, str(error))

    async def Create(self, request, context):
        def work():
            spec = serialization.loads(request.spec)
            instance_id = self._runtime.create(spec, owner_id=request.owner_id or None)
            return yr_pb2.CreateReply(instance_id=instance_id)

        return await self._guard(context, work)

    async def Resolve(self, request, context):
        async def work():
            # Waiting for an instance to start can take long: await it, hold no thread.
            endpoint = await asyncio.wrap_future(
                self._runtime.endpoint(request.instance_id, min_incarnation=request.min_incarnation)
            )
            if endpoint.session:  # a kept (detached) instance: the caller needs its token
                token = self._runtime.session_token_of(endpoint.session)
                context.set_trailing_metadata(
                    ((SESSION_METADATA_KEY, endpoint.session), (TOKEN_METADATA_KEY, token))
                )
            return yr_pb2.ResolveReply(
                address=endpoint.address,
                incarnation=endpoint.incarnation,
                local_socket=endpoint.local_socket,
            )

        return await self._guard(context, work)

    async def AwaitDeath(self, request, context):
        def work():
            death = self._runtime.await_death(
                request.instance_id, request.incarnation, timeout=request.timeout_s
            )
            return yr_pb2.AwaitDeathReply(death=serialization.dumps(death) if death else b"")

        return await self._guard(context, work)

    async def Terminate(self, request, context):
        def work():
            self._runtime.terminate(request.instance_id, wait=request.wait, reason=request.reason)
            return yr_pb2.TerminateReply()

        return await self._guard(context, work)

    async def GetNamed(self, request, context):
        def work():
            instance_id, info = self._runtime.get_named(request.name, request.namespace)
            return yr_pb2.InstanceRecord(
                instance_id=instance_id,
                class_name=info.class_name,
                method_meta=serialization.dumps(info.method_meta),
            )

        return await self._guard(context, work)

    async def ListNamed(self, request, context):
        def work():
            return yr_pb2.ListNamedReply(names=self._runtime.list_named())

        return await self._guard(context, work)

    async def BlockWait(self, request, context):
        def work():
            self._runtime.block_wait(request.waiter, list(request.targets))
            return yr_pb2.WaitReply()

        return await self._guard(context, work)

    async def EndWait(self, request, context):
        def work():
            self._runtime.end_wait(request.waiter, list(request.targets))
            return yr_pb2.WaitReply()

        return await self._guard(context, work)

    async def Resources(self, request, context):
        def work():
            return yr_pb2.ResourcesReply(resources=serialization.dumps(self._runtime.resources()))

        return await self._guard(context, work)


class _GroupServicer(groups_pb2_grpc.ResourceGroupsServicer):
    """Resource groups for instances: a supervisor reserving its own team."""

    _guard = _RuntimeServicer._guard

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def Create(self, request, context):
        def work():
            spec = ResourceGroupSpec(
                name=request.name,
                strategy=request.strategy,
                bundles=tuple(
                    Bundle(cpu=b.cpu, memory=b.memory, custom=dict(b.custom))
                    for b in request.bundles
                ),
            )
            self._runtime.create_resource_group(spec, owner_id=request.owner_id or None)
            return groups_pb2.GroupReply()

        return await self._guard(context, work)

    async def AwaitAdmitted(self, request, context):
        async def work():
            # Admission can take long: await it, hold no thread.
            await asyncio.wrap_future(self._runtime.resource_group_admitted(request.name))
            return groups_pb2.GroupReply()

        return await self._guard(context, work)

    async def Remove(self, request, context):
        def work():
            self._runtime.remove_resource_group(request.name)
            return groups_pb2.GroupReply()

        return await self._guard(context, work)

    async def Describe(self, request, context):
        def work():
            text = self._runtime.describe_resource_group(request.name)
            return groups_pb2.DescribeGroupReply(description=text)

        return await self._guard(context, work)


class ControlServer:
    """Runs the Runtime service on its own event loop thread, on loopback."""

    def __init__(self, runtime: Runtime) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="yr-control", daemon=True
        )
        self._thread.start()
        self._server, port = asyncio.run_coroutine_threadsafe(
            self._start(runtime), self._loop
        ).result()
        self.address = f"127.0.0.1:{port}"

    async def _start(self, runtime: Runtime) -> tuple[grpc.aio.Server, int]:
        import concurrent.futures

        # Resolve and AwaitDeath block while instances start: give them threads of their own.
        self._loop.set_default_executor(
            concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="yr-ctl")
        )
        gate = TokenGate(
            one_token(runtime.session_token),
            refusal_message="the driver refused the request: missing or wrong session token",
        )
        server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=[gate])
        yr_pb2_grpc.add_RuntimeServicer_to_server(_RuntimeServicer(runtime), server)
        groups_pb2_grpc.add_ResourceGroupsServicer_to_server(_GroupServicer(runtime), server)
        from yr.runtime.local import inspect_service

        inspect_service.add_to_server(runtime, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(grace=0.5), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
