"""Resource groups as pure functions: placeholder pods, the admission plan, bundle choice."""

from __future__ import annotations

import dataclasses
import datetime
import os
import random
from typing import Any

from yr import contract as c

from .builders import RUN_AS_USER, container_security_context, default_image
from .status import unschedulable

ATTEMPT_LABEL = "yr.dev/attempt"
REBIND_ATTEMPT = 0  # attempts count from 1; 0 marks a lost bundle's new placeholder
HOSTNAME = "kubernetes.io/hostname"
RETRY_CAP_SECONDS = 30.0
# A placeholder only holds capacity; the instance image is on the nodes already, and its
# python waits for SIGTERM doing nothing.
PLACEHOLDER_COMMAND = ["python", "-c", "import signal; signal.pause()"]


def bind_seconds() -> float:
    """How long a partial reservation may hold capacity before it is released (operator env)."""
    return float(os.environ.get("YR_RESOURCE_GROUP_BIND_SECONDS", "10"))


def retry_seconds(attempt: int, *, base: float | None = None) -> float:
    """Delay before reservation attempt ``attempt + 1``: exponential, capped, with jitter so
    that two released groups do not collide again on the same beat."""
    if base is None:
        base = float(os.environ.get("YR_RESOURCE_GROUP_RETRY_SECONDS", "1.0"))
    delay = min(RETRY_CAP_SECONDS, base * 2 ** max(0, attempt - 1))
    return delay * (0.5 + random.random() / 2)


def iso(ts: float) -> str:
    when = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def group_owner_reference(group: dict[str, Any]) -> dict[str, Any]:
    meta = group["metadata"]
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.GROUP_KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def bundle_requests(bundle: dict[str, Any]) -> dict[str, Any]:
    """A bundle's resources as a container's ``resources`` (extended ones as limits too)."""
    requests = {"cpu": f"{int(bundle['cpu'])}m", "memory": f"{int(bundle['memory'])}Mi"}
    custom = {
        item["name"]: str(int(item["quantity"])) for item in bundle.get("customResources") or []
    }
    resources: dict[str, Any] = {"requests": {**requests, **custom}}
    if custom:
        resources["limits"] = dict(custom)
    return resources


def placement_affinity(strategy: str, group: str, attempt: int) -> dict[str, Any]:
    """How the scheduler lays an attempt's placeholders out over nodes, per strategy."""
    term = {
        "labelSelector": {
            "matchLabels": {c.RESOURCE_GROUP_LABEL: group, ATTEMPT_LABEL: str(attempt)}
        },
        "topologyKey": HOSTNAME,
    }
    kind = "podAntiAffinity" if strategy in ("SPREAD", "STRICT_SPREAD") else "podAffinity"
    if strategy.startswith("STRICT_"):
        return {kind: {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    preferred = [{"weight": 100, "podAffinityTerm": term}]
    return {kind: {"preferredDuringSchedulingIgnoredDuringExecution": preferred}}


def build_placeholder_pod(
    group: dict[str, Any], *, bundle: int, attempt: int, image: str | None = None
) -> dict[str, Any]:
    """The pod that holds bundle ``bundle`` of a group for reservation attempt ``attempt``."""
    meta, spec = group["metadata"], group["spec"]
    name = meta["name"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": c.placeholder_name(name, bundle, attempt),
            "namespace": meta.get("namespace"),
            "labels": {
                c.APP_LABEL: c.PLACEHOLDER_APP_VALUE,
                c.RESOURCE_GROUP_LABEL: name,
                c.BUNDLE_LABEL: str(bundle),
                ATTEMPT_LABEL: str(attempt),
                c.SESSION_LABEL: str(spec.get("session", "")),
            },
            "ownerReferences": [group_owner_reference(group)],
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 0,
            "affinity": placement_affinity(spec.get("strategy") or "PACK", name, attempt),
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS_USER,
                "runAsGroup": RUN_AS_USER,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "placeholder",
                    "image": image or default_image(),
                    "command": list(PLACEHOLDER_COMMAND),
                    "resources": bundle_requests(spec["bundles"][bundle]),
                    "securityContext": container_security_context(),
                }
            ],
        },
    }


def in_bundle(pod: dict[str, Any], *, group: str, bundle: int, node: str) -> dict[str, Any]:
    """An instance pod bound straight to its bundle's node (the kubelet admits it there)."""
    pod["metadata"]["labels"].update({c.RESOURCE_GROUP_LABEL: group, c.BUNDLE_LABEL: str(bundle)})
    pod["spec"]["nodeName"] = node
    return pod


def attempt_of(pod: dict[str, Any]) -> int:
    try:
        return int((pod["metadata"].get("labels") or {}).get(ATTEMPT_LABEL, -1))
    except ValueError:
        return -1


def bundle_of(pod: dict[str, Any]) -> int:
    try:
        return int((pod["metadata"].get("labels") or {}).get(c.BUNDLE_LABEL, -1))
    except ValueError:
        return -1


def _unschedulable_message(pods: list[dict[str, Any]]) -> str:
    for pod in pods:
        if (scheduled := unschedulable(pod)) is not None:
            return scheduled.get("message") or scheduled.get("reason") or ""
    return ""


@dataclasses.dataclass(frozen=True)
class GroupPlan:
    """What one group reconcile must do; idempotent."""

    status: dict[str, Any]
    create: tuple[int, ...] = ()  # bundles whose placeholder (of status.attempt) must exist
    rebind: tuple[int, ...] = ()  # lost bundles of an admitted group to reserve again
    delete: tuple[str, ...] = ()  # placeholder pods to delete
    requeue_in: float | None = None  # reconcile again after this many seconds
    event: tuple[str, str, str] | None = None  # (type, reason, message) on a transition


def plan_group(
    group: dict[str, Any],
    placeholders: list[dict[str, Any]],
    *,
    now: float,
    bind_s: float,
    retry_base: float | None = None,
    retry_now: bool = False,
) -> GroupPlan:
    """All or nothing: admit when every placeholder of the attempt is bound; release them all
    when they are not within ``bind_s``, and retry after a backoff (or at once with
    ``retry_now``: capacity was just freed)."""
    bundles = group["spec"]["bundles"]
    total = len(bundles)
    current: dict[str, Any] = group.get("status") or {}
    attempt = int(current.get("attempt") or 0)
    alive = [p for p in placeholders if not p["metadata"].get("deletionTimestamp")]
    stale = tuple(p["metadata"]["name"] for p in alive if attempt_of(p) != attempt)
    ours = {bundle_of(p): p for p in alive if attempt_of(p) == attempt}

    def status(phase: str, reason: str, message: str, reserved: int, **extra: Any) -> dict:
        fields = {
            "phase": phase,
            "reason": reason,
            "message": message,
            "reserved": reserved,
            "total": total,
            "attempt": attempt,
            "attemptStarted": current.get("attemptStarted"),
            "retryAt": current.get("retryAt"),
            "bundles": current.get("bundles") or [],
        }
        fields.update(extra)
        return fields

    def event(st: dict[str, Any], kind: str = "Normal") -> tuple[str, str, str] | None:
        if (current.get("phase"), current.get("reason")) == (st["phase"], st["reason"]):
            return None
        return (kind, st["reason"] or st["phase"], st["message"])

    if current.get("phase") == c.GROUP_ADMITTED:
        return _plan_admitted(current, alive, attempt)

    retry_at = parse_iso(current.get("retryAt"))
    if attempt == 0 or (not ours and retry_at is not None and (retry_now or now >= retry_at)):
        attempt += 1
        st = status(
            c.GROUP_PENDING,
            "Reserving",
            f"placing {total} placeholder pod(s), attempt {attempt}",
            0,
            attempt=attempt,
            attemptStarted=iso(now),
            retryAt=None,
        )
        return GroupPlan(status=st, create=tuple(range(total)), delete=stale, requeue_in=bind_s)
    if not ours and retry_at is not None:
        return GroupPlan(status=dict(current), delete=stale, requeue_in=retry_at - now)

    bound = {i: p for i, p in ours.items() if (p.get("spec") or {}).get("nodeName")}
    missing = tuple(i for i in range(total) if i not in ours)
    if len(bound) == total:
        nodes = [{"node": bound[i]["spec"]["nodeName"], "instance": ""} for i in range(total)]
        st = status(
            c.GROUP_ADMITTED,
            "",
            f"all {total} bundle(s) reserved",
            total,
            bundles=nodes,
            retryAt=None,
        )
        return GroupPlan(status=st, delete=stale, event=("Normal", "Admitted", st["message"]))

    started = parse_iso(current.get("attemptStarted")) or now
    why = _unschedulable_message(list(ours.values()))
    if now - started >= bind_s:
        delay = retry_seconds(attempt, base=retry_base)
        held = f"released {len(bound)} held bundle(s)" if bound else "released the placeholders"
        detail = why or f"{total - len(bound)} of {total} bundle(s) not placed in {bind_s:g}s"
        st = status(
            c.GROUP_PENDING,
            "Unschedulable" if why else "Released",
            f"{detail.rstrip('.')}; {held}, retrying in {delay:.1f}s",
            0,
            retryAt=iso(now + delay),
        )
        doomed = stale + tuple(p["metadata"]["name"] for p in ours.values())
        return GroupPlan(status=st, delete=doomed, requeue_in=delay, event=event(st, "Warning"))
    reason = "Unschedulable" if why else "Reserving"
    message = why or f"{len(bound)} of {total} bundle(s) placed"
    st = status(c.GROUP_PENDING, reason, message, len(bound))
    return GroupPlan(
        status=st, create=missing, delete=stale, requeue_in=max(0.0, started + bind_s - now)
    )


def _plan_admitted(current: dict[str, Any], alive: list[dict[str, Any]], attempt: int) -> GroupPlan:
    """An admitted group keeps its bundles: one whose capacity was taken while it passed to
    its instance (a lost race) is reserved again through the scheduler, by a placeholder of
    attempt REBIND_ATTEMPT, and gets the node that placeholder is bound to."""
    bundles = [dict(b) for b in current.get("bundles") or []]
    rebinding = {bundle_of(p): p for p in alive if attempt_of(p) == REBIND_ATTEMPT}
    stale = tuple(
        p["metadata"]["name"] for p in alive if attempt_of(p) not in (attempt, REBIND_ATTEMPT)
    )
    create = []
    for i, bundle in enumerate(bundles):
        if bundle.get("node"):
            continue
        pod = rebinding.get(i)
        if pod is None:
            create.append(i)
        elif (pod.get("spec") or {}).get("nodeName"):
            bundle["node"] = pod["spec"]["nodeName"]
    status = {**current, "bundles": bundles}
    return GroupPlan(status=status, rebind=tuple(create), delete=stale)


def choose_bundle(group: dict[str, Any], *, instance: str, index: int) -> int | str:
    """The bundle an admitted group gives ``instance`` (index -1: the first free one), or why
    none: a bundle hosts one instance at a time on Kubernetes."""
    bundles = (group.get("status") or {}).get("bundles") or []
    for i, bundle in enumerate(bundles):
        if bundle.get("instance") == instance:
            return i
    if index >= 0:
        if index >= len(bundles):
            return f"the group has {len(bundles)} bundle(s), no bundle {index}"
        holder = bundles[index].get("instance")
        if holder:
            return f"bundle {index} is held by instance {holder} (one instance per bundle)"
        return index
    for i, bundle in enumerate(bundles):
        if not bundle.get("instance"):
            return i
    return f"all {len(bundles)} bundle(s) are held by other instances (one instance per bundle)"


def rejected_at_admission(pod: dict[str, Any]) -> str:
    """The kubelet's reason (OutOfcpu, OutOfmemory, ...) for a pod bound by nodeName that it
    refused because the node was full: a lost race for a released bundle, not a death."""
    status = pod.get("status") or {}
    reason = status.get("reason") or ""
    never_ran = not status.get("containerStatuses")
    if status.get("phase") == "Failed" and reason.startswith("OutOf") and never_ran:
        return reason
    return ""


def blocking_placeholders(pods: list[dict[str, Any]], *, now: float, bind_s: float) -> list[str]:
    """Placeholders pending in the scheduler that could take a bundle released to its
    instance. A lost bundle's new placeholder stops counting once it has waited ``bind_s``:
    it waits for capacity that only running teams free, and those must be able to start."""
    found = []
    for pod in pods:
        meta = pod["metadata"]
        if (pod.get("spec") or {}).get("nodeName") or meta.get("deletionTimestamp"):
            continue
        created = parse_iso(meta.get("creationTimestamp"))
        if attempt_of(pod) == REBIND_ATTEMPT and created is not None and now - created > bind_s:
            continue
        found.append(meta["name"])
    return sorted(found)
