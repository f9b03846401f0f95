"""The gateway: lets a driver outside the cluster call instance pods through one NodePort.

It forwards yr.Instance calls, bytes untouched, to the pod of the YRInstance named in the
``x-yr-route`` metadata — only YRInstances of its own namespace, so it is no open proxy. The
instance still checks the session token; the gateway never unpickles anything.
``python -m yr.gateway`` (env: YR_NAMESPACE, YR_GATEWAY_PORT, YR_GATEWAY_HOST).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import grpc

from yr.contract import GROUP, PLURAL, PORT, VERSION
from yr.protocol import CHANNEL_OPTIONS, ROUTE_METADATA_KEY, SERVER_OPTIONS

_FORWARDED_METHODS = ("/yr.v1.Instance/Call", "/yr.v1.Instance/Hello")
CACHE_TTL_S = 2.0


class Router:
    """YRInstance name -> its pod's address, from the API server, cached briefly."""

    def __init__(self, *, custom_api: Any, namespace: str) -> None:
        self._api = custom_api
        self._namespace = namespace
        self._cache: dict[str, tuple[float, str]] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}

    def address(self, name: str, *, fresh: bool = False) -> str | None:
        cached = self._cache.get(name)
        if cached and not fresh and time.monotonic() - cached[0] < CACHE_TTL_S:
            return cached[1]
        try:
            obj = self._api.get_namespaced_custom_object(
                GROUP, VERSION, self._namespace, PLURAL, name
            )
        except Exception:
            return None
        status = obj.get("status") or {}
        if not status.get("podIP"):
            return None
        address = f"{status['podIP']}:{status.get('port') or PORT}"
        self._cache[name] = (time.monotonic(), address)
        return address

    def channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            self._channels[address] = channel
        return channel


class _Forwarder(grpc.GenericRpcHandler):
    def __init__(self, router: Router) -> None:
        self._router = router

    def service(self, handler_call_details):
        method = handler_call_details.method
        if method not in _FORWARDED_METHODS:
            return None

        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            metadata = tuple(context.invocation_metadata() or ())
            route = next((v for k, v in metadata if k == ROUTE_METADATA_KEY), "")
            loop = asyncio.get_running_loop()
            address = await loop.run_in_executor(None, self._router.address, route)
            if address is None:
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the gateway knows no ready instance {route!r} in its namespace",
                )
            call = self._router.channel(address).unary_unary(method)
            forwarded = tuple((k, v) for k, v in metadata if k != ROUTE_METADATA_KEY)
            try:
                return await call(request, metadata=forwarded)
            except grpc.aio.AioRpcError as error:
                await context.abort(error.code(), error.details() or "")

        return grpc.unary_unary_rpc_method_handler(forward)


async def serve(*, custom_api: Any, namespace: str, host: str, port: int) -> None:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers(
        [_Forwarder(Router(custom_api=custom_api, namespace=namespace))]
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"yr gateway for namespace {namespace} listening on {host}:{bound}", flush=True)
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stopping.set)
    await stopping.wait()
    await server.stop(grace=1.0)


def main() -> None:
    from kubernetes import client as k8s

    from yr.runtime.kubernetes.runtime import _load_config

    api = k8s.CustomObjectsApi(_load_config())
    asyncio.run(
        serve(
            custom_api=api,
            namespace=os.environ.get("YR_NAMESPACE", "default"),
            host=os.environ.get("YR_GATEWAY_HOST", "0.0.0.0"),
            port=int(os.environ.get("YR_GATEWAY_PORT", "50052")),
        )
    )


if __name__ == "__main__":
    main()
