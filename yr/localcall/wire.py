"""The fast path's framing: a hello that authenticates a connection, then numbered frames.

A connection opens with one hello frame: a magic, the protocol version and the session token
(at most ``MAX_TOKEN_BYTES``). The server reads exactly that much and nothing more before it
has checked the token, so an unauthenticated peer can make it buffer a few hundred bytes at
most. After the hello, each frame is a fixed header (request id, kind, body length) and a body:
a serialized ``CallRequest``, ``CallReply``, or a refusal (a gRPC status code and a message,
so both transports fail a call the same way). A request may be preceded by a ``WAITED`` frame:
a hint that its caller waited for its last reply asleep on a given CPU (colocation.py).
"""

from __future__ import annotations

import os
import socket
import struct

import grpc

MAGIC = b"yrL1"
HELLO = struct.Struct("!4sHH")  # magic, protocol version, token length
MAX_TOKEN_BYTES = 256
FRAME = struct.Struct("!IBQ")  # request id, kind, body length
REQUEST, REPLY, REFUSAL = 0, 1, 2
# Before a request: its caller waited for its last reply asleep on this CPU (a hint, see
# yr/localcall/colocation.py; a server that does not know the kind skips the frame).
WAITED = 3
REFUSAL_CODE = struct.Struct("!H")
TIMEVAL = struct.Struct("@ll")  # struct timeval, for SO_RCVTIMEO
CONNECTION_ID = 0  # a refusal of the whole connection (the hello), not of one request
ENVIRONMENT_KEY = "YR_TRANSPORT"
TRANSPORTS = ("local", "grpc")

_CODES = {code.value[0]: code for code in grpc.StatusCode}


def transport() -> str:
    """``local`` (the fast path where an instance offers it) or ``grpc`` (``YR_TRANSPORT``)."""
    chosen = os.environ.get(ENVIRONMENT_KEY, "local").strip().lower() or "local"
    if chosen not in TRANSPORTS:
        raise ValueError(
            f"{ENVIRONMENT_KEY}={os.environ[ENVIRONMENT_KEY]!r} is not a transport yr knows: "
            f"use one of {', '.join(TRANSPORTS)}"
        )
    return chosen


def hello(token: str, version: int) -> bytes:
    encoded = token.encode()
    if len(encoded) > MAX_TOKEN_BYTES:
        raise ValueError(f"a session token is at most {MAX_TOKEN_BYTES} bytes")
    return HELLO.pack(MAGIC, version, len(encoded)) + encoded


def frame(request_id: int, kind: int, body: bytes) -> bytes:
    return FRAME.pack(request_id, kind, len(body)) + body


def take_frames(buffer: bytearray) -> list[tuple[int, int, bytes]]:
    """The complete frames at the start of ``buffer`` (removed from it): (id, kind, body)."""
    frames = []
    start = 0
    while len(buffer) - start >= FRAME.size:
        request_id, kind, length = FRAME.unpack_from(buffer, start)
        end = start + FRAME.size + length
        if len(buffer) < end:
            break
        frames.append((request_id, kind, bytes(buffer[start + FRAME.size : end])))
        start = end
    if start:
        del buffer[:start]
    return frames


def set_receive_timeout(sock: socket.socket, seconds: float) -> None:
    """Bound each blocking ``recv`` on ``sock`` (``SO_RCVTIMEO``) to ``seconds``, at least a
    microsecond: a zero bound would mean none, a wait with no end."""
    whole = int(seconds)
    micros = max(round((seconds - whole) * 1e6), 0 if whole else 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, TIMEVAL.pack(whole, micros))


def refusal(request_id: int, code: grpc.StatusCode, message: str) -> bytes:
    return frame(request_id, REFUSAL, REFUSAL_CODE.pack(code.value[0]) + message.encode())


def parse_refusal(body: bytes) -> tuple[grpc.StatusCode, str]:
    (number,) = REFUSAL_CODE.unpack_from(body)
    message = bytes(body[REFUSAL_CODE.size :]).decode(errors="replace")
    return _CODES.get(number, grpc.StatusCode.UNKNOWN), message
