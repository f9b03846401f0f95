"""Readiness probes as the kubelet runs them: gRPC health, exec, TCP socket and HTTP GET."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.cluster.podenv import Launch

# Before the first success we probe this often instead of every periodSeconds (an emulation
# shortcut that makes pods Ready within ~0.1 s of serving; afterwards the period is honoured).
EAGER_PERIOD = 0.1


def _port(value: Any, container: dict[str, Any]) -> int:
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    for port in container.get("ports") or []:
        if port.get("name") == value:
            return int(port["containerPort"])
    raise ValueError(f"unknown named port {value!r}")


class Prober:
    """One container's readiness probe with the kubelet's thresholds."""

    def __init__(
        self,
        probe: dict[str, Any],
        container: dict[str, Any],
        pod_ip: str,
        launch: Launch,
        started: float,
    ) -> None:
        self.probe = probe
        self.container = container
        self.pod_ip = pod_ip
        self.launch = launch
        self.period = float(probe.get("periodSeconds", 10))
        self.timeout = float(probe.get("timeoutSeconds", 1))
        self.success_threshold = int(probe.get("successThreshold", 1))
        self.failure_threshold = int(probe.get("failureThreshold", 3))
        self.next_due = started + float(probe.get("initialDelaySeconds", 0))
        self.ready = False
        self.ever_succeeded = False
        self._streak = 0  # consecutive results that disagree with `ready`

    def due_in(self) -> float:
        return max(0.0, self.next_due - time.monotonic())

    def run_if_due(self) -> bool:
        """Probe if it is time; return whether the readiness changed."""
        if time.monotonic() < self.next_due:
            return False
        ok = self._check()
        self.ever_succeeded |= ok
        period = self.period if self.ever_succeeded else min(self.period, EAGER_PERIOD)
        self.next_due = time.monotonic() + period
        if ok == self.ready:
            self._streak = 0
            return False
        self._streak += 1
        if self._streak >= (self.success_threshold if ok else self.failure_threshold):
            self.ready, self._streak = ok, 0
            return True
        return False

    def _check(self) -> bool:
        try:
            if "grpc" in self.probe:
                return self._grpc(self.probe["grpc"])
            if "exec" in self.probe:
                done = subprocess.run(
                    self.probe["exec"]["command"],
                    env=self.launch.env,
                    cwd=self.launch.cwd,
                    timeout=self.timeout,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                return done.returncode == 0
            if "tcpSocket" in self.probe:
                spec = self.probe["tcpSocket"]
                address = (spec.get("host") or self.pod_ip, _port(spec["port"], self.container))
                with socket.create_connection(address, timeout=self.timeout):
                    return True
            if "httpGet" in self.probe:
                spec = self.probe["httpGet"]
                port = _port(spec["port"], self.container)
                url = f"http://{spec.get('host') or self.pod_ip}:{port}{spec.get('path', '/')}"
                with urllib.request.urlopen(url, timeout=self.timeout) as response:
                    return 200 <= response.status < 400
        except (OSError, subprocess.SubprocessError, ValueError, grpc.RpcError):
            return False
        return True  # a probe with no handler we know: treat as passing

    def _grpc(self, spec: dict[str, Any]) -> bool:
        # A fresh channel per probe, as the kubelet dials per probe: a reused channel that
        # failed once sits in reconnect backoff (1 s+) and would delay readiness.
        address = f"{self.pod_ip}:{_port(spec['port'], self.container)}"
        with grpc.insecure_channel(address) as channel:
            request = health_pb2.HealthCheckRequest(service=spec.get("service", ""))
            reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=self.timeout)
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def close(self) -> None:
        """Nothing held between probes (kept for symmetry with the pod worker's cleanup)."""
