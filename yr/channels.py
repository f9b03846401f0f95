"""The channels a caller reaches its instances through: one per address and session.

An instance on this machine is reached over its Unix socket (yr/localcall), unless
``YR_TRANSPORT=grpc``; any other over gRPC. Another session's instance (a kept detached one)
is reached with that session's own token, even at an address reused from one of ours.
"""

from __future__ import annotations

import threading
from typing import Any

import grpc

from yr.localcall.channel import LocalChannel
from yr.localcall.wire import transport
from yr.protocol import (
    CHANNEL_OPTIONS,
    PROTOCOL_METADATA_KEY,
    PROTOCOL_VERSION,
    ROUTE_METADATA_KEY,
    TOKEN_METADATA_KEY,
    yr_pb2_grpc,
)
from yr.runtime.base import Endpoint, Runtime

Metadata = tuple[tuple[str, str], ...]


class Channels:
    """Opens each channel on first use; ``close`` closes them all."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._local_calls = transport() == "local"  # else YR_TRANSPORT=grpc: gRPC only
        self._metadata: Metadata = (
            (TOKEN_METADATA_KEY, runtime.session_token),
            (PROTOCOL_METADATA_KEY, str(PROTOCOL_VERSION)),
        )
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str], grpc.Channel | LocalChannel] = {}

    def reach(self, endpoint: Endpoint) -> tuple[Any, Metadata]:
        """The stub to call ``endpoint``'s instance through, and the metadata its calls carry."""
        # "host:port#instance" is an instance behind a gateway that routes by name.
        address, _, route = endpoint.address.partition("#")
        if endpoint.local_socket and self._local_calls:
            stub: Any = self._local_channel(endpoint.local_socket, endpoint.session)
        else:
            stub = yr_pb2_grpc.InstanceStub(self._channel(address, endpoint.session))
        metadata = self._metadata_for(endpoint.session)
        return stub, ((*metadata, (ROUTE_METADATA_KEY, route)) if route else metadata)

    def close(self) -> None:
        with self._lock:
            channels, self._open = list(self._open.values()), {}
        for channel in channels:
            channel.close()

    def _local_channel(self, path: str, session: str) -> LocalChannel:
        """The fast path to an instance on this machine (one connection per process and
        session: a kept detached instance is opened with its own session's token)."""
        key = ("unix:" + path, session)
        with self._lock:
            channel = self._open.get(key)
            if channel is None:
                token = self._runtime.session_token_of(session) if session else None
                channel = LocalChannel(
                    path, token=token or self._runtime.session_token, version=PROTOCOL_VERSION
                )
                self._open[key] = channel
            return channel

    def _channel(self, address: str, session: str) -> grpc.Channel:
        with self._lock:
            channel = self._open.get((address, session))
            if channel is None:
                channel = self._runtime.open_channel(address, CHANNEL_OPTIONS, session=session)
                self._open[(address, session)] = channel
            return channel

    def _metadata_for(self, session: str) -> Metadata:
        if not session:
            return self._metadata
        token = self._runtime.session_token_of(session)
        return ((TOKEN_METADATA_KEY, token), (PROTOCOL_METADATA_KEY, str(PROTOCOL_VERSION)))
