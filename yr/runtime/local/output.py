"""Forwards what instances print to the driver's terminal, each line prefixed with its origin."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import sys
import threading

from yr.runtime.local.logbook import LogBook


class LineSplitter:
    """Cuts an instance's byte stream into lines as a terminal would show them, in linear time.

    ``\n`` ends a line. ``\r`` (a progress bar redrawing itself) ends a frame that the next
    one overwrites: each read yields only the newest frame, ended by ``\r`` so the driver's
    terminal redraws it in place, and a line shows its last frame. Each byte is scanned at
    most twice, however long the stream goes without a newline.
    """

    def __init__(self) -> None:
        self._pending = bytearray()  # bytes after the last separator
        self._frame = b""  # the frame last shown for the line not yet ended

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """The ``(text, ending)`` pieces that ``data`` completes; ending is ``\n`` or ``\r``."""
        if b"\n" not in data and b"\r" not in data:
            self._pending += data
            return []
        *lines, tail = (bytes(self._pending) + data).split(b"\n")
        self._pending = bytearray()
        pieces = [(self._end_line(line), b"\n") for line in lines]
        drawn, cut, rest = tail.rpartition(b"\r")
        if cut:
            frame = _last_frame(drawn)
            if frame:
                pieces.append((frame, b"\r"))
                self._frame = frame
        self._pending += rest
        return pieces

    def finish(self) -> list[tuple[bytes, bytes]]:
        """At EOF: the unfinished line, if any, ended by a newline."""
        if not self._pending and not self._frame:
            return []
        return [(self._end_line(bytes(self._pending)), b"\n")]

    def _end_line(self, line: bytes) -> bytes:
        frame = _last_frame(line) or self._frame
        self._frame = b""
        return frame


def _last_frame(line: bytes) -> bytes:
    """What a terminal shows of ``line``: its last non-empty carriage-return segment."""
    return line.rstrip(b"\r").rpartition(b"\r")[2]


class OutputForwarder:
    """A Unix socket that instance processes connect their stdout and stderr to.

    Every line is kept in ``book`` (for ``yr logs``); ``echo`` also shows it in the driver's
    terminal.
    """

    def __init__(self, *, directory: str, echo: bool = True) -> None:
        """``directory``: the session's (sessiondir.py), which outlives the socket."""
        self.book = LogBook()
        self._echo = echo
        self.path = os.path.join(directory, "output.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        os.chmod(self.path, 0o600)
        self._listener.listen(512)
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._wake_read, self._wake_write = socket.socketpair()
        self._selector.register(self._wake_read, selectors.EVENT_READ, "wake")
        self._streams: dict[socket.socket, dict] = {}
        self._stopping = False
        self._write_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="yr-output", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            for key, _ in self._selector.select(timeout=None if not self._stopping else 0.5):
                if key.data == "wake":
                    key.fileobj.recv(64)
                elif key.fileobj is self._listener:
                    self._accept()
                else:
                    self._read(key.fileobj)
            if self._stopping and not self._streams:
                return
            if self._stopping and self._deadline_passed():
                for connection in list(self._streams):
                    self._close(connection)
                return

    def _deadline_passed(self) -> bool:
        import time

        return time.monotonic() > self._stop_deadline

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except BlockingIOError:
                return
            connection.setblocking(False)
            self._streams[connection] = {"header": None, "splitter": LineSplitter()}
            self._selector.register(connection, selectors.EVENT_READ, "stream")

    def _read(self, connection: socket.socket) -> None:
        state = self._streams[connection]
        try:
            data = connection.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        splitter: LineSplitter = state["splitter"]
        pieces = splitter.feed(data) if data else splitter.finish()
        if pieces and state["header"] is None:
            header, _ = pieces.pop(0)  # the instance's first line says who it is
            state["header"] = json.loads(header)
        self._emit(state, pieces)
        if not data:
            self._close(connection)

    def _emit(self, state: dict, pieces: list[tuple[bytes, bytes]]) -> None:
        if not pieces:
            return
        header = state["header"] or {"stream": "stdout", "prefix": "instance"}
        self._keep(header, pieces)
        if not self._echo:
            return
        stream = sys.stderr if header["stream"] == "stderr" else sys.stdout
        prefix = f"({header['prefix']}) "
        # One write per read, not per piece: a progress bar sends thousands of tiny pieces.
        text = "".join(
            prefix + piece.decode(errors="replace") + ending.decode() for piece, ending in pieces
        )
        with self._write_lock:
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError):
                pass  # the driver's terminal is gone; nothing left to tell

    def _keep(self, header: dict, pieces: list[tuple[bytes, bytes]]) -> None:
        # The prefix is "<instance id> pid=<pid>"; a redrawn progress frame is not a line yet.
        instance_id = header["prefix"].split(" ", 1)[0]
        for piece, ending in pieces:
            if ending == b"\n":
                self.book.add(instance_id, header["stream"], piece.decode(errors="replace"))

    def _close(self, connection: socket.socket) -> None:
        self._streams.pop(connection, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(connection)
        connection.close()

    def stop(self, *, drain_timeout: float = 2.0) -> None:
        """Stop once every instance's output has reached EOF, or after ``drain_timeout``."""
        import time

        self._stop_deadline = time.monotonic() + drain_timeout
        self._stopping = True
        self._wake_write.send(b"x")
        self._thread.join(drain_timeout + 1.0)
        self._selector.close()
        self._listener.close()
        self._wake_read.close()
        self._wake_write.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
