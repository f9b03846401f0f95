"""Driver Leases: track when each expires; delete expired ones so the GC takes their trees."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import re
import time
from typing import Any

from .events import post_event
from .kube import Kube

log = logging.getLogger("yr_operator")
DEFAULT_DURATION_SECONDS = 15
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
    return start + float(spec.get("leaseDurationSeconds") or DEFAULT_DURATION_SECONDS)


@dataclasses.dataclass
class _Seen:
    body: dict[str, Any]
    expires: float
    attempted_rv: str | None = None


class Leases:
    """What the watch stream last said about each driver Lease."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], _Seen] = {}
        self.task: asyncio.Task[None] | None = None  # the delete_expired loop, once started

    def observe(self, *, event_type: str | None, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        expiry = expires_at(body)
        if event_type == "DELETED" or expiry is None:
            self._seen.pop(key, None)
        else:
            self._seen[key] = _Seen(body=body, expires=expiry)

    def due(self, *, now: float) -> list[dict[str, Any]]:
        """Expired leases not yet tried at their current resourceVersion."""
        return [
            seen.body
            for seen in self._seen.values()
            if seen.expires <= now
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
