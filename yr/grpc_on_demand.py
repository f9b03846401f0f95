"""A gRPC port whose server is built on its first connection: idle local instances skip gRPC.

A forked local instance serves its calls on a Unix socket (yr/localcall), so its gRPC port is
used only now and then (``yr inspect``, ``YR_TRANSPORT=grpc`` callers in other processes).
Building a gRPC server starts gRPC's core, its threads and its pollers, and makes the process
touch ~7 MiB of gRPC's library code — a fifth of an idle instance's RSS. So the port is a plain
listening socket; its first connection builds and starts the real server on a private abstract
Unix socket, and every connection to the port is relayed there, byte for byte (the server's
token gate, protocol check and services are the ones an eagerly started server has).

Only a connection from a process of the instance's own user may build it: the session token
that every call must carry is readable by that user only, so any other user's connection
could only be refused, and must not cost the instance gRPC's memory first. Who holds the
other end of the connection is asked of the kernel (yr/loopback_peer.py); gRPC's HTTP/2
framing and compressed headers are not parsed for the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import traceback
from collections.abc import Callable

import grpc

from yr.loopback_peer import peer_uid

RELAY_CHUNK = 1 << 16


class OnDemandGrpcServer:
    """Listens on ``host:port`` at once; ``build()`` makes the gRPC server on first use."""

    def __init__(self, build: Callable[[], grpc.aio.Server]) -> None:
        self._build = build
        self._listener: asyncio.AbstractServer | None = None
        self._server: grpc.aio.Server | None = None
        self._starting: asyncio.Future[str] | None = None
        self._relayed: set[asyncio.StreamWriter] = set()

    @property
    def started(self) -> bool:
        """Whether a connection has made it build the gRPC server."""
        return self._server is not None

    async def listen(self, host: str, port: int) -> int:
        """Bind the port (0: any free one) and return it; no gRPC object exists yet."""
        self._listener = await asyncio.start_server(self._relay, host, port)
        return self._listener.sockets[0].getsockname()[1]

    async def stop(self, grace: float | None) -> None:
        """Close the port, stop the gRPC server (if it ever started), end every relay."""
        if self._listener is not None:
            self._listener.close()
        if self._starting is not None:  # a server being built when we were told to stop
            with contextlib.suppress(Exception):
                await self._starting
        if self._server is not None:
            await self._server.stop(grace)
        for writer in list(self._relayed):
            writer.close()

    async def _target(self) -> str:
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        return await asyncio.shield(self._starting)

    async def _start(self) -> str:
        name = f"yr-grpc-{os.getpid()}-{secrets.token_hex(8)}"
        server = self._build()
        if server.add_insecure_port(f"unix-abstract:{name}") == 0:
            raise OSError(f"could not bind the gRPC server to the abstract socket {name}")
        await server.start()
        self._server = server
        return "\0" + name

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._relayed.add(writer)
        try:
            if self._starting is None and peer_uid(writer.get_extra_info("socket")) != os.geteuid():
                return  # another user's: hung up on, nothing built
            try:
                target = await self._target()
                upstream_reader, upstream_writer = await asyncio.open_unix_connection(target)
            except Exception:
                traceback.print_exc(file=sys.stderr)  # reaches the driver's log
                return
            self._relayed.add(upstream_writer)
            try:
                await asyncio.gather(
                    _pump(reader, upstream_writer, also_close=writer),
                    _pump(upstream_reader, writer, also_close=upstream_writer),
                )
            finally:
                self._relayed.discard(upstream_writer)
                upstream_writer.close()
        finally:
            self._relayed.discard(writer)
            writer.close()


async def _pump(
    source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, also_close: asyncio.StreamWriter
) -> None:
    """Copy one direction until EOF, then half-close; a broken side ends both directions."""
    try:
        while data := await source.read(RELAY_CHUNK):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
    except (ConnectionError, OSError):
        sink.close()
        also_close.close()
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            sink.close()
        raise
