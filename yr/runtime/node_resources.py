"""``yr.resources()`` entries in openYuanrong's documented shape, from either runtime's facts.

openYuanrong returns one dict per node: ``id``, ``status`` (0 when the node is usable),
``capacity`` and ``allocatable`` as ``{"CPU": millicores, "Memory": MB}`` (floats).
"""

from __future__ import annotations

import os
from typing import Any

NODE_READY = 0
NODE_NOT_READY = 1
_MIB = 1024 * 1024
_QUANTITY_SUFFIXES = {
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
}


def entry(node_id: str, *, ready: bool, capacity: dict[str, float], allocatable: dict[str, float]):
    return {
        "id": node_id,
        "status": NODE_READY if ready else NODE_NOT_READY,
        "capacity": {name: float(value) for name, value in capacity.items()},
        "allocatable": {name: float(value) for name, value in allocatable.items()},
    }


def physical_memory_mb() -> float:
    """This machine's memory, the local runtime's memory capacity."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / _MIB


def cpu_millicores(quantity: str | None) -> float:
    """A Kubernetes CPU quantity ("2", "1500m") in millicores."""
    if not quantity:
        return 0.0
    if quantity.endswith("m"):
        return float(quantity[:-1])
    return float(quantity) * 1000


def memory_mb(quantity: str | None) -> float:
    """A Kubernetes memory quantity ("8Gi", "512Mi", "1000000k", bytes) in MB (MiB)."""
    if not quantity:
        return 0.0
    for suffix in sorted(_QUANTITY_SUFFIXES, key=len, reverse=True):
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * _QUANTITY_SUFFIXES[suffix] / _MIB
    return float(quantity) / _MIB


def kubernetes_node(node: Any, requested: dict[str, float]) -> dict[str, Any]:
    """A node's entry: its allocatable less what pods already request on it."""
    status = node.status
    conditions = (status.conditions or []) if status else []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    capacity = (status.capacity or {}) if status else {}
    allocatable = (status.allocatable or capacity) if status else {}
    return entry(
        node.metadata.name,
        ready=ready,
        capacity={
            "CPU": cpu_millicores(capacity.get("cpu")),
            "Memory": memory_mb(capacity.get("memory")),
        },
        allocatable={
            "CPU": max(0.0, cpu_millicores(allocatable.get("cpu")) - requested.get("CPU", 0.0)),
            "Memory": max(0.0, memory_mb(allocatable.get("memory")) - requested.get("Memory", 0.0)),
        },
    )


def pod_requests(pods: list[Any]) -> dict[str, dict[str, float]]:
    """Per node name: CPU (millicores) and Memory (MB) requested by its running pods."""
    by_node: dict[str, dict[str, float]] = {}
    for pod in pods:
        node = pod.spec.node_name if pod.spec else None
        phase = pod.status.phase if pod.status else None
        if not node or phase in ("Succeeded", "Failed"):
            continue
        totals = by_node.setdefault(node, {"CPU": 0.0, "Memory": 0.0})
        for container in pod.spec.containers or []:
            requests = (container.resources.requests or {}) if container.resources else {}
            totals["CPU"] += cpu_millicores(requests.get("cpu"))
            totals["Memory"] += memory_mb(requests.get("memory"))
    return by_node
