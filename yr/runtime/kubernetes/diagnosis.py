"""What to tell a user whose instance did not become Ready in time, from its YRInstance status.

Each cause gets its own advice: no operator, a refused pod, an unschedulable pod, a pod the
kubelet cannot start. Kept apart from the watcher so the wording is tested on its own.
"""

from __future__ import annotations

from typing import Any

from yr import contract as c
from yr.errors import YRSchedulingError

INSTALL_HINT = "helm install yr charts/yr (docs/quickstart-kubernetes.md)"


def schedule_error(
    name: str, class_name: str, status: dict[str, Any], *, timeout_s: float
) -> YRSchedulingError:
    """The error for an instance still not Ready after ``timeout_s``."""
    head = f"instance {name} ({class_name}) was not ready within {timeout_s * 1000:.0f} ms"
    phase, reason = status.get("phase") or "", status.get("reason") or ""
    message = (status.get("message") or "").strip()
    if not phase:
        return YRSchedulingError(
            f"{head}: no operator has acted on YRInstance {name} (it has no status). Is the yr "
            f"operator running and watching this namespace? Install it with {INSTALL_HINT}"
        )
    if reason == c.REASON_FAILED_CREATE:
        return YRSchedulingError(
            f"{head}: the operator could not create its pod: {message or reason}"
        )
    if reason == c.REASON_UNSCHEDULABLE:
        return YRSchedulingError(
            f"{head}: {reason}: {message.rstrip('.')}. Lower its cpu, free capacity in the "
            "cluster, or raise InvokeOptions(schedule_timeout_ms=...)"
        )
    if reason:
        return YRSchedulingError(
            f"{head}: its pod is {phase}, {reason}" + (f": {message}" if message else "")
        )
    return YRSchedulingError(
        f"{head}: its pod is {phase} (reason not reported yet); raise "
        "InvokeOptions(schedule_timeout_ms=...) if the cluster is just slow"
    )
