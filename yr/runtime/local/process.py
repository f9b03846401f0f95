"""The driver's side of the fork server: starts it, sends commands, reads its events."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

from yr.runtime.local.zygote import encode_command


class ZygoteProcess:
    """One fork-server child of the driver; its events are passed to ``on_event``."""

    def __init__(self, *, on_event: Callable[[dict[str, Any]], None]) -> None:
        env = dict(os.environ)
        # Instances must import what the driver can: same sys.path (script dir first).
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "yr.runtime.local.zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        self.pid = self._process.pid
        self._on_event = on_event
        self._write_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read_events, name="yr-zygote", daemon=True)
        self._reader.start()

    def _read_events(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self._on_event(event)
        self._on_event({"event": "zygote-exited"})

    def send(self, command: dict[str, Any]) -> None:
        data = encode_command(command)
        with self._write_lock:
            stdin = self._process.stdin
            if stdin is None or stdin.closed:
                raise RuntimeError("the local runtime's fork server has stopped")
            stdin.write(data)
            stdin.flush()

    def close(self, *, timeout: float = 10.0) -> None:
        """EOF on its stdin makes it kill every instance and exit."""
        with self._write_lock:
            if self._process.stdin is not None and not self._process.stdin.closed:
                with contextlib.suppress(BrokenPipeError):
                    self._process.stdin.close()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join(timeout)
