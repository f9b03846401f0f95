"""The caller's side of the fast path: a stand-in for a gRPC stub over a Unix socket.

``LocalChannel.Call`` blocks like a gRPC stub's unary call and fails with a ``grpc.RpcError``
carrying the same status codes, so the client's pipelines (order, batching, resends after a
death) treat both transports alike. Many threads may wait on one connection: whichever waits
first reads replies for everyone (and hands that role on when its own has come), so a lone
synchronous call costs one write and one read, with no thread in between.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from typing import Any

import grpc

from yr.localcall import wire
from yr.protocol import yr_pb2

READ_BUFFER_BYTES = 1 << 16


class LocalRpcError(grpc.RpcError):
    """A failed local call, shaped like a failed gRPC call (``code()``, ``details()``)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class LocalChannel:
    """Calls to one instance process's socket; connects (again) on demand."""

    def __init__(self, path: str, *, token: str, version: int) -> None:
        self.path = path
        self._hello = wire.hello(token, version)
        self._lock = threading.Lock()
        self._connection: _Connection | None = None
        self._closed = False

    def Call(self, request: yr_pb2.CallRequest, metadata: Any = None) -> yr_pb2.CallReply:
        body = self._connected().call(request.SerializeToString())
        return yr_pb2.CallReply.FromString(body)

    def _connected(self) -> _Connection:
        with self._lock:
            if self._closed:
                raise LocalRpcError(grpc.StatusCode.CANCELLED, "the channel was closed")
            if self._connection is None or self._connection.failure is not None:
                self._connection = _Connection.open(self.path, self._hello)
            return self._connection

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


class _Slot:
    __slots__ = ("done", "error", "event", "reply")

    def __init__(self) -> None:
        self.done = False
        self.event = threading.Event()
        self.reply = b""
        self.error: LocalRpcError | None = None


class _Connection:
    def __init__(self, sock: socket.socket) -> None:
        self._socket = sock
        self._reader = sock.makefile("rb", buffering=READ_BUFFER_BYTES)
        self._write_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._reading = threading.Lock()  # held by the thread reading replies for everyone
        self._pending: dict[int, _Slot] = {}
        self._ids = itertools.count(1)  # 0 is the connection itself (wire.CONNECTION_ID)
        self.failure: LocalRpcError | None = None

    @classmethod
    def open(cls, path: str, hello: bytes) -> _Connection:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as error:
            sock.close()  # nothing was sent: the caller may send it to the next incarnation
            raise LocalRpcError(
                grpc.StatusCode.UNAVAILABLE, f"connection refused by {path}: {error.strerror}"
            ) from None
        except OSError as error:
            sock.close()
            raise LocalRpcError(
                grpc.StatusCode.UNAVAILABLE, f"could not connect to {path}: {error}"
            ) from None
        connection = cls(sock)
        connection._send(hello)  # the server reads the first request only after this
        return connection

    def call(self, body: bytes) -> bytes:
        slot = _Slot()
        with self._state_lock:
            if self.failure is not None:
                raise self.failure
            request_id = next(self._ids)
            self._pending[request_id] = slot
        self._send(wire.frame(request_id, wire.REQUEST, body))
        self._wait(slot)
        if slot.error is not None:
            raise slot.error
        return slot.reply

    def _send(self, data: bytes) -> None:
        try:
            with self._write_lock:
                self._socket.sendall(data)
        except OSError as error:
            self._fail(LocalRpcError(grpc.StatusCode.UNAVAILABLE, f"connection lost: {error}"))

    def _wait(self, slot: _Slot) -> None:
        while not slot.done:
            if self._reading.acquire(blocking=False):
                try:
                    while not slot.done:
                        self._read_one()
                    if self.failure is not None:  # nobody reads from it again
                        self._reader.close()
                finally:
                    self._reading.release()
                    self._hand_over()
                return
            slot.event.wait()
            slot.event.clear()

    def _hand_over(self) -> None:
        """Wake one waiting caller to take over reading (its reply may still be on its way)."""
        with self._state_lock:
            waiting = next(iter(self._pending.values()), None)
        if waiting is not None:
            waiting.event.set()

    def _read_one(self) -> None:
        try:
            header = self._reader.read(wire.FRAME.size)
            if len(header) < wire.FRAME.size:
                raise EOFError
            request_id, kind, length = wire.FRAME.unpack(header)
            body = self._reader.read(length) if length else b""
            if len(body) < length:
                raise EOFError
        except (OSError, EOFError, ValueError) as error:
            reason = "the instance closed the connection" if isinstance(error, EOFError) else error
            self._fail(LocalRpcError(grpc.StatusCode.UNAVAILABLE, f"connection lost: {reason}"))
            return
        if kind == wire.REFUSAL:
            code, message = wire.parse_refusal(body)
            if request_id == wire.CONNECTION_ID:
                self._fail(LocalRpcError(code, message))
                return
            self._settle(request_id, error=LocalRpcError(code, message))
        else:
            self._settle(request_id, reply=body)

    def _settle(
        self, request_id: int, *, reply: bytes = b"", error: LocalRpcError | None = None
    ) -> None:
        with self._state_lock:
            slot = self._pending.pop(request_id, None)
        if slot is not None:
            slot.reply, slot.error, slot.done = reply, error, True
            slot.event.set()

    def _fail(self, error: LocalRpcError) -> None:
        """The connection is unusable: every call on it fails with ``error``."""
        with self._state_lock:
            if self.failure is None:
                self.failure = error
            pending, self._pending = list(self._pending.values()), {}
        for slot in pending:
            slot.error, slot.done = error, True
            slot.event.set()
        self.close()

    def close(self) -> None:
        """Wake a blocked reader with EOF; the descriptor goes once the reader is closed."""
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._socket.close()
