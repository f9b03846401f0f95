"""The fork server's wire format, shared by the driver (process.py) and the fork server.

Commands go driver → fork server as length-prefixed pickles (the driver is the fork server's
only writer and its parent, so nothing unauthenticated can send one). Events go back as JSON
lines, each one ``os.write`` below PIPE_BUF so that instance processes may share the pipe.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from typing import Any

HEADER = struct.Struct("!I")


def encode_command(command: dict[str, Any]) -> bytes:
    body = pickle.dumps(command, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def write_event(fd: int, event: dict[str, Any]) -> None:
    """Write one event line; one write below PIPE_BUF is atomic, so writers never interleave."""
    line = (json.dumps(event) + "\n").encode()
    os.write(fd, line)


class CommandReader:
    """Reassembles commands from reads of any size, in linear time.

    Each body lands in a buffer allocated once at its announced size, so a large command
    costs one copy, not one reallocation per read.
    """

    def __init__(self) -> None:
        self._header = bytearray()
        self._body: bytearray | None = None
        self._filled = 0

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        commands = []
        view = memoryview(data)
        while view:
            if self._body is None:
                take = HEADER.size - len(self._header)
                self._header += view[:take]
                view = view[take:]
                if len(self._header) == HEADER.size:
                    (length,) = HEADER.unpack(self._header)
                    self._header.clear()
                    self._body, self._filled = bytearray(length), 0
            if self._body is not None:
                take = min(len(view), len(self._body) - self._filled)
                self._body[self._filled : self._filled + take] = view[:take]
                self._filled += take
                view = view[take:]
                if self._filled == len(self._body):
                    commands.append(pickle.loads(self._body))
                    self._body = None
        return commands
