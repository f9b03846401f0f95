"""Helpers for tests that drive the local cluster: pod manifests and waiting on pod states."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes.client import CoreV1Api, V1Pod
from kubernetes.client.exceptions import ApiException

from tests.support import wait_for

TESTDATA = Path(__file__).resolve().parent / "testdata"
GRPC_HEALTH_SERVER = TESTDATA / "grpc_health_server.py"
POD_IP_ENV = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}


def pod_manifest(name: str, command: list[str], *, cpu: str = "100m", memory: str = "64Mi",
                 env: list[dict[str, Any]] | None = None, probe: dict[str, Any] | None = None,
                 grace: int | None = None, **spec: Any) -> dict[str, Any]:  # fmt: skip
    """A one-container, restartPolicy Never pod running `command` (image is ignored)."""
    container: dict[str, Any] = {
        "name": "main",
        "image": "ignored:latest",
        "command": command,
        "env": [POD_IP_ENV, *(env or [])],
        "resources": {"requests": {"cpu": cpu, "memory": memory}},
    }
    if probe:
        container["readinessProbe"] = probe
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }
    if grace is not None:
        body["spec"]["terminationGracePeriodSeconds"] = grace
    return body


def python_pod(name: str, code: str, **kw: Any) -> dict[str, Any]:
    """A pod whose container runs `python -c code`."""
    return pod_manifest(name, ["python", "-c", code], **kw)


def grpc_server_pod(name: str, port: int = 50051, **kw: Any) -> dict[str, Any]:
    """A pod serving gRPC health on its podIP, with a gRPC readiness probe as the operator sets."""
    probe = {"grpc": {"port": port}, "periodSeconds": 1}
    env = [{"name": "PORT", "value": str(port)}]
    return pod_manifest(name, ["python", str(GRPC_HEALTH_SERVER)], env=env, probe=probe, **kw)


def wait_pod(core: CoreV1Api, namespace: str, name: str, predicate: Callable[[V1Pod], Any],
             what: str, timeout: float = 20.0) -> V1Pod:  # fmt: skip
    """The pod once `predicate(pod)` holds."""

    def check() -> V1Pod | None:
        pod = core.read_namespaced_pod(name, namespace)
        return pod if predicate(pod) else None

    return wait_for(check, timeout=timeout, what=f"pod {namespace}/{name}: {what}")


def wait_pod_gone(core: CoreV1Api, namespace: str, name: str, timeout: float = 20.0) -> None:
    def gone() -> bool:
        try:
            core.read_namespaced_pod(name, namespace)
        except ApiException as error:
            return error.status == 404
        return False

    wait_for(gone, timeout=timeout, what=f"pod {namespace}/{name} to be gone")


def is_ready(pod: V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def terminated(pod: V1Pod) -> Any:
    """The first container's terminated state, or None."""
    statuses = pod.status.container_statuses or []
    return statuses[0].state.terminated if statuses and statuses[0].state else None


def container_pid(pod: V1Pod) -> int:
    """The emulated node reports containerID `emulated://<pid>`."""
    return int(pod.status.container_statuses[0].container_id.split("://")[1])
