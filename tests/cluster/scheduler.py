"""The scheduler: binds pending pods to Ready nodes whose allocatable CPU/memory fits them.

Otherwise it marks the pod `PodScheduled=False/Unschedulable` with the real message
(`0/1 nodes are available: 1 Insufficient cpu. preemption: ...`) and records a
FailedScheduling Event; it retries whenever pods or nodes change, so freed capacity is used.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from typing import Any

from kubernetes.utils import parse_quantity

from tests.cluster import affinity, kinds
from tests.cluster.controller import Controller
from tests.cluster.meta import ApiError, now_rfc3339
from tests.cluster.store import Store
from tests.cluster.watches import Event

log = logging.getLogger("scheduler")
SCHEDULER_NAME = "default-scheduler"
Obj = dict[str, Any]


def millicores(quantity: str | int | float) -> int:
    """CPU in millicores, rounded up as the scheduler does."""
    return int((parse_quantity(quantity) * 1000).to_integral_value(rounding="ROUND_CEILING"))


def bytes_of(quantity: str | int | float) -> int:
    return int(parse_quantity(quantity).to_integral_value(rounding="ROUND_CEILING"))


def pod_requests(pod: Obj) -> Counter[str]:
    """cpu (millicores), memory (bytes) and pods, including the init containers' maximum."""
    spec = pod.get("spec", {})

    def of(container: Obj) -> Counter[str]:
        requests = (container.get("resources") or {}).get("requests") or {}
        total: Counter[str] = Counter()
        if "cpu" in requests:
            total["cpu"] = millicores(requests["cpu"])
        if "memory" in requests:
            total["memory"] = bytes_of(requests["memory"])
        for name, value in requests.items():  # extended resources: whole counts
            if "/" in name:
                total[name] = int(value)
        return total

    total: Counter[str] = Counter()
    for container in spec.get("containers", []):
        total += of(container)
    for container in spec.get("initContainers", []):
        init = of(container)
        for key in ("cpu", "memory"):
            total[key] = max(total[key], init[key])
    total["pods"] = 1
    return total


def allocatable(node: Obj) -> Counter[str]:
    status = node.get("status", {})
    values = status.get("allocatable") or status.get("capacity") or {}
    extended = {name: int(value) for name, value in values.items() if "/" in name}
    return Counter(
        cpu=millicores(values.get("cpu", 0)),
        memory=bytes_of(values.get("memory", 0)),
        pods=int(values.get("pods", 110)),
        **extended,
    )


def node_ready(node: Obj) -> bool:
    conditions = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def occupies_node(pod: Obj) -> bool:
    """A bound pod holds its requests until it is terminal or gone (terminating still counts)."""
    return bool(pod["spec"].get("nodeName")) and pod.get("status", {}).get("phase") not in (
        "Succeeded",
        "Failed",
    )


def bind_pod(store: Store, namespace: str, name: str, node: str) -> None:
    """What a pods/binding does: spec.nodeName and PodScheduled=True in one write."""
    pods = store.registry.get("", "v1", "pods")
    assert pods is not None
    store.update(pods, namespace, name, lambda p: kinds.bind(p, node), "binding")


class Scheduler(Controller):
    name = "scheduling"

    def concerns(self, event: Event) -> bool:
        return event.key in (("", "pods"), ("", "nodes"))

    def pass_once(self) -> None:
        self.schedule_once()

    def _types(self):
        reg = self.store.registry
        return reg.get("", "v1", "pods"), reg.get("", "v1", "nodes")

    def schedule_once(self) -> None:
        pods_rt, nodes_rt = self._types()
        assert pods_rt is not None and nodes_rt is not None
        pods, nodes = self.store.items(pods_rt), self.store.items(nodes_rt)
        used = {n["metadata"]["name"]: Counter() for n in nodes}
        by_name = {n["metadata"]["name"]: n for n in nodes}
        # Bound pods with their nodes, for inter-pod (anti-)affinity.
        placed: list[tuple[Obj, Obj | None]] = []
        for pod in pods:
            if occupies_node(pod):
                placed.append((pod, by_name.get(pod["spec"]["nodeName"])))
            if occupies_node(pod) and pod["spec"]["nodeName"] in used:
                used[pod["spec"]["nodeName"]] += pod_requests(pod)
        pending = [
            p
            for p in pods
            if not p["spec"].get("nodeName")
            and not p["metadata"].get("deletionTimestamp")
            and p["spec"].get("schedulerName", SCHEDULER_NAME) == SCHEDULER_NAME
        ]
        pending.sort(
            key=lambda p: (
                -p["spec"].get("priority", 0),
                p["metadata"]["creationTimestamp"],
                int(p["metadata"]["resourceVersion"]),
            )
        )
        for pod in pending:
            request = pod_requests(pod)
            reasons: Counter[str] = Counter()
            fitting = []
            for node in nodes:
                why = self._filter(pod, node, request, used[node["metadata"]["name"]])
                if not why:
                    mismatch = affinity.filter_reason(pod, node, placed)
                    why = [mismatch] if mismatch else []
                if why:
                    reasons.update(why)
                else:
                    fitting.append(node)
            meta = pod["metadata"]
            if fitting:
                # Preferred (anti-)affinity first, then LeastAllocated: the most free CPU.
                best = max(
                    fitting,
                    key=lambda n: (
                        affinity.preference_score(pod, n, placed),
                        allocatable(n)["cpu"] - used[n["metadata"]["name"]]["cpu"],
                    ),
                )
                name = best["metadata"]["name"]
                used[name] += request
                placed.append((pod, best))
                bind_pod(self.store, meta["namespace"], meta["name"], name)
                self._event(
                    pod,
                    "Normal",
                    "Scheduled",
                    f"Successfully assigned {meta['namespace']}/{meta['name']} to {name}",
                )
            else:
                self._unschedulable(pod, self._message(len(nodes), reasons))

    def _filter(self, pod: Obj, node: Obj, request: Counter[str], used: Counter[str]) -> list[str]:
        if not node_ready(node):
            return ["node(s) had untolerated taint {node.kubernetes.io/not-ready: }"]
        if node.get("spec", {}).get("unschedulable"):
            return ["node(s) were unschedulable"]
        labels = node["metadata"].get("labels") or {}
        selector = pod["spec"].get("nodeSelector") or {}
        if any(labels.get(k) != v for k, v in selector.items()):
            return ["node(s) didn't match Pod's node affinity/selector"]
        free = allocatable(node)
        why = []
        if used["pods"] + 1 > free["pods"]:
            why.append("Too many pods")
        for resource in ("cpu", "memory", *sorted(r for r in request if "/" in r)):
            if request[resource] and used[resource] + request[resource] > free[resource]:
                why.append(f"Insufficient {resource}")
        return why

    @staticmethod
    def _message(node_count: int, reasons: Counter[str]) -> str:
        if not node_count:
            return "no nodes available to schedule pods"
        parts = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        # The real scheduler appends its preemption verdict; we never preempt (no victims).
        return (
            f"0/{node_count} nodes are available: {parts}. preemption: 0/{node_count} nodes are "
            f"available: {node_count} No preemption victims found for incoming pod."
        )

    def _unschedulable(self, pod: Obj, message: str) -> None:
        conditions = pod.get("status", {}).get("conditions") or []
        current = next((c for c in conditions if c.get("type") == "PodScheduled"), None)
        if (
            current
            and current.get("reason") == "Unschedulable"
            and current.get("message") == message
        ):
            return  # already says so; rewriting would only churn resourceVersions
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": None,
            "lastTransitionTime": now_rfc3339(),
        }

        def mark(p: Obj) -> Obj:
            status = p.setdefault("status", {})
            others = [c for c in status.get("conditions", []) if c.get("type") != "PodScheduled"]
            status["conditions"] = [*others, condition]
            return p

        pods_rt, _ = self._types()
        assert pods_rt is not None
        meta = pod["metadata"]
        self.store.update(pods_rt, meta["namespace"], meta["name"], mark, "status")
        self._event(pod, "Warning", "FailedScheduling", message)

    def _event(self, pod: Obj, kind: str, reason: str, message: str) -> None:
        events_rt = self.store.registry.get("", "v1", "events")
        assert events_rt is not None
        meta, now = pod["metadata"], now_rfc3339()
        with contextlib.suppress(ApiError):  # e.g. the namespace is terminating
            self._create_event(events_rt, meta, now, kind, reason, message)

    def _create_event(self, events_rt, meta: Obj, now: str, kind: str, reason: str, message: str):
        self.store.create(
            events_rt,
            meta["namespace"],
            {
                "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
                "involvedObject": {
                    "kind": "Pod",
                    "apiVersion": "v1",
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
                "reason": reason,
                "message": message,
                "type": kind,
                "count": 1,
                "source": {"component": SCHEDULER_NAME},
                "reportingComponent": SCHEDULER_NAME,
                "reportingInstance": f"{SCHEDULER_NAME}-emulated",
                "firstTimestamp": now,
                "lastTimestamp": now,
            },
        )
