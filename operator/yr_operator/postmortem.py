"""A dead pod's last words: read before the operator deletes the pod, kept in the status.

Once the pod is gone its log is gone with it, and "why did my actor die" is exactly what its
last lines answer. They go in ``status.lastTermination.output`` (at most ``LAST_LINES`` lines
and ``LAST_LINES_MAX_BYTES`` bytes, the newest kept), so ``yr logs`` and ``kubectl describe
yri`` show them after the pod is gone.
"""

from __future__ import annotations

import logging
from typing import Any

from yr.contract import LAST_LINES, LAST_LINES_MAX_BYTES, pod_name

from .kube import ApiError, Kube
from .plan import Plan

log = logging.getLogger("yr_operator")


def bounded(text: str, *, max_bytes: int = LAST_LINES_MAX_BYTES) -> str:
    """The newest whole lines of ``text`` that fit in ``max_bytes`` UTF-8 bytes."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    tail = data[-max_bytes:]
    cut = tail.find(b"\n")
    if 0 <= cut < len(tail) - 1:
        tail = tail[cut + 1 :]  # drop the partial first line
    return tail.decode(errors="ignore")


async def keep_last_words(kube: Kube, yri: dict[str, Any], p: Plan) -> None:
    """If ``p`` deletes the pod of the incarnation that just ended, copy its output first."""
    ended = (p.status or {}).get("lastTermination")
    if not ended or ended.get("output"):
        return
    meta = yri["metadata"]
    dead_pod = pod_name(meta["name"], int(ended["incarnation"]))
    if dead_pod not in p.delete:
        return
    try:
        text = await kube.pod_log_tail(namespace=meta["namespace"], name=dead_pod, lines=LAST_LINES)
    except ApiError as error:  # no log (never started, or already gone): the death still counts
        log.info("no last lines of pod %s/%s: %s", meta["namespace"], dead_pod, error)
        return
    if text.strip():
        ended["output"] = bounded(text)
