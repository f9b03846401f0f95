"""Pure mapping of a Pod's state to what a YRInstance's status says about it (no I/O)."""

from __future__ import annotations

import dataclasses
import signal
from typing import Any

from yr.contract import (
    PORT,
    REASON_COMPLETED,
    REASON_ERROR,
    REASON_OOM_KILLED,
    REASON_SIGNAL,
    LastTermination,
)

# Waiting reasons that are just progress, not a problem worth showing.
_QUIET_WAITING = {"ContainerCreating", "PodInitializing"}


@dataclasses.dataclass(frozen=True)
class PodState:
    """What one pod tells us: phase is Pending, Running, Ready, Terminating or Dead."""

    phase: str
    reason: str = ""
    message: str = ""
    pod_ip: str = ""
    node: str = ""
    exit_code: int | None = None
    signal: int | None = None
    detail: str = ""  # the container's own termination message (e.g. its log's last lines)

    @property
    def dead(self) -> bool:
        return self.phase == "Dead"


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe_termination(terminated: dict[str, Any]) -> tuple[str, str]:
    """(reason, message) for a terminated container: OOMKilled, Signal, Error or Completed."""
    reason, message, _ = _termination(terminated)
    return reason, message


def termination_signal(terminated: dict[str, Any]) -> int | None:
    """The signal that killed the container, if one did (exitCode > 128 is 128 + signal)."""
    return _termination(terminated)[2]


def _termination(terminated: dict[str, Any]) -> tuple[str, str, int | None]:
    code = terminated.get("exitCode")
    sig = terminated.get("signal") or 0
    # A local process killed by a signal reports a negative exit code (Popen style).
    if not sig and isinstance(code, int) and code < 0:
        sig = -code
    if terminated.get("reason") == REASON_OOM_KILLED:
        oom = f"out of memory: the container was OOMKilled (exit code {code})"
        return REASON_OOM_KILLED, oom, None
    if not sig and isinstance(code, int) and code > 128:
        try:
            sig = signal.Signals(code - 128).value
        except ValueError:
            sig = 0
    if sig:
        return REASON_SIGNAL, f"killed by signal {sig} ({signal_name(sig)})", sig
    detail = (terminated.get("message") or "").strip()
    if code == 0:
        return REASON_COMPLETED, "exited with code 0" + (f": {detail}" if detail else ""), None
    return REASON_ERROR, f"exit code {code}" + (f": {detail}" if detail else ""), None


def _condition(pod: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return {}


def unschedulable(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The pod's PodScheduled condition when the scheduler said no (its reason and message
    say why), else None: one reading for instance pods and group placeholders alike."""
    scheduled = _condition(pod, "PodScheduled")
    return scheduled if scheduled.get("status") == "False" else None


def _container_state(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for st in statuses:
        if st.get("name") == "instance":
            return st.get("state") or {}
    return (statuses[0].get("state") or {}) if statuses else {}


def creating_quietly(pod: dict[str, Any]) -> bool:
    """A scheduled pod whose container is still ContainerCreating: a kubelet says why (e.g. a
    Secret volume it cannot mount) only in the pod's Warning Events."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    waiting = _container_state(pod).get("waiting") or {}
    return waiting.get("reason") in _QUIET_WAITING and not waiting.get("message")


def observe_pod(pod: dict[str, Any]) -> PodState:
    """Reduce a pod to the one fact the instance status needs."""
    status = pod.get("status") or {}
    ip, node = status.get("podIP") or "", (pod.get("spec") or {}).get("nodeName") or ""
    state = _container_state(pod)
    if "terminated" in state:
        terminated = state["terminated"]
        reason, message, sig = _termination(terminated)
        code = terminated.get("exitCode")
        exit_code = code if isinstance(code, int) and not sig else None
        detail = (terminated.get("message") or "").strip()
        return PodState(
            "Dead", reason, message, ip, node, exit_code=exit_code, signal=sig, detail=detail
        )
    if status.get("phase") in ("Failed", "Succeeded"):
        # Evicted, DeadlineExceeded, ... carry their reason on the pod, not a container.
        reason = status.get("reason") or status.get("phase")
        return PodState("Dead", reason, status.get("message") or f"pod {reason}", ip, node)
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return PodState("Terminating", "Deleted", "the pod is being deleted", ip, node)
    scheduled = unschedulable(pod)
    if scheduled is not None:
        return PodState(
            "Pending", scheduled.get("reason") or "Unschedulable", scheduled.get("message") or ""
        )
    waiting = state.get("waiting") or {}
    if waiting.get("reason") and waiting["reason"] not in _QUIET_WAITING:
        return PodState("Pending", waiting["reason"], waiting.get("message") or "", ip, node)
    if _condition(pod, "Ready").get("status") == "True":
        return PodState("Ready", "", "", ip, node)
    if status.get("phase") == "Running" or "running" in state:
        return PodState("Running", "", "", ip, node)
    return PodState("Pending", "", "", ip, node)


def build_status(
    *,
    phase: str,
    reason: str = "",
    message: str = "",
    pod_name: str = "",
    pod_ip: str = "",
    node: str = "",
    restarts: int = 0,
    generation: int | None = None,
    previous: dict[str, Any] | None = None,
    last_termination: LastTermination | None = None,
    now: str,
) -> dict[str, Any]:
    """The YRInstance status; the Ready condition keeps its transition time if unchanged, and
    lastTermination stays until a later incarnation ends."""
    ready = "True" if phase == "Ready" else "False"
    old = next(
        (c for c in (previous or {}).get("conditions") or [] if c.get("type") == "Ready"), {}
    )
    since = old.get("lastTransitionTime") if old.get("status") == ready else None
    status: dict[str, Any] = {
        "phase": phase,
        "reason": reason,
        "message": message,
        "podName": pod_name,
        "podIP": pod_ip,
        "port": PORT,
        "node": node,
        "restarts": restarts,
        "conditions": [
            {
                "type": "Ready",
                "status": ready,
                "reason": reason or phase,
                "message": message,
                "lastTransitionTime": since or now,
            }
        ],
    }
    if generation is not None:
        status["observedGeneration"] = generation
    if last_termination is not None:
        status["lastTermination"] = last_termination.to_status()
    elif (previous or {}).get("lastTermination"):
        status["lastTermination"] = previous["lastTermination"]  # type: ignore[index]
    return status


def status_changed(current: dict[str, Any] | None, desired: dict[str, Any]) -> bool:
    """Whether a patch is needed (an empty string and a missing field are the same)."""
    current = current or {}
    return any((current.get(k) or None) != (v or None) for k, v in desired.items())


def status_patch(current: dict[str, Any] | None, desired: dict[str, Any]) -> dict[str, Any]:
    """A merge patch: desired fields, plus nulls to drop the fields it no longer has."""
    patch = dict(desired)
    for key in current or {}:
        if key not in desired and key != "kopf":
            patch[key] = None
    return patch
