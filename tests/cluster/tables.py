"""Server-side printing (`as=Table`) so `kubectl get` shows real and CRD printer columns."""

from __future__ import annotations

import re
import time
from typing import Any

from aiohttp import web

from tests.cluster.meta import parse_time
from tests.cluster.resources import ResourceType
from tests.cluster.store import Store

# A field may hold escaped dots, as label keys do: .metadata.labels.yr\.dev/root
_STEP = re.compile(
    r"\.((?:\\\.|[^.\[\\])+)|\[(\d+)\]|\[\?\(@\.([\w.]+)\s*==\s*['\"]([^'\"]*)['\"]\)\]"
)


def wanted(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


def age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    seconds = max(0, int(time.time() - parse_time(timestamp)))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "d" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def json_path(obj: Any, path: str) -> Any:
    """The subset of JSONPath printer columns use: fields, [n] and [?(@.k=="v")]."""
    nodes = [obj]
    for field, index, filter_key, filter_value in _STEP.findall(path.strip("{}")):
        nxt = []
        field = field.replace("\\.", ".")
        for node in nodes:
            if field and isinstance(node, dict) and field in node:
                nxt.append(node[field])
            elif index and isinstance(node, list) and int(index) < len(node):
                nxt.append(node[int(index)])
            elif filter_key and isinstance(node, list):
                nxt += [
                    i
                    for i in node
                    if isinstance(i, dict) and str(json_path(i, "." + filter_key)) == filter_value
                ]
        nodes = nxt
    return nodes[0] if nodes else None


def _pod_cells(pod: dict[str, Any]) -> list[Any]:
    spec, status = pod.get("spec", {}), pod.get("status", {})
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    phase = status.get("phase", "Pending")
    reason = status.get("reason") or phase
    for s in statuses:
        state = s.get("state", {})
        detail = state.get("waiting") or state.get("terminated")
        if detail and detail.get("reason"):
            reason = detail["reason"]
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    restarts = sum(s.get("restartCount", 0) for s in statuses)
    return [
        (ready and f"{ready}/{len(spec.get('containers', []))}")
        or f"0/{len(spec.get('containers', []))}",
        reason,
        restarts,
        age(pod["metadata"].get("creationTimestamp")),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
    ]


def _node_cells(node: dict[str, Any]) -> list[Any]:
    conditions = node.get("status", {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), {})
    state = "Ready" if ready.get("status") == "True" else "NotReady"
    version = node.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", "")
    return [state, "<none>", age(node["metadata"].get("creationTimestamp")), version]


def _event_cells(event: dict[str, Any]) -> list[Any]:
    involved = event.get("involvedObject") or {}
    seen = (
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event["metadata"].get("creationTimestamp")
    )
    target = f"{involved.get('kind', '').lower()}/{involved.get('name', '')}"
    return [
        age(seen),
        event.get("type", ""),
        event.get("reason", ""),
        target,
        event.get("message", ""),
        event["metadata"]["name"],
    ]


_BUILTIN_COLUMNS = {
    ("", "pods"): (
        [
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "integer", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
        ],
        _pod_cells,
    ),
    ("", "nodes"): (
        [
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
        ],
        _node_cells,
    ),
    ("", "events"): (
        [
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Message", "string", 0),
            ("Name", "string", 1),
        ],
        _event_cells,
    ),
    ("", "namespaces"): (
        [("Status", "string", 0), ("Age", "string", 0)],
        lambda o: [
            o.get("status", {}).get("phase", ""),
            age(o["metadata"].get("creationTimestamp")),
        ],
    ),
}


def _columns(rt: ResourceType) -> tuple[list[tuple[str, str, int]], Any]:
    if rt.key in _BUILTIN_COLUMNS:
        return _BUILTIN_COLUMNS[rt.key]
    if rt.printer_columns:
        specs = list(rt.printer_columns)

        def cells(obj: dict[str, Any]) -> list[Any]:
            values = []
            for col in specs:
                value = json_path(obj, col["jsonPath"])
                if col.get("type") == "date":
                    value = age(value)
                values.append("<none>" if value is None else value)
            return values

        kinds = [
            (
                c["name"],
                "string" if c.get("type") == "date" else c.get("type", "string"),
                c.get("priority", 0),
            )
            for c in specs
        ]
        return kinds, cells
    return [("Age", "string", 0)], lambda o: [age(o["metadata"].get("creationTimestamp"))]


def render(store: Store, rt: ResourceType, items: list[dict[str, Any]], kind: str = "Table"):
    columns, cells = _columns(rt)
    own_name = rt.key == ("", "events")  # events list their name last, as a wide column
    definitions = (
        []
        if own_name
        else [
            {
                "name": "Name",
                "type": "string",
                "format": "name",
                "description": "Name",
                "priority": 0,
            }
        ]
    )
    definitions += [
        {"name": n, "type": t, "format": "", "description": n, "priority": p} for n, t, p in columns
    ]
    rows = [
        {
            "cells": cells(o) if own_name else [o["metadata"]["name"], *cells(o)],
            "object": {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": o["metadata"],
            },
        }
        for o in items
    ]
    return {
        "kind": kind,
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": str(store.rv)},
        "columnDefinitions": definitions,
        "rows": rows,
    }
