"""Owners on their way out (driver Leases, instance Pods): their instances get no new pods.

A session's teardown deletes its Lease, and the garbage collector then deletes its instances;
a pod created in between would start against a session Secret already gone. The watch events
of Leases and instance Pods tell us which owners are being deleted.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("yr_operator")
REMEMBER_S = 600.0  # long past any garbage collection of their dependents


class DyingOwners:
    """Uids of owners seen deleted or with a deletionTimestamp."""

    def __init__(self) -> None:
        self._since: dict[str, float] = {}

    def observe(self, *, event_type: str | None, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        uid = meta.get("uid")
        if not uid or uid in self._since:
            return
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            now = time.monotonic()
            self._since = {u: t for u, t in self._since.items() if now - t < REMEMBER_S}
            self._since[uid] = now
            kind = body.get("kind") or "owner"
            log.info("%s %s is being deleted: no new pods for what it owns", kind, meta.get("name"))

    def owner_dying(self, yrinstance: dict[str, Any]) -> bool:
        refs = (yrinstance.get("metadata") or {}).get("ownerReferences") or []
        return any(ref.get("uid") in self._since for ref in refs)
