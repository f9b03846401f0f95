"""Who waits on whom: every live instance is asked (Debug.Waits) what its threads are blocked
on, and a cycle of such waits through a ``concurrency=1`` instance is named as a deadlock.

Why a serial member makes a cycle a deadlock: it is busy in the waiting method, so the call
that the rest of the cycle waits for can only run after that method returns, which never
happens. A cycle of instances that all take concurrent calls is not stuck (each waited-for
call has a thread of its own).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

import grpc

from yr.protocol import yr_pb2

DRIVER = "driver"


def attach_waits(view: dict[str, Any], ask: Callable[[dict[str, Any]], yr_pb2.WaitsReply]) -> None:
    """Fill each live row's ``waiting_on`` (asking all at once) and the view's ``deadlocks``."""
    rows = [row for row in view["instances"] if row.get("address")]

    def answer(row: dict[str, Any]) -> yr_pb2.WaitsReply | None:
        try:
            return ask(row)
        except grpc.RpcError:
            return None  # it died or restarted since the listing: it waits on nothing

    if rows:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(rows))) as pool:
            replies = list(pool.map(answer, rows))
        for row, reply in zip(rows, replies, strict=True):
            row["waiting_on"] = [
                {
                    "target": call.instance_id,
                    "method": call.method,
                    "seconds": round(call.seconds, 3),
                    "thread": call.thread,
                }
                for call in (reply.calls if reply is not None else ())
            ]
    view["deadlocks"] = find_deadlocks(view)


def _edges(view: dict[str, Any]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for row in view["instances"]:
        for wait in row.get("waiting_on", ()):
            edges.setdefault(row["id"], set()).add(wait["target"])
    for wait in view.get("driver_waiting_on", ()):
        edges.setdefault(DRIVER, set()).add(wait["target"])
    return edges


def find_deadlocks(view: dict[str, Any]) -> list[list[str]]:
    """Each wait cycle through a serial instance once, as [a, b, ..., a] from its least id."""
    edges = _edges(view)
    serial = {row["id"] for row in view["instances"] if row.get("concurrency") == 1}
    cycles: set[tuple[str, ...]] = set()

    def walk(path: list[str]) -> None:
        for following in sorted(edges.get(path[-1], ())):
            if following == path[0]:
                cycles.add(tuple(path))
            elif following not in path and following > path[0]:  # each cycle from its least
                walk([*path, following])

    for start in sorted(edges):
        walk([start])
    return [
        [*cycle, cycle[0]] for cycle in sorted(cycles) if any(member in serial for member in cycle)
    ]
