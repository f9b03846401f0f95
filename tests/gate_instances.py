"""The gate instance the local call-path tests hold a call open with (importable by instances)."""

from __future__ import annotations

import os
import threading
import time

import yr

RELEASE_WAIT_S = 120.0  # a test that forgets to release its gate still ends


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class Gate:
    """Answers ``wait_for_file`` only once the test has created that file."""

    def wait_for_file(self, path: str) -> str:
        """The name of the thread that ran the call, once ``path`` exists."""
        deadline = time.monotonic() + RELEASE_WAIT_S
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        return threading.current_thread().name

    def ping(self) -> str:
        return "pong"

    def blob(self, size: int) -> bytes:
        return b"x" * size

    def take(self, index: int, payload: bytes) -> int:
        return index

    def pid(self) -> int:
        return os.getpid()
