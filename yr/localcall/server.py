"""The instance server's Unix-socket face: authenticates a connection, then serves its frames.

The event loop reads the hello. After it, a ``concurrency=1`` instance's method thread reads
the connection itself and runs and answers its batches right there (``serve_call_here``): a
call costs no thread hop in the instance. Otherwise the loop reads the frames and each batch
goes to the same ``serve_call`` the gRPC ``Call`` uses. Both check and order batches the same
way (yr/server.py, yr/dispatch.py): the transports differ only in how bytes arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import os
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import grpc

from yr.dispatch import CallRefused
from yr.localcall import wire
from yr.protocol import yr_pb2

ServeCall = Callable[[yr_pb2.CallRequest], Awaitable[yr_pb2.CallReply]]
Answer = Callable[["yr_pb2.CallReply | CallRefused"], None]
ServeCallHere = Callable[[yr_pb2.CallRequest, Answer], None]
VersionRefusal = Callable[[str], "str | None"]
RECEIVE_BYTES = 1 << 18


class MethodThread(Protocol):
    """The thread that reads, runs and answers a ``concurrency=1`` instance's local calls."""

    def post(self, function: Callable[..., Any], *args: Any) -> None: ...
    def watch(self, sock: socket.socket, on_readable: Callable[[], None]) -> None: ...
    def unwatch(self, sock: socket.socket) -> None: ...


class LocalCallServer:
    """Listens on ``path`` (a 0600 socket in the session's 0700 directory) until stopped."""

    def __init__(
        self,
        path: str,
        *,
        token: str,
        serve_call: ServeCall,
        version_refusal: VersionRefusal,
        refusal_message: str,
        method_thread: MethodThread | None = None,
        serve_call_here: ServeCallHere | None = None,
    ) -> None:
        self.path = path
        self._token = token.encode()
        self._serve_call = serve_call
        self._method_thread = method_thread if serve_call_here is not None else None
        self._serve_call_here = serve_call_here
        self._version_refusal = version_refusal
        self._refusal_message = refusal_message
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a dead process's socket that had this pid's name
        old_mask = os.umask(0o177)  # created 0600: no window where others may connect
        try:
            self._server = await asyncio.get_running_loop().create_unix_server(
                lambda: _Connection(self), self.path
            )
        finally:
            os.umask(old_mask)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for connection in list(self._connections):
                connection.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def check_hello(self, version: int, token: bytes) -> tuple[grpc.StatusCode, str] | None:
        """Why a connection is refused, or None: the token first, then the version."""
        if not token or not hmac.compare_digest(token, self._token):
            return grpc.StatusCode.UNAUTHENTICATED, self._refusal_message
        refusal = self._version_refusal(str(version))
        if refusal is not None:
            return grpc.StatusCode.FAILED_PRECONDITION, refusal
        return None


class _Connection(asyncio.Protocol):
    """One caller's connection: a hello, then request frames answered as they complete."""

    def __init__(self, server: LocalCallServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._authenticated = False
        self._refused = False
        self._buffer = bytearray()
        self._tasks: set[asyncio.Task] = set()
        # Replies are written by the method thread itself when the socket takes them at once;
        # what it cannot take goes through the loop's transport, and so does everything after
        # it until the transport has drained (the order of the bytes is kept).
        self._write_lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._through_loop = 0  # writes handed to the loop and not yet done
        self._backlog = False
        self._loop = asyncio.get_running_loop()
        self._reader: _ReaderOnMethodThread | None = None  # once handed to the method thread

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._transport.set_write_buffer_limits(high=0)  # resume_writing: it has drained
        own = transport.get_extra_info("socket")
        self._socket = socket.socket(fileno=os.dup(own.fileno()))
        self._socket.setblocking(False)
        self._server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        with self._write_lock:
            self._transport = None
            own, self._socket = self._socket, None
        if self._reader is not None and self._server._method_thread is not None:
            self._server._method_thread.post(self._reader.end)  # its thread closes it
        elif own is not None:
            own.close()
        self._buffer = bytearray()

    def write(self, data: bytes) -> None:
        """Send ``data`` from any thread, after everything written before it."""
        with self._write_lock:
            if self._socket is None:
                return  # the caller is gone
            if not self._backlog:
                try:
                    sent = self._socket.send(data)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    return  # the connection broke; the loop learns it from its own reads
                if sent == len(data):
                    return
                data = data[sent:]
                self._backlog = True
            self._through_loop += 1
        self._loop.call_soon_threadsafe(self._write_through_loop, data)

    def _write_through_loop(self, data: bytes) -> None:
        with self._write_lock:
            self._through_loop -= 1
            if self._transport is None:
                return
            self._transport.write(data)
            self._end_backlog_if_drained()

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        with self._write_lock:
            self._end_backlog_if_drained()

    def _end_backlog_if_drained(self) -> None:
        transport = self._transport
        if (
            transport is not None
            and not self._through_loop
            and not transport.get_write_buffer_size()
        ):
            self._backlog = False

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # dropped unread: a refused peer costs nothing more
        if not self._authenticated:
            data = self._read_hello(data)
            if not self._authenticated:
                return
            if self._server._method_thread is not None:
                self._hand_to_method_thread(data)
                return
        self._buffer += data
        self._serve_complete_frames()

    def _hand_to_method_thread(self, received: bytes) -> None:
        """From now on the method thread reads this connection (the loop only writes what
        the socket could not take at once, and closes it)."""
        assert self._transport is not None and self._socket is not None
        assert self._server._method_thread is not None and self._server._serve_call_here
        self._transport.pause_reading()
        self._reader = _ReaderOnMethodThread(
            self, self._socket, received, self._server._method_thread, self._server._serve_call_here
        )
        self._server._method_thread.post(self._reader.start)

    def _read_hello(self, data: bytes) -> bytes:
        """Take only the hello's bytes (bounded) until it is complete; return what follows."""
        needed = wire.HELLO.size - len(self._buffer)
        if needed > 0:
            self._buffer += data[:needed]
            data = data[needed:]
            if len(self._buffer) < wire.HELLO.size:
                return b""
        magic, version, token_length = wire.HELLO.unpack_from(self._buffer)
        if magic != wire.MAGIC or token_length > wire.MAX_TOKEN_BYTES:
            self._refuse(grpc.StatusCode.UNAUTHENTICATED, "not a yr local-call connection")
            return b""
        needed = wire.HELLO.size + token_length - len(self._buffer)
        self._buffer += data[:needed]
        data = data[needed:]
        if len(self._buffer) < wire.HELLO.size + token_length:
            return b""
        refusal = self._server.check_hello(version, bytes(self._buffer[wire.HELLO.size :]))
        self._buffer = bytearray()
        if refusal is not None:
            self._refuse(*refusal)
            return b""
        self._authenticated = True
        return data

    def _refuse(self, code: grpc.StatusCode, message: str) -> None:
        """Answer the whole connection and end our side of it; whatever the peer still sends
        is dropped as it comes (closing with it unread would reset the connection, and the
        peer might never read why)."""
        self._refused = True
        self._buffer = bytearray()
        if self._transport is not None:  # never authenticated: nothing else ever wrote to it
            self._transport.write(wire.refusal(wire.CONNECTION_ID, code, message))
            if self._transport.can_write_eof():
                self._transport.write_eof()
            else:
                self._transport.close()

    def _serve_complete_frames(self) -> None:
        for request_id, kind, body in wire.take_frames(self._buffer):
            if kind == wire.REQUEST:
                self._start(request_id, body)

    def _start(self, request_id: int, body: bytes) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(request_id, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, request_id: int, body: bytes) -> None:
        try:
            request = yr_pb2.CallRequest.FromString(body)
            del body
            out = _reply_frame(request_id, await self._server._serve_call(request))
        except CallRefused as refused:
            out = _reply_frame(request_id, refused)
        except Exception as error:
            out = _internal_refusal(request_id, error)
        self.write(out)


class _ReaderOnMethodThread:
    """An authenticated connection as a ``concurrency=1`` instance's method thread reads it:
    each complete frame is run and answered on that thread, in the order it arrived."""

    def __init__(
        self,
        connection: _Connection,
        sock: socket.socket,
        received: bytes,
        method_thread: MethodThread,
        serve_call_here: ServeCallHere,
    ) -> None:
        self._connection = connection
        self._socket: socket.socket | None = sock  # non-blocking; closed by this thread
        self._inbox = bytearray(received)
        self._landing = bytearray(RECEIVE_BYTES)  # reused: no allocation per read
        self._method_thread = method_thread
        self._serve_call_here = serve_call_here

    def start(self) -> None:
        if self._socket is None:
            return
        self._method_thread.watch(self._socket, self._on_readable)
        self._serve_frames()  # what came with the hello

    def end(self) -> None:
        """Stop reading and close; the loop closes its side (``connection.close``)."""
        sock, self._socket = self._socket, None
        if sock is not None:
            self._method_thread.unwatch(sock)
            sock.close()

    def _on_readable(self) -> None:
        if self._socket is None:
            return
        try:
            received = self._socket.recv_into(self._landing)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            received = 0
        if not received:  # the caller is gone, maybe mid-frame: nothing of it runs
            self._stop_connection()
            return
        self._inbox += memoryview(self._landing)[:received]
        self._serve_frames()

    def _stop_connection(self) -> None:
        connection = self._connection
        with connection._write_lock:
            connection._socket = None  # nothing writes to it any more
        self.end()
        connection._loop.call_soon_threadsafe(connection.close)

    def _serve_frames(self) -> None:
        for request_id, kind, body in wire.take_frames(self._inbox):
            if kind != wire.REQUEST:
                continue
            try:
                request = yr_pb2.CallRequest.FromString(body)
            except Exception as error:
                self._connection.write(_internal_refusal(request_id, error))
                continue
            del body
            self._serve_call_here(request, functools.partial(self._answer, request_id))

    def _answer(self, request_id: int, outcome: yr_pb2.CallReply | CallRefused) -> None:
        self._connection.write(_reply_frame(request_id, outcome))


def _reply_frame(request_id: int, outcome: yr_pb2.CallReply | CallRefused) -> bytes:
    if isinstance(outcome, CallRefused):
        return wire.refusal(request_id, outcome.code, outcome.details)
    return wire.frame(request_id, wire.REPLY, outcome.SerializeToString())


def _internal_refusal(request_id: int, error: Exception) -> bytes:
    return wire.refusal(request_id, grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")
