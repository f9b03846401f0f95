"""Driver Leases: track when each expires; delete expired ones so the GC takes their trees.

A Lease is expired only once it has gone unrenewed for its duration plus a grace, judged both
by its own renewTime and by when this operator last saw it change (as Kubernetes' leader
election judges a record by when it observed it): a renewal that an overloaded API server
stored late, stamped with its sending time, still counts from when it landed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import os
import re
import time
from typing import Any

from .events import post_event
from .kube import Kube

log = logging.getLogger("yr_operator")
DEFAULT_DURATION_SECONDS = 15
DEFAULT_GRACE_SECONDS = 10.0
_FRACTION = re.compile(r"\.(\d+)")


def parse_time(value: str | None) -> float | None:
    """RFC 3339 (Time or MicroTime, any fraction length) to epoch seconds."""
    if not value:
        return None
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], value.replace("Z", "+00:00"))
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.timestamp()


def grace_seconds() -> float:
    """YR_LEASE_GRACE_SECONDS (operator env, default 10): how long past its expiry a driver
    Lease is left before it is collected, for renewals delayed by a busy API server or clock
    skew between the driver and the operator."""
    raw = os.environ.get("YR_LEASE_GRACE_SECONDS", str(DEFAULT_GRACE_SECONDS))
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ValueError(f"YR_LEASE_GRACE_SECONDS must be a number of seconds >= 0, got {raw!r}")
    return value


def duration_of(lease: dict[str, Any]) -> float:
    return float((lease.get("spec") or {}).get("leaseDurationSeconds") or DEFAULT_DURATION_SECONDS)


def expires_at(lease: dict[str, Any]) -> float | None:
    """renewTime (or acquireTime, or creation) + leaseDurationSeconds; None if unknowable."""
    spec, meta = lease.get("spec") or {}, lease.get("metadata") or {}
    start = (
        parse_time(spec.get("renewTime"))
        or parse_time(spec.get("acquireTime"))
        or parse_time(meta.get("creationTimestamp"))
    )
    if start is None:
        return None
    return start + duration_of(lease)


@dataclasses.dataclass
class _Seen:
    body: dict[str, Any]
    expires: float
    changed_at: float  # when this operator first saw the Lease as it is now
    attempted_rv: str | None = None


class Leases:
    """What the watch stream last said about each driver Lease."""

    def __init__(self, *, grace_s: float = DEFAULT_GRACE_SECONDS) -> None:
        self.grace_s = grace_s
        self._seen: dict[tuple[str, str], _Seen] = {}
        self.task: asyncio.Task[None] | None = None  # the delete_expired loop, once started

    def observe(
        self, *, event_type: str | None, body: dict[str, Any], now: float | None = None
    ) -> None:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        expiry = expires_at(body)
        if event_type == "DELETED" or expiry is None:
            self._seen.pop(key, None)
            return
        seen = self._seen.get(key)
        changed_at = time.time() if now is None else now
        if seen is not None and seen.body["metadata"].get("resourceVersion") == meta.get(
            "resourceVersion"
        ):
            changed_at = seen.changed_at  # the same Lease again (a relist): not a renewal
        self._seen[key] = _Seen(body=body, expires=expiry, changed_at=changed_at)

    def due(self, *, now: float) -> list[dict[str, Any]]:
        """Leases expired by more than the grace, by their renewTime and by when they last
        changed here, not yet tried at their current resourceVersion."""
        return [
            seen.body
            for seen in self._seen.values()
            if max(seen.expires, seen.changed_at + duration_of(seen.body)) + self.grace_s <= now
            and seen.attempted_rv != seen.body["metadata"].get("resourceVersion")
        ]

    def attempted(self, lease: dict[str, Any]) -> None:
        """Deleted, gone or renewed meanwhile (409): wait for the watch to say more."""
        meta = lease["metadata"]
        seen = self._seen.get((meta.get("namespace", ""), meta.get("name", "")))
        if seen is not None:
            seen.attempted_rv = meta.get("resourceVersion")


async def delete_expired(*, leases: Leases, kube: Kube, interval: float = 1.0) -> None:
    """Forever: every `interval` seconds, delete the driver Leases whose time has passed."""
    while True:
        for lease in leases.due(now=time.time()):
            meta = lease["metadata"]
            try:
                deleted = await kube.delete_lease(
                    namespace=meta["namespace"],
                    name=meta["name"],
                    uid=meta.get("uid", ""),
                    resource_version=meta.get("resourceVersion", ""),
                )
            except Exception as e:  # keep the loop alive; try again next round
                log.warning("could not delete expired lease %s: %s", meta.get("name"), e)
                continue
            leases.attempted(lease)
            if deleted:
                renewed = lease.get("spec", {}).get("renewTime") or "never"
                message = f"driver lease expired (last renewed {renewed}); its instances go with it"
                log.info("deleted expired lease %s/%s", meta["namespace"], meta["name"])
                post_event(lease, kind="Normal", reason="LeaseExpired", message=message)
        await asyncio.sleep(interval)
