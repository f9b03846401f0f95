"""The instance server's Unix-socket face: authenticates a connection, then serves its frames.

The event loop reads the hello. After it, a ``concurrency=1`` instance's method thread reads
the connection itself and runs and answers its batches right there (``serve_call_here``): a
call costs no thread hop in the instance. Otherwise the loop reads the frames and each batch
goes to the same ``serve_call`` the gRPC ``Call`` uses. Both check and order batches the same
way (yr/server.py, yr/dispatch.py): the transports differ only in how bytes arrive.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hmac
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import grpc

from yr.dispatch import CallRefused
from yr.localcall import colocation, spinning, wire
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
    def watch_writable(
        self, sock: socket.socket, on_writable: Callable[[], None] | None
    ) -> None: ...
    def linger(self, sock: socket.socket, wait_for_more: Callable[[float], None]) -> None: ...
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
        self._loop = asyncio.get_running_loop()
        self._reader: _ReaderOnMethodThread | None = None  # once handed to the method thread

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        self._transport = None
        if self._reader is not None and self._server._method_thread is not None:
            self._server._method_thread.post(self._reader.end)  # its thread closes it
        self._buffer = bytearray()

    def write(self, data: bytes) -> None:
        """On the loop: send ``data`` after everything written before it."""
        if self._transport is not None:  # else the caller is gone
            self._transport.write(data)

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
        """From now on the method thread reads and writes this connection; the loop only
        closes it."""
        assert self._transport is not None
        assert self._server._method_thread is not None and self._server._serve_call_here
        self._transport.pause_reading()
        own = self._transport.get_extra_info("socket")
        self._reader = _ReaderOnMethodThread(
            self,
            socket.socket(fileno=os.dup(own.fileno())),
            received,
            self._server._method_thread,
            self._server._serve_call_here,
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
    """An authenticated connection as a ``concurrency=1`` instance's method thread serves it:
    each complete frame is run and answered on that thread, in the order it arrived.

    The thread owns the socket from here on, writes included (the loop only closes it), so
    the socket can block: after answering, the thread waits for the caller's next call in
    ``recv`` itself for a moment (``linger``) before it goes back to sleep in its selector. A
    caller that calls again at once then wakes this thread as a ``recv`` partner, which the
    scheduler may run on the caller's own core, instead of through an ``epoll`` wake-up on an
    idle core (on a virtual machine, about a third of a do-nothing call's round trip). Writes
    never block: what the socket does not take waits in order until it has room.
    """

    def __init__(
        self,
        connection: _Connection,
        sock: socket.socket,
        received: bytes,
        method_thread: MethodThread,
        serve_call_here: ServeCallHere,
    ) -> None:
        self._connection = connection
        self._socket: socket.socket | None = sock  # closed by this thread
        self._inbox = bytearray(received)
        self._landing = bytearray(RECEIVE_BYTES)  # reused: no allocation per read
        self._unsent: collections.deque[memoryview] = collections.deque()
        self._receive_timeout = 0.0
        self._spinner = spinning.Spinner(sock.fileno())  # polls before the linger sleeps
        # The CPU the caller waited for its last reply on (a WAITED frame before its call):
        # the linger after that call sleeps there (colocation.py); and a hint read whose call
        # is still to come.
        self._caller_cpu: int | None = None
        self._hint: int | None = None
        self._method_thread = method_thread
        self._serve_call_here = serve_call_here

    def start(self) -> None:
        if self._socket is None:
            return
        # Its file description is shared with the loop's transport, which no longer reads or
        # writes it: blocking is this thread's alone (every send here says MSG_DONTWAIT).
        self._socket.setblocking(True)
        self._method_thread.watch(self._socket, self._on_readable)
        self._serve_frames()  # what came with the hello

    def end(self) -> None:
        """Stop reading and close; the loop closes its side (``connection.close``)."""
        sock, self._socket = self._socket, None
        self._unsent.clear()
        if sock is not None:
            self._method_thread.unwatch(sock)
            sock.close()

    def _on_readable(self) -> None:
        self._take(socket.MSG_DONTWAIT)

    def _wait_for_more(self, seconds: float) -> None:
        """Linger: poll for the caller's next call for a moment (spinning.py), then block in
        ``recv`` for it, at most ``seconds``; asleep on the CPU the caller waited for its last
        reply on, if it said (colocation.py)."""
        if self._socket is None:
            return
        if seconds != self._receive_timeout:
            wire.set_receive_timeout(self._socket, seconds)
            self._receive_timeout = seconds
        cpu, self._caller_cpu = self._caller_cpu, None
        if self._spinner.readable_soon():  # a prompt caller: its call comes without a sleep
            self._serve(self._recv(socket.MSG_DONTWAIT))
            return
        own = colocation.pin(cpu)
        try:
            received = self._recv(0)
        finally:
            colocation.unpin(own)  # before anything else runs on this thread
        self._serve(received)

    def _take(self, flags: int) -> None:
        """Read what the caller sent and serve each complete frame."""
        self._serve(self._recv(flags))

    def _recv(self, flags: int) -> int | None:
        """Bytes read into the landing buffer: None if none came, 0 if the caller is gone."""
        if self._socket is None:
            return None
        try:
            return self._socket.recv_into(self._landing, 0, flags)
        except (BlockingIOError, InterruptedError):
            return None  # nothing after all, or the linger ended
        except OSError:
            return 0

    def _serve(self, received: int | None) -> None:
        if received is None or self._socket is None:
            return
        if not received:  # the caller is gone, maybe mid-frame: nothing of it runs
            self._stop_connection()
            return
        self._inbox += memoryview(self._landing)[:received]
        if self._serve_frames() and self._socket is not None:
            self._method_thread.linger(self._socket, self._wait_for_more)

    def _stop_connection(self) -> None:
        self.end()
        self._connection._loop.call_soon_threadsafe(self._connection.close)

    def _serve_frames(self) -> int:
        """Serve the complete frames in the inbox; how many there were."""
        frames = wire.take_frames(self._inbox)
        for request_id, kind, body in frames:
            if kind != wire.REQUEST:
                if kind == wire.WAITED:
                    self._hint = colocation.parse_waited(body)
                continue
            self._caller_cpu, self._hint = self._hint, None  # this call's hint, or none
            try:
                request = yr_pb2.CallRequest.FromString(body)
            except Exception as error:
                self._write(_internal_refusal(request_id, error))
                continue
            del body
            self._serve_call_here(request, functools.partial(self._answer, request_id))
        return len(frames)

    def _answer(self, request_id: int, outcome: yr_pb2.CallReply | CallRefused) -> None:
        self._write(_reply_frame(request_id, outcome))

    def _write(self, data: bytes) -> None:
        """Send ``data`` after everything before it, without ever blocking this thread."""
        if self._socket is None:
            return  # the caller is gone
        if not self._unsent:
            try:
                sent = self._socket.send(data, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                return  # the connection broke: the next read says so
            if sent == len(data):
                return
            self._method_thread.watch_writable(self._socket, self._send_unsent)
            data = memoryview(data)[sent:]
        self._unsent.append(memoryview(data))

    def _send_unsent(self) -> None:
        """The socket has room: send what waits, in order."""
        sock = self._socket
        while sock is not None and self._unsent:
            try:
                sent = sock.send(self._unsent[0], socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._unsent.clear()
                break
            if sent < len(self._unsent[0]):
                self._unsent[0] = self._unsent[0][sent:]
                return
            self._unsent.popleft()
        if sock is not None:
            self._method_thread.watch_writable(sock, None)


def _reply_frame(request_id: int, outcome: yr_pb2.CallReply | CallRefused) -> bytes:
    if isinstance(outcome, CallRefused):
        return wire.refusal(request_id, outcome.code, outcome.details)
    return wire.frame(request_id, wire.REPLY, outcome.SerializeToString())


def _internal_refusal(request_id: int, error: Exception) -> bytes:
    return wire.refusal(request_id, grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")
