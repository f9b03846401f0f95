"""Per-kind rules the generic store applies: pod defaults and grace, secrets, namespaces, CRDs."""

from __future__ import annotations

import base64
import copy
from typing import Any

from tests.cluster.meta import now_rfc3339
from tests.cluster.resources import ResourceType

POD_KEY = ("", "pods")
NAMESPACE_KEY = ("", "namespaces")
SECRET_KEY = ("", "secrets")
SERVICE_ACCOUNT_KEY = ("", "serviceaccounts")
CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")


def _container_defaults(container: dict[str, Any]) -> None:
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("imagePullPolicy", "IfNotPresent")
    resources = container.setdefault("resources", {})
    limits = resources.get("limits") or {}
    if limits:  # the real defaulting: requests default to limits
        requests = resources.setdefault("requests", {})
        for name, quantity in limits.items():
            requests.setdefault(name, quantity)


def qos_class(spec: dict[str, Any]) -> str:
    containers = spec.get("containers", []) + spec.get("initContainers", [])
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get(k)
        and (r.get("limits") or {}).get(k) == (r.get("requests") or {}).get(k)
        for r in resources
        for k in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"


def prepare_create(rt: ResourceType, obj: dict[str, Any]) -> None:
    """What the real registry's PrepareForCreate and defaulting do to a new object."""
    if rt.custom and rt.has_status:
        obj.pop("status", None)  # create cannot set status when the subresource exists
    if rt.key == POD_KEY:
        spec = obj.setdefault("spec", {})
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("serviceAccountName", spec.get("serviceAccount", "default"))
        spec.setdefault("priority", 0)
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            _container_defaults(container)
        obj["status"] = {"phase": "Pending", "qosClass": qos_class(spec)}
    elif rt.key == NAMESPACE_KEY:
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj["status"] = {"phase": "Active"}
        labels = obj["metadata"].setdefault("labels", {})
        labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
    elif rt.key == CRD_KEY:
        names = obj.get("spec", {}).get("names", {})
        obj["status"] = {
            "acceptedNames": copy.deepcopy(names),
            "storedVersions": [
                v["name"] for v in obj.get("spec", {}).get("versions", []) if v.get("storage")
            ],
            "conditions": [
                {
                    "type": t,
                    "status": "True",
                    "reason": r,
                    "message": m,
                    "lastTransitionTime": now_rfc3339(),
                }
                for t, r, m in (
                    ("NamesAccepted", "NoConflicts", "no conflicts found"),
                    ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                )
            ],
        }
    normalize(rt, obj)


def normalize(rt: ResourceType, obj: dict[str, Any]) -> None:
    """Rules applied on every write: Secret stringData is folded into base64 data."""
    if rt.key == SECRET_KEY:
        obj.setdefault("type", "Opaque")
        string_data = obj.pop("stringData", None) or {}
        data = obj.setdefault("data", {}) if string_data else obj.get("data")
        for key, value in string_data.items():
            assert data is not None
            data[key] = base64.b64encode(value.encode()).decode()


def grace_period(rt: ResourceType, obj: dict[str, Any], options: dict[str, Any]) -> int:
    """Seconds a delete waits for the node: only bound, non-terminal pods are graceful."""
    if rt.key != POD_KEY:
        return 0
    spec, status = obj.get("spec", {}), obj.get("status", {})
    if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
        return 0
    grace = options.get("gracePeriodSeconds")
    if grace is None:
        grace = spec.get("terminationGracePeriodSeconds", 30)
    return max(0, int(grace))


def blocks_removal(rt: ResourceType, obj: dict[str, Any]) -> bool:
    """Whether an object with a deletionTimestamp must stay (finalizers, a pod's running node)."""
    meta = obj.get("metadata", {})
    if meta.get("finalizers"):
        return True
    if rt.key == NAMESPACE_KEY and obj.get("spec", {}).get("finalizers"):
        return True
    return rt.key == POD_KEY and meta.get("deletionGracePeriodSeconds", 0) > 0


def mark_terminating(rt: ResourceType, obj: dict[str, Any]) -> None:
    if rt.key == NAMESPACE_KEY:
        obj.setdefault("status", {})["phase"] = "Terminating"


def scheduled_condition(node: str) -> dict[str, Any]:
    return {
        "type": "PodScheduled",
        "status": "True",
        "lastProbeTime": None,
        "lastTransitionTime": now_rfc3339(),
    }


def bind(pod: dict[str, Any], node: str) -> dict[str, Any]:
    """The effect of a pods/binding: nodeName set and PodScheduled=True."""
    pod = copy.deepcopy(pod)
    pod["spec"]["nodeName"] = node
    status = pod.setdefault("status", {})
    conditions = [c for c in status.get("conditions", []) if c.get("type") != "PodScheduled"]
    status["conditions"] = [*conditions, scheduled_condition(node)]
    return pod


def container_stopped(pod: dict[str, Any]) -> bool:
    """Whether every container of the pod has terminated (its log will not grow any more)."""
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return True
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all("terminated" in (st.get("state") or {}) for st in statuses)
