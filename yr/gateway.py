"""The gateway: lets a driver outside the cluster call instance pods through one NodePort.

It forwards yr.Instance calls, bytes untouched, to the pod of the YRInstance named in the
``x-yr-route`` metadata — only YRInstances of its own namespace, so it is no open proxy — and
only for callers presenting that instance's session token: the token in ``x-yr-token`` must
equal the ``token`` of the Secret ``yr-session-<spec.session>``. Both checks happen on the
metadata, before the request body is received, so a caller without the token cannot make the
gateway buffer anything; the instance checks the token again. The gateway never unpickles.
Both legs are TLS: drivers pin the gateway's own certificate (the chart's ``yr-gateway-tls``
Secret), and the gateway pins each session's certificate (from the session Secret) when it
dials that session's pods. ``python -m yr.gateway`` (env: YR_NAMESPACE, YR_GATEWAY_PORT,
YR_GATEWAY_HOST, YR_GATEWAY_TLS_CERT_FILE, YR_GATEWAY_TLS_KEY_FILE).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hmac
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

import grpc

from yr import contract as c
from yr.contract import GROUP, PLURAL, PORT, TOKEN_KEY, VERSION, session_secret_name
from yr.protocol import CHANNEL_OPTIONS, ROUTE_METADATA_KEY, SERVER_OPTIONS
from yr.protocol.gate import presented_token, refusal
from yr.tls import PinnedServer, server_credentials

# Debug: `yr stack` and `yr tree` from outside the cluster (the instance checks the token too).
_FORWARDED_METHODS = (
    "/yr.v1.Instance/Call",
    "/yr.v1.Instance/Hello",
    "/yr.v1.Instance/CallStream",
    "/yr.v1.Debug/Stacks",
    "/yr.v1.Debug/Waits",
)
# Forwarded piece by piece, so that a large argument is never held whole (yr/protocol/chunks.py).
_STREAMED_METHODS = ("/yr.v1.Instance/CallStream",)
ROUTE_TTL_S = 2.0  # a pod's address, until a forward to it fails
UNKNOWN_TTL_S = 1.0  # "no such YRInstance": token-bearing floods of one name read once a second
TOKEN_TTL_S = 30.0  # a session's token never changes while its Secret exists


@dataclass(frozen=True)
class SessionKeys:
    """What the gateway needs of a session: the token to check, the certificate to pin."""

    token: bytes
    server: PinnedServer


@dataclass(frozen=True)
class Route:
    session: str
    address: str  # "" while the instance has no ready pod


class Directory:
    """YRInstance name -> session and pod address, session -> token: from the API server,
    cached (unknown names too, briefly), so that repeated calls cost no API reads."""

    def __init__(self, *, custom_api: Any, core_api: Any, namespace: str) -> None:
        self._custom = custom_api
        self._core = core_api
        self._namespace = namespace
        self._routes: dict[str, tuple[float, Route | None]] = {}
        self._sessions: dict[str, tuple[float, SessionKeys | None]] = {}

    def route(self, name: str) -> Route | None:
        now = time.monotonic()
        cached = self._routes.get(name)
        if cached is not None:
            at, route = cached
            ready = route is not None and route.address
            if now - at < (ROUTE_TTL_S if ready else UNKNOWN_TTL_S if route is None else 0):
                return route
        try:
            obj = self._custom.get_namespaced_custom_object(
                GROUP, VERSION, self._namespace, PLURAL, name
            )
        except Exception:
            self._routes[name] = (now, None)
            return None
        status = obj.get("status") or {}
        address = f"{status['podIP']}:{status.get('port') or PORT}" if status.get("podIP") else ""
        route = Route(session=(obj.get("spec") or {}).get("session", ""), address=address)
        self._routes[name] = (now, route)
        return route

    def forget(self, name: str) -> None:
        """A forward to the cached pod failed: look the instance up afresh next time."""
        self._routes.pop(name, None)

    def session_keys(self, session: str) -> SessionKeys | None:
        now = time.monotonic()
        cached = self._sessions.get(session)
        if cached is not None and now - cached[0] < (TOKEN_TTL_S if cached[1] else UNKNOWN_TTL_S):
            return cached[1]
        try:
            secret = self._core.read_namespaced_secret(
                session_secret_name(session), self._namespace
            )
            data = secret.data or {}
            keys: SessionKeys | None = SessionKeys(
                token=base64.b64decode(data[TOKEN_KEY]),
                server=PinnedServer(
                    base64.b64decode(data[c.TLS_CERT_KEY]), c.session_server_name(session)
                ),
            )
        except Exception:
            keys = None
        self._sessions[session] = (now, keys)
        return keys


class _Gateway(grpc.aio.ServerInterceptor):
    """Decides on the metadata alone whether, and where, a call is forwarded."""

    def __init__(self, directory: Directory) -> None:
        self._directory = directory
        self._channels: dict[tuple[str, str], grpc.aio.Channel] = {}

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        method = details.method
        if method not in _FORWARDED_METHODS:
            return await continuation(details)  # nothing else is served: UNIMPLEMENTED
        metadata = tuple(details.invocation_metadata or ())
        token = presented_token(metadata)
        if not token:
            return refusal(
                grpc.StatusCode.UNAUTHENTICATED, "the gateway refused the call: no session token"
            )
        name = next((v for k, v in metadata if k == ROUTE_METADATA_KEY), "")
        route = await asyncio.to_thread(self._directory.route, name) if name else None
        if route is None:
            return refusal(
                grpc.StatusCode.UNAVAILABLE,
                # Nothing was forwarded: "failed to connect" tells the caller it may resend.
                f"the gateway knows no ready instance {name!r} in its namespace (failed to "
                "connect: no such YRInstance, or it could not be read)",
            )
        keys = await asyncio.to_thread(self._directory.session_keys, route.session)
        if keys is None or not hmac.compare_digest(token, keys.token):
            return refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                f"the gateway refused the call: wrong session token for instance {name!r}",
            )
        if not route.address:
            return refusal(
                grpc.StatusCode.UNAVAILABLE,
                f"the gateway knows no ready instance {name!r} in its namespace "
                "(failed to connect: it has no ready pod)",
            )
        forwarded = tuple((k, v) for k, v in metadata if k != ROUTE_METADATA_KEY)
        forward = self._forwarder(name, route.address, keys, method, forwarded)
        if method in _STREAMED_METHODS:
            return grpc.stream_unary_rpc_method_handler(forward)
        return grpc.unary_unary_rpc_method_handler(forward)

    def _forwarder(
        self, name: str, address: str, keys: SessionKeys, method: str, metadata: tuple
    ) -> Any:
        streamed = method in _STREAMED_METHODS

        async def forward(request: Any, context: grpc.aio.ServicerContext) -> bytes:
            channel = self._channel(address, keys)
            # Bytes in, bytes out: no (de)serializer, the gateway never parses a call.
            call = channel.stream_unary(method) if streamed else channel.unary_unary(method)
            try:
                return await call(request, metadata=metadata)
            except grpc.aio.AioRpcError as error:
                code, details = error.code(), error.details() or ""
            if code == grpc.StatusCode.UNAVAILABLE:
                # Its pod is gone or restarting: the next call looks the instance up afresh.
                self._directory.forget(name)
                self._drop_channel((address, keys.server.server_name))
                if not _reached_pod(details):
                    details = f"failed to connect to the pod of {name} at {address}: {details}"
            await context.abort(code, details)

        return forward

    def _channel(self, address: str, keys: SessionKeys) -> grpc.aio.Channel:
        """One channel per pod address and session, pinned to that session's certificate."""
        key = (address, keys.server.server_name)
        channel = self._channels.get(key)
        if channel is None:
            channel = keys.server.secure_aio_channel(address, CHANNEL_OPTIONS)
            self._channels[key] = channel
        return channel

    def _drop_channel(self, key: tuple[str, str]) -> None:
        channel = self._channels.pop(key, None)
        if channel is not None:
            asyncio.get_running_loop().create_task(channel.close())


def _reached_pod(details: str) -> bool:
    lowered = details.lower()
    return not ("connection refused" in lowered or "failed to connect" in lowered)


async def serve(
    *,
    custom_api: Any,
    core_api: Any,
    namespace: str,
    host: str,
    port: int,
    tls: tuple[bytes, bytes],
) -> None:
    directory = Directory(custom_api=custom_api, core_api=core_api, namespace=namespace)
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=[_Gateway(directory)])
    bound = server.add_secure_port(f"{host}:{port}", server_credentials(*tls))
    await server.start()
    print(f"yr gateway for namespace {namespace} listening on {host}:{bound}", flush=True)
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stopping.set)
    await stopping.wait()
    await server.stop(grace=1.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m yr.gateway",
        description=(
            "Forward yr calls from drivers outside the cluster to the instance pods of one "
            "namespace. Configured by the environment: YR_NAMESPACE (default: default), "
            "YR_GATEWAY_HOST (default: 0.0.0.0), YR_GATEWAY_PORT (default: 50052; 0 picks a "
            "free port), YR_GATEWAY_TLS_CERT_FILE and YR_GATEWAY_TLS_KEY_FILE (required: its "
            "TLS key pair, the chart's yr-gateway-tls Secret), and KUBECONFIG or the "
            "in-cluster service account."
        ),
    )
    parser.parse_args(argv)
    tls = _key_pair_from_env()
    from kubernetes import client as k8s

    from yr.runtime.kubernetes.runtime import _load_config

    api_client = _load_config()
    asyncio.run(
        serve(
            custom_api=k8s.CustomObjectsApi(api_client),
            core_api=k8s.CoreV1Api(api_client),
            namespace=os.environ.get("YR_NAMESPACE", "default"),
            host=os.environ.get("YR_GATEWAY_HOST", "0.0.0.0"),
            port=int(os.environ.get("YR_GATEWAY_PORT", "50052")),
            tls=tls,
        )
    )


def _key_pair_from_env() -> tuple[bytes, bytes]:
    cert_file = os.environ.get(c.ENV_GATEWAY_TLS_CERT_FILE, "")
    key_file = os.environ.get(c.ENV_GATEWAY_TLS_KEY_FILE, "")
    if not cert_file or not key_file:
        sys.exit(
            f"yr.gateway: set {c.ENV_GATEWAY_TLS_CERT_FILE} and {c.ENV_GATEWAY_TLS_KEY_FILE} "
            "(the chart mounts its yr-gateway-tls Secret); the gateway serves TLS only"
        )
    try:
        with open(cert_file, "rb") as cert, open(key_file, "rb") as key:
            return cert.read(), key.read()
    except OSError as error:
        sys.exit(f"yr.gateway: cannot read its TLS key pair: {error}")


if __name__ == "__main__":
    main()
