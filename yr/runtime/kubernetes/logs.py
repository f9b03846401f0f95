"""Streams what instance pods print to the driver's terminal, each line prefixed by its pod.

The Kubernetes counterpart of the local runtime's output forwarding: one ``pods/log`` follow
stream per pod of the session, started when the pod runs, ending when its container stops.
At the end of a session each stream is drained up to what the pod had printed by then.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
import time
from typing import Any

logger = logging.getLogger("yr")
DRAIN_TIMEOUT_S = 5.0  # at most this long for the streams to catch up at finalize()


class _Follow:
    """One pod's stream: the bytes received so far and the line not yet ended."""

    def __init__(self) -> None:
        self.received = 0
        self.pending = b""
        self.response: Any = None
        self.thread: threading.Thread | None = None
        self.done = False


class PodLogForwarder:
    """Follows each pod's log once and prints its lines as ``(pod-name) line``."""

    def __init__(self, *, core_api: Any, namespace: str) -> None:
        self._core = core_api
        self._namespace = namespace
        self._follows: dict[str, _Follow] = {}
        self._lock = threading.Condition()
        self._write_lock = threading.Lock()
        self._stopping = False

    def follow(self, pod_name: str) -> None:
        with self._lock:
            if self._stopping or pod_name in self._follows:
                return
            state = self._follows[pod_name] = _Follow()
            state.thread = threading.Thread(
                target=self._stream, args=(pod_name, state), name=f"yr-log-{pod_name}", daemon=True
            )
        state.thread.start()

    def _stream(self, pod_name: str, state: _Follow) -> None:
        try:
            response = self._core.read_namespaced_pod_log(
                pod_name, self._namespace, follow=True, _preload_content=False
            )
        except Exception as error:
            logger.debug("yr: cannot follow the log of pod %s: %s", pod_name, error)
            self._finish(state)
            return
        with self._lock:
            if self._stopping:
                _hang_up(response)
                self._lock.notify_all()
                state.done = True
                return
            state.response = response
        try:
            for chunk in response.stream(4096, decode_content=False):
                self._take(pod_name, state, chunk)
        except Exception:
            pass
        if state.pending:  # the last line had no newline
            self._emit(pod_name, state.pending)
            state.pending = b""
        self._finish(state)

    def _take(self, pod_name: str, state: _Follow, chunk: bytes) -> None:
        *lines, state.pending = (state.pending + chunk).split(b"\n")
        for line in lines:
            self._emit(pod_name, line)
        with self._lock:
            state.received += len(chunk)
            self._lock.notify_all()

    def _finish(self, state: _Follow) -> None:
        with self._lock:
            state.done = True
            self._lock.notify_all()

    def _emit(self, pod_name: str, line: bytes) -> None:
        text = f"({pod_name}) {line.decode(errors='replace')}\n"
        with self._write_lock:
            try:
                sys.stdout.write(text)
                sys.stdout.flush()
            except (OSError, ValueError):
                pass

    def stop(self, *, drain_timeout: float = DRAIN_TIMEOUT_S) -> None:
        """Print what each pod had printed by now (bounded wait), then hang up the streams."""
        with self._lock:
            follows = dict(self._follows)
        targets = {name: self._log_size(name) for name in follows}
        deadline = time.monotonic() + drain_timeout
        with self._lock:
            self._lock.wait_for(
                lambda: all(
                    state.done or state.received >= targets[name] for name, state in follows.items()
                ),
                timeout=max(0.0, deadline - time.monotonic()),
            )
            self._stopping = True
            responses = [s.response for s in follows.values() if s.response is not None]
        for response in responses:
            _hang_up(response)
        for state in follows.values():
            if state.thread is not None:  # its last partial line is printed as it ends
                state.thread.join(max(0.0, deadline - time.monotonic()) + 1.0)

    def _log_size(self, pod_name: str) -> int:
        """How many bytes the pod's log holds now (0 if it cannot be read)."""
        try:
            text = self._core.read_namespaced_pod_log(
                pod_name, self._namespace, _preload_content=False, _request_timeout=5
            )
            return len(text.data)
        except Exception:
            return 0


def _hang_up(response: Any) -> None:
    """End a stream another thread is blocked reading: shut its socket down (closing the
    response instead would wait for that reader, and releasing it would hand a busy
    connection back to the client's pool)."""
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
