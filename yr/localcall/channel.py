"""The caller's side of the fast path: a stand-in for a gRPC stub over a Unix socket.

A call is written by the thread that sends it, and its reply is read by whoever needs it
first: a ``yr.get`` waiting for that call reads the socket itself, so a synchronous call costs
one write and one read with no thread in between (yr/localcall/connection.py). Failures are
``grpc.RpcError``s with gRPC's status codes, so the client's pipelines (order, batching,
resends after a death) treat both transports alike.
"""

from __future__ import annotations

import threading
from typing import Any

import grpc

from yr.localcall import wire
from yr.localcall.connection import Connection, LocalRpcError, OnDone
from yr.protocol import yr_pb2

__all__ = ["LocalChannel", "LocalRpcError"]


class LocalChannel:
    """Calls to one instance process's socket; connects (again) on demand."""

    def __init__(self, path: str, *, token: str, version: int) -> None:
        self.path = path
        self._hello = wire.hello(token, version)
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self._closed = False

    def Call(self, request: yr_pb2.CallRequest, metadata: Any = None) -> yr_pb2.CallReply:
        """A blocking call, as a gRPC stub's (``metadata`` is not needed: the hello has it)."""
        done = threading.Event()
        outcome: list[Any] = []

        def settled(reply: bytes, error: LocalRpcError | None) -> None:
            outcome[:] = [reply, error]
            done.set()

        connection = self.start(request, settled)
        connection.read_until(done.is_set, None)
        done.wait()
        if outcome[1] is not None:
            raise outcome[1]
        return yr_pb2.CallReply.FromString(outcome[0])

    def start(
        self, request: yr_pb2.CallRequest, on_done: OnDone, *, claim: bool = False
    ) -> Connection:
        """Send ``request`` now; ``on_done`` runs in whichever thread reads its reply. With
        ``claim``, this thread is likely to wait for it next (``Connection.send``)."""
        connection = self._connected()
        connection.send(request.SerializeToString(), on_done, claim=claim)
        return connection

    def _connected(self) -> Connection:
        with self._lock:
            if self._closed:
                raise LocalRpcError(grpc.StatusCode.CANCELLED, "the channel was closed")
            if self._connection is None or self._connection.failure is not None:
                self._connection = Connection.open(self.path, self._hello)
            return self._connection

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
