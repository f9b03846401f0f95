"""The reconcile decision as a pure function: YRInstance + its pods -> what to do (no I/O)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from yr.contract import (
    EXIT_CODE_SELF,
    REASON_EXITED,
    SELF_EXIT_MESSAGE,
    LastTermination,
    pod_name,
)

from .builders import incarnation_of
from .status import PodState, build_status, observe_pod

BACKOFF_CAP_SECONDS = 60.0
_ALIVE_PHASES = ("Pending", "Running", "Ready")


def backoff_seconds(restart: int, *, base: float | None = None) -> float:
    """Delay before restart number `restart` (1-based): base, 2*base, 4*base, ... capped at 60 s."""
    if base is None:
        base = float(os.environ.get("YR_RESTART_BACKOFF_SECONDS", "1.0"))
    return min(BACKOFF_CAP_SECONDS, base * 2 ** max(0, restart - 1))


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one reconcile must do; every field is idempotent to apply twice."""

    status: dict[str, Any] | None = None  # the full desired status; None leaves it alone
    create: int | None = None  # the incarnation whose pod must exist
    delete: tuple[str, ...] = ()  # pod names to delete (404 is fine)
    restart_at: float | None = None  # when the next incarnation may start (epoch seconds)
    event: tuple[str, str, str] | None = None  # (type, reason, message) on a transition
    # The instance ended itself (yr.exit()): delete the YRInstance once the status says so.
    delete_instance: bool = False
    # (name, uid) of the current pod once its container has started, so the kubelet has
    # mounted the payload: that pod must keep the payload Secret alive (see reconcile.py).
    started_pod: tuple[str, str] | None = None


def _controlled_by(pod: dict[str, Any], uid: str) -> bool:
    refs = (pod.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


def _event(current: dict[str, Any], status: dict[str, Any] | None) -> tuple[str, str, str] | None:
    if status is None:
        return None
    phase, reason = status["phase"], status.get("reason") or ""
    if (current.get("phase"), current.get("reason") or "") == (phase, reason):
        return None
    warn = phase in ("Restarting", "Failed") or (phase == "Pending" and bool(reason))
    warn = warn and reason != REASON_EXITED  # ending itself is no failure
    detail = status.get("message") or f"pod {status.get('podName')} is {phase.lower()}"
    return ("Warning" if warn else "Normal", reason or phase, detail)


def plan(
    yrinstance: dict[str, Any],
    pods: list[dict[str, Any]],
    *,
    now: float,
    now_iso: str,
    restart_at: float | None = None,
    backoff_base: float | None = None,
    kubelet_warnings: dict[str, tuple[str, str]] | None = None,
) -> Plan:
    """Decide from the instance, its pods and the time; `restart_at` is remembered by the caller.

    `kubelet_warnings`: pod name -> (reason, message) of its latest Warning Event, for pods
    that the kubelet keeps waiting without saying why in their status.
    """
    meta, spec = yrinstance["metadata"], yrinstance.get("spec") or {}
    current: dict[str, Any] = yrinstance.get("status") or {}
    name, uid = meta["name"], meta.get("uid", "")
    max_restarts = int(spec.get("maxRestarts") or 0)
    phase_now = current.get("phase") or ""
    recorded = int(current.get("restarts") or 0)

    owned = {
        inc: p for p in pods if _controlled_by(p, uid) and (inc := incarnation_of(p)) is not None
    }
    # A pod newer than the status means we created it and died before writing the status.
    k = max([recorded, *owned])
    live = {i: p for i, p in owned.items() if not p["metadata"].get("deletionTimestamp")}
    stale = tuple(pod_name(name, i) for i in sorted(live) if i < k)

    def status(phase: str, st: PodState | None = None, **kw: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {"pod_name": pod_name(name, k), "restarts": k}
        if st is not None:
            fields.update(reason=st.reason, message=st.message, pod_ip=st.pod_ip, node=st.node)
        fields.update(kw)
        return build_status(
            phase=phase, generation=meta.get("generation"), previous=current, now=now_iso, **fields
        )

    def finish(**kw: Any) -> Plan:
        st = kw.get("status")
        return Plan(event=_event(current, st), **kw)

    if meta.get("deletionTimestamp"):
        return finish(status=status("Terminating", reason="Deleted", message="being deleted"))
    if phase_now == "Failed" and recorded >= k:
        return Plan(
            delete=tuple(pod_name(name, i) for i in sorted(live)),
            delete_instance=current.get("reason") == REASON_EXITED,
        )

    pod = owned.get(k)
    if pod is not None:
        st = observe_pod(pod)
        warning = (kubelet_warnings or {}).get(pod_name(name, k))
        if st.phase == "Pending" and not st.reason and warning:
            st = dataclasses.replace(st, reason=warning[0], message=warning[1])
        if not (st.dead or st.phase == "Terminating"):
            pmeta = pod["metadata"]
            started = st.phase in ("Running", "Ready") and pmeta.get("uid")
            return finish(
                status=status(st.phase, st),
                delete=stale,
                started_pod=(pmeta["name"], pmeta["uid"]) if started else None,
            )
        death = st
    elif phase_now in _ALIVE_PHASES and current.get("podName") == pod_name(name, k):
        death = PodState("Dead", "PodDeleted", f"pod {pod_name(name, k)} was deleted")
    elif phase_now == "Restarting" and recorded == k:
        due = restart_at if restart_at is not None else now + backoff_seconds(k, base=backoff_base)
        if now < due:
            return Plan(restart_at=due, delete=stale)
        return finish(create=k, status=status("Pending"), delete=stale)
    else:
        return finish(create=k, status=status("Pending"), delete=stale)

    # The incarnation k is dead: free its pod (and so its children) now, then restart or fail.
    doomed = stale + ((pod_name(name, k),) if k in live else ())
    if death.exit_code == EXIT_CODE_SELF and death.signal is None:
        # yr.exit(): its own decision, so no restart; the reason is ours, not the exit code's.
        ended = LastTermination(incarnation=k, reason=REASON_EXITED, message=SELF_EXIT_MESSAGE)
        exited = status(
            "Failed",
            death,
            reason=REASON_EXITED,
            message=SELF_EXIT_MESSAGE,
            pod_ip="",
            last_termination=ended,
        )
        return finish(status=exited, delete=doomed, delete_instance=True)
    coded = death.exit_code is not None or death.signal is not None
    ended = LastTermination(
        incarnation=k,
        reason=death.reason,
        # A code or signal is data already; the message then carries only the container's own
        # words (kubelet's termination message), never our prose about them.
        message=death.detail if coded else death.message,
        exit_code=death.exit_code,
        signal=death.signal,
    )
    if k < max_restarts:
        delay = backoff_seconds(k + 1, base=backoff_base)
        message = f"{death.message}; restart {k + 1}/{max_restarts} in {delay:g}s"
        restarting = status(
            "Restarting", death, message=message, pod_name="", pod_ip="", last_termination=ended
        )
        restarting.update(restarts=k + 1, podName=pod_name(name, k + 1))
        return finish(status=restarting, delete=doomed, restart_at=now + delay)
    if max_restarts:
        message = f"{death.message} (restart budget of {max_restarts} spent)"
    else:
        message = death.message
    failed = status("Failed", death, message=message, pod_ip="", last_termination=ended)
    return finish(status=failed, delete=doomed)
