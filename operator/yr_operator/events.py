"""Kubernetes Events for `kubectl describe`, posted through kopf's background poster."""

from __future__ import annotations

import logging
from typing import Any

import kopf

log = logging.getLogger("yr_operator")


def post_event(obj: dict[str, Any], *, kind: str, reason: str, message: str) -> None:
    """kopf.event, but never fatal: an Event is a courtesy, the reconcile is the work."""
    try:
        kopf.event(obj, type=kind, reason=reason, message=message)
    except LookupError:  # outside kopf's posting context (e.g. during shutdown)
        log.info("%s %s: %s", reason, obj["metadata"].get("name"), message)
