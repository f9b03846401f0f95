"""Peer links between pods: gRPC streams to each peer's instance server, with the session token.

On Kubernetes members share no memory, and the chart's NetworkPolicy admits instance pods to
each other's gRPC port only, so a member sends to a peer over one client stream to the peer's
own instance server (which routes ``LINK_METHOD`` here), and receives what its peers send on
theirs. A stream that breaks means the peer is gone: the next exchange raises the died-error.
"""

from __future__ import annotations

import collections
import contextlib
import hmac
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from yr.collective.errors import CollectiveError, CollectiveMemberDiedError, CollectiveTimeoutError
from yr.collective.mesh import Message, frame, parse_frame
from yr.protocol import CHANNEL_OPTIONS, PROTOCOL_METADATA_KEY, PROTOCOL_VERSION, TOKEN_METADATA_KEY

SERVICE = "yr.collective.Link"
SCHEME = "grpc:"
_GONE = None  # what an inbox receives when the stream from that peer ended

_lock = threading.Lock()
_inboxes: dict[tuple[str, int], queue.Queue] = {}  # (group id, rank) -> (from rank, frame)


def link_handler(token: str) -> grpc.GenericRpcHandler:
    """The instance server's side: authenticate, then queue each frame for its member."""
    expected = token.encode()

    async def send(request_iterator: Any, context: grpc.aio.ServicerContext) -> bytes:
        metadata = dict(context.invocation_metadata() or ())
        offered = metadata.get(TOKEN_METADATA_KEY, "")
        offered = offered.encode() if isinstance(offered, str) else offered
        if not hmac.compare_digest(offered, expected):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "collective link: wrong token")
        inbox: queue.Queue | None = None
        sender = -1
        try:
            async for data in request_iterator:
                if inbox is None:  # the first frame says which group, from whom, to whom
                    header, _ = parse_frame(data)
                    sender = int(header["from"])
                    with _lock:
                        inbox = _inboxes.get((str(header["group"]), int(header["to"])))
                    if inbox is None:
                        await context.abort(grpc.StatusCode.NOT_FOUND, "no such collective link")
                    continue
                inbox.put((sender, data))
        except (grpc.RpcError, ValueError, KeyError, TypeError, ConnectionError):
            pass
        finally:
            if inbox is not None:
                inbox.put((sender, _GONE))
        return b""

    handler = grpc.stream_unary_rpc_method_handler(send)
    return grpc.method_handlers_generic_handler(SERVICE, {"Send": handler})


class GrpcMesh:
    """This rank's streams to its peers; the same exchange contract as ``mesh.Mesh``."""

    def __init__(
        self,
        *,
        group_name: str,
        group_id: str,
        rank: int,
        world_size: int,
        token: str,
        own: str,
        open_channel: Callable[[str, list[tuple[str, Any]]], grpc.Channel] | None = None,
    ) -> None:
        # The runtime's channels: on Kubernetes, TLS pinned to the session certificate.
        self._open_channel = open_channel or (
            lambda address, options: grpc.insecure_channel(address, options=options)
        )
        self.group_name = group_name
        self.group_id = group_id
        self.rank = rank
        self.world_size = world_size
        self._token = token
        self.address = SCHEME + own
        self._peers = [peer for peer in range(world_size) if peer != rank]
        self._inbox: queue.Queue = queue.Queue()  # one queue: a death anywhere is seen at once
        self._early: dict[int, collections.deque] = {p: collections.deque() for p in self._peers}
        self._gone: set[int] = set()
        self._outbox: dict[int, queue.Queue] = {}
        self._channels: list[grpc.Channel] = []
        with _lock:
            _inboxes[(group_id, rank)] = self._inbox

    def connect(self, addresses: list[str], *, timeout: float) -> None:
        metadata = (
            (TOKEN_METADATA_KEY, self._token),
            (PROTOCOL_METADATA_KEY, str(PROTOCOL_VERSION)),
        )
        for peer in self._peers:
            target = addresses[peer]
            if not target.startswith(SCHEME):
                raise ValueError(f"not a collective gRPC address: {target!r}")
            channel = self._open_channel(target[len(SCHEME) :], CHANNEL_OPTIONS)
            self._channels.append(channel)
            outbox: queue.Queue = queue.Queue()
            outbox.put(frame({"group": self.group_id, "from": self.rank, "to": peer}))
            self._outbox[peer] = outbox
            send = channel.stream_unary(f"/{SERVICE}/Send")
            threading.Thread(
                target=self._stream, args=(send, outbox, peer, metadata), daemon=True
            ).start()
        self.exchange(
            frame({"hello": self.rank}), deadline=time.monotonic() + timeout, timeout=timeout
        )

    def _stream(self, send: Callable, outbox: queue.Queue, peer: int, metadata) -> None:
        try:
            send(iter(outbox.get, _GONE), metadata=metadata, wait_for_ready=True)
        except grpc.RpcError:
            self._inbox.put((peer, _GONE))  # we cannot reach it: as good as dead to this group

    def exchange(
        self,
        message: bytes | dict[int, bytes],
        *,
        deadline: float,
        timeout: float,
        describe: Callable[[int], str] = str,
    ) -> dict[int, Message]:
        for peer in self._peers:
            self._outbox[peer].put(bytes(message[peer] if isinstance(message, dict) else message))
        received: dict[int, Message] = {}
        for peer in self._peers:  # messages that came before this exchange asked for them
            if self._early[peer]:
                received[peer] = self._parse(peer, self._early[peer].popleft())
        while len(received) < len(self._peers) or self._gone:
            if self._gone:
                peer = min(self._gone)
                raise CollectiveMemberDiedError(self.group_name, peer, describe(peer))
            try:
                peer, data = self._inbox.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                missing = [p for p in self._peers if p not in received]
                raise CollectiveTimeoutError(self.group_name, missing, timeout) from None
            if data is _GONE:
                self._gone.add(peer)  # stays gone for later exchanges
            elif peer in received:
                self._early[peer].append(data)
            else:
                received[peer] = self._parse(peer, data)
        return received

    def _parse(self, peer: int, data: bytes) -> Message:
        try:
            return parse_frame(data)
        except ValueError:
            raise CollectiveError(
                f"collective group {self.group_name!r}: rank {peer} sent a malformed message"
            ) from None

    def close(self) -> None:
        with _lock:
            if _inboxes.get((self.group_id, self.rank)) is self._inbox:
                del _inboxes[(self.group_id, self.rank)]
        for outbox in self._outbox.values():
            outbox.put(_GONE)
        for channel in self._channels:
            with contextlib.suppress(Exception):
                channel.close()
