"""Forwards what instances print to the driver's terminal, each line prefixed with its origin."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import sys
import tempfile
import threading


class OutputForwarder:
    """A Unix socket that instance processes connect their stdout and stderr to."""

    def __init__(self, *, directory: str | None = None) -> None:
        self._owns_directory = directory is None
        self._directory = directory or tempfile.mkdtemp(prefix="yr-logs-")
        self.path = os.path.join(self._directory, "output.sock")
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
            self._streams[connection] = {"header": None, "buffer": b""}
            self._selector.register(connection, selectors.EVENT_READ, "stream")

    def _read(self, connection: socket.socket) -> None:
        state = self._streams[connection]
        try:
            data = connection.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            if state["buffer"]:
                self._emit(state, state["buffer"])
            self._close(connection)
            return
        state["buffer"] += data
        *lines, state["buffer"] = state["buffer"].split(b"\n")
        for line in lines:
            if state["header"] is None:
                state["header"] = json.loads(line)
            else:
                self._emit(state, line)

    def _emit(self, state: dict, line: bytes) -> None:
        header = state["header"] or {"stream": "stdout", "prefix": "instance"}
        stream = sys.stderr if header["stream"] == "stderr" else sys.stdout
        text = f"({header['prefix']}) {line.decode(errors='replace')}\n"
        with self._write_lock:
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError):
                pass  # the driver's terminal is gone; nothing left to tell

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
        try:
            os.unlink(self.path)
            if self._owns_directory:
                os.rmdir(self._directory)
        except OSError:
            pass
