"""Peer-to-peer links between the members of one group: a full mesh of Unix sockets.

Every rank holds one socket to every other rank, so a member's death is seen by each peer as
end-of-file on the next exchange (never a hang), and each exchange is also a barrier. Messages
are a JSON header plus raw bytes; nothing received is ever unpickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import selectors
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from yr.collective.errors import CollectiveError, CollectiveMemberDiedError, CollectiveTimeoutError

_FRAME = struct.Struct("!II")  # header length, payload length
_RECV_CHUNK = 1 << 20
ABSTRACT_SCHEME = "unix-abstract:"

Message = tuple[dict[str, Any], bytes]


def frame(header: dict[str, Any], payload: bytes | memoryview = b"") -> bytes:
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return b"".join((_FRAME.pack(len(encoded), len(payload)), encoded, payload))


def parse_frame(data: bytes) -> Message:
    """One whole frame back into its header and payload."""
    header_length, payload_length = _FRAME.unpack_from(data)
    end = _FRAME.size + header_length
    if len(data) != end + payload_length:
        raise ValueError("frame length mismatch")
    return json.loads(data[_FRAME.size : end]), data[end:]


def handshake_digest(secret: bytes, group_id: str, rank: int) -> str:
    """Proves a connecting peer holds the session token, without sending the token."""
    return hmac.new(secret, f"{group_id}:{rank}".encode(), hashlib.sha256).hexdigest()


class Mesh:
    """This rank's sockets to its peers, with exchanges that detect deaths and time out."""

    def __init__(
        self, *, group_name: str, group_id: str, rank: int, world_size: int, secret: bytes
    ) -> None:
        self.group_name = group_name
        self.group_id = group_id
        self.rank = rank
        self.world_size = world_size
        self._secret = secret
        self._peers: dict[int, socket.socket] = {}
        self._inbox: dict[int, bytearray] = {}
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        name = f"yr-collective-{group_id}-{rank}"
        self._listener.bind("\0" + name)  # abstract: no file to clean up, gone with the process
        self._listener.listen(max(world_size, 1))
        self.address = ABSTRACT_SCHEME + name

    # -- forming -------------------------------------------------------------------------------

    def connect(self, addresses: list[str], *, timeout: float) -> None:
        """Dial every lower rank, accept every higher one; each side proves the session token."""
        deadline = time.monotonic() + timeout
        for peer in range(self.rank):
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            connection.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                connection.connect(_socket_address(addresses[peer]))
                connection.sendall(
                    frame(
                        {
                            "rank": self.rank,
                            "digest": handshake_digest(self._secret, self.group_id, self.rank),
                        }
                    )
                )
            except OSError as error:
                connection.close()
                raise CollectiveMemberDiedError(
                    self.group_name, peer, f"cannot connect to {addresses[peer]}: {error}"
                ) from None
            self._adopt(peer, connection)
        expected = set(range(self.rank + 1, self.world_size))
        while expected:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CollectiveTimeoutError(self.group_name, sorted(expected), timeout)
            self._listener.settimeout(remaining)
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            peer = self._accept_hello(connection, deadline)
            if peer in expected:
                expected.discard(peer)
                self._adopt(peer, connection)
            else:
                connection.close()
        self._listener.close()

    def _accept_hello(self, connection: socket.socket, deadline: float) -> int:
        connection.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            head = _recv_exact(connection, _FRAME.size)
            header_length, payload_length = _FRAME.unpack(head)
            if header_length > 4096 or payload_length:
                return -1
            hello = json.loads(_recv_exact(connection, header_length))
            peer = int(hello["rank"])
            digest = str(hello["digest"])
        except (OSError, ValueError, KeyError, TypeError):
            return -1
        if not hmac.compare_digest(
            digest, handshake_digest(self._secret, self.group_id, peer)
        ):  # a caller without the session token: refuse it
            return -1
        return peer

    def _adopt(self, peer: int, connection: socket.socket) -> None:
        connection.setblocking(False)
        self._peers[peer] = connection
        self._inbox[peer] = bytearray()

    # -- exchanging ----------------------------------------------------------------------------

    def exchange(
        self,
        message: bytes | dict[int, bytes],
        *,
        deadline: float,
        timeout: float,
        describe: Callable[[int], str] = str,
    ) -> dict[int, Message]:
        """Send ``message`` (or ``message[peer]``) to every peer and return each peer's next
        message: also a barrier."""
        outgoing = {
            peer: memoryview(message[peer] if isinstance(message, dict) else message)
            for peer in self._peers
        }
        received: dict[int, Message] = {}
        for peer in self._peers:
            parsed = self._parse(peer)
            if parsed is not None:
                received[peer] = parsed
        selector = selectors.DefaultSelector()
        try:
            # every peer is watched for reading, even one whose message is in: its death must
            # fail this exchange too, or a peer that noticed it first would leave us waiting
            for peer, connection in self._peers.items():
                selector.register(connection, selectors.EVENT_READ | selectors.EVENT_WRITE, peer)
            while outgoing or len(received) < len(self._peers):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    missing = sorted(set(self._peers) - set(received)) or sorted(outgoing)
                    raise CollectiveTimeoutError(self.group_name, missing, timeout)
                for key, mask in selector.select(remaining):
                    peer = key.data
                    if mask & selectors.EVENT_READ:
                        self._receive(peer, describe)
                        if peer not in received:
                            parsed = self._parse(peer)
                            if parsed is not None:
                                received[peer] = parsed
                    if mask & selectors.EVENT_WRITE and peer in outgoing:
                        self._send(peer, outgoing, describe)
                        if peer not in outgoing:
                            selector.modify(key.fileobj, selectors.EVENT_READ, peer)
        finally:
            selector.close()
        return received

    def _send(self, peer: int, outgoing: dict[int, memoryview], describe: Callable) -> None:
        try:
            sent = self._peers[peer].send(outgoing[peer])
        except BlockingIOError:
            return
        except OSError as error:
            raise CollectiveMemberDiedError(self.group_name, peer, describe(peer)) from error
        rest = outgoing[peer][sent:]
        if rest.nbytes:
            outgoing[peer] = rest
        else:
            del outgoing[peer]

    def _receive(self, peer: int, describe: Callable) -> None:
        try:
            chunk = self._peers[peer].recv(_RECV_CHUNK)
        except BlockingIOError:
            return
        except OSError as error:
            raise CollectiveMemberDiedError(self.group_name, peer, describe(peer)) from error
        if not chunk:
            raise CollectiveMemberDiedError(self.group_name, peer, describe(peer))
        self._inbox[peer] += chunk

    def _parse(self, peer: int) -> Message | None:
        inbox = self._inbox[peer]
        if len(inbox) < _FRAME.size:
            return None
        header_length, payload_length = _FRAME.unpack_from(inbox)
        end = _FRAME.size + header_length + payload_length
        if len(inbox) < end:
            return None
        try:
            header = json.loads(bytes(inbox[_FRAME.size : _FRAME.size + header_length]))
        except ValueError:
            raise CollectiveError(
                f"collective group {self.group_name!r}: rank {peer} sent a malformed message"
            ) from None
        payload = bytes(inbox[_FRAME.size + header_length : end])
        del inbox[:end]
        return header, payload

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()
        for connection in self._peers.values():
            with contextlib.suppress(OSError):
                connection.close()
        self._peers.clear()


def _socket_address(address: str) -> str:
    if not address.startswith(ABSTRACT_SCHEME):
        raise ValueError(f"not a local collective address: {address!r}")
    return "\0" + address[len(ABSTRACT_SCHEME) :]


def _recv_exact(connection: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        data += chunk
    return bytes(data)
