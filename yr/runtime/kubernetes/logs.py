"""Streams what instance pods print to the driver's terminal, each line prefixed by its pod.

The Kubernetes counterpart of the local runtime's output forwarding: one ``pods/log`` follow
stream per pod of the session, started when the pod runs, ending when its container stops.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
from typing import Any

logger = logging.getLogger("yr")


class PodLogForwarder:
    """Follows each pod's log once and prints its lines as ``(pod-name) line``."""

    def __init__(self, *, core_api: Any, namespace: str) -> None:
        self._core = core_api
        self._namespace = namespace
        self._following: set[str] = set()
        self._responses: list[Any] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stopping = False

    def follow(self, pod_name: str) -> None:
        with self._lock:
            if self._stopping or pod_name in self._following:
                return
            self._following.add(pod_name)
        threading.Thread(
            target=self._stream, args=(pod_name,), name=f"yr-log-{pod_name}", daemon=True
        ).start()

    def _stream(self, pod_name: str) -> None:
        try:
            response = self._core.read_namespaced_pod_log(
                pod_name, self._namespace, follow=True, _preload_content=False
            )
        except Exception as error:
            logger.debug("yr: cannot follow the log of pod %s: %s", pod_name, error)
            return
        with self._lock:
            if self._stopping:
                _hang_up(response)
                return
            self._responses.append(response)
        pending = b""
        try:
            for chunk in response.stream(4096, decode_content=False):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    self._emit(pod_name, line)
        except Exception:
            pass
        if pending:
            self._emit(pod_name, pending)

    def _emit(self, pod_name: str, line: bytes) -> None:
        text = f"({pod_name}) {line.decode(errors='replace')}\n"
        with self._write_lock:
            try:
                sys.stdout.write(text)
                sys.stdout.flush()
            except (OSError, ValueError):
                pass

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            responses, self._responses = self._responses, []
        for response in responses:
            _hang_up(response)


def _hang_up(response: Any) -> None:
    """End a stream another thread is blocked reading: shut its socket down (closing the
    response instead would wait for that reader, and releasing it would hand a busy
    connection back to the client's pool)."""
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
