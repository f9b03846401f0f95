"""What ``yr list`` and ``yr tree`` show of a local session: one plain dict per instance.

Plain JSON-able values only: the ``yr`` command reads them from the control server and never
unpickles anything.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from yr import waits
from yr.runtime.local.instances import LocalInstance
from yr.runtime.local.ledger import CpuLedger
from yr.runtime.local.waits import WaitGraph

DRIVER = "driver"


def instance_row(instance: LocalInstance, ledger: CpuLedger, *, now: float) -> dict[str, Any]:
    options = instance.spec.options
    age = max(now - instance.requested_at, 0.0)
    return {
        "id": instance.instance_id,
        "name": options.name,
        "class": instance.spec.class_info.class_name,
        "state": instance.state,
        "reason": _reason(instance, ledger),
        "cpu": options.cpu,
        "memory": options.memory,
        "custom_resources": dict(options.custom_resources),
        "resource_group": options.resource_group_options.resource_group_name,
        "concurrency": options.concurrency,
        "restarts": instance.incarnation,
        "owner": instance.owner_id or DRIVER,
        "age_s": round(age, 3),
        "created": round(time.time() - age, 3),
        "node": "local",
        "pid": instance.pid,
        "address": instance.endpoint.address if instance.endpoint else "",
    }


def _reason(instance: LocalInstance, ledger: CpuLedger) -> str:
    group = instance.spec.options.resource_group_options.resource_group_name
    if instance.state == "pending" and group:
        return f"waiting for room in resource group {group!r}"
    if instance.state == "pending":
        return (
            f"waiting for {instance.spec.options.cpu}m CPU: {ledger.free}m of {ledger.total}m free"
        )
    if instance.state in ("restarting", "dead") and instance.deaths:
        return instance.deaths[max(instance.deaths)].describe()
    if instance.error is not None:
        return str(instance.error).splitlines()[0]
    return ""


def driver_waits(*, now: float) -> list[dict[str, Any]]:
    """What the driver's own threads (this process) are blocked on."""
    return [
        {
            "target": instance_id,
            "method": method.rsplit(".", 1)[-1],  # refs name it Class.method
            "seconds": round(now - wait.since, 3),
        }
        for wait in waits.current()
        for instance_id, method in wait.calls
    ]


def session_view(
    instances: Iterable[LocalInstance],
    ledger: CpuLedger,
    graph: WaitGraph,
    *,
    now: float,
    resource_groups: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "backend": "local",
        "instances": [instance_row(instance, ledger, now=now) for instance in instances],
        "driver_waiting_on": driver_waits(now=now),
        "refused_deadlocks": [
            {"cycle": cycle, "seconds_ago": round(time.time() - at, 3)}
            for at, cycle in list(graph.refused)
        ],
        "resource_groups": resource_groups or [],
    }
