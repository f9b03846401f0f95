"""Fault injection for the emulated API server: the errors real clusters throw at clients.

Tests arm rules over HTTP (``/emulated/faults``); each matching request is answered with the
fault instead of being served: a 429 with Retry-After, a 5xx, a watch that ends at once, a
watch that reports 410 Gone, or a connection reset before any answer; or it is served late
(``delay``), as by an overloaded server. A rule may hold for ``seconds`` after it is armed.
Open watches can also be cut (``/emulated/faults/drop``). Every match is logged with its time
so a test can check what a client did next.

    faults = FaultClient(cluster.base_url, kubeconfig=cluster.kubeconfig)
    rule = faults.add(method="POST", path=r"/pods$", status=429, retry_after=2, times=1)
    ...
    faults.hits(rule)  # [{"time": ..., "faulted": True, ...}, {"faulted": False, ...}]
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

ADMIN = "/emulated/faults"
REASONS = {
    403: "Forbidden",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


@dataclass
class Rule:
    """Which requests (method, path regex, query substring, watch or not) get which fault."""

    id: int
    method: str = ""
    path: str = ""
    query: str = ""  # a substring of the decoded query string, e.g. "labelSelector=a/b=c"
    watch: bool | None = None
    status: int = 0  # an HTTP error status, or 0 with `action` (or `delay` alone)
    # "drop" (a watch that ends at once), "gone" (a watch ERROR 410) or "reset" (the
    # connection is cut before any answer)
    action: str = ""
    delay: float = 0.0  # seconds the request waits before it is answered (or faulted)
    retry_after: float | None = None
    message: str = ""  # the Status message (default: names the injected fault)
    times: int = 1  # how many matches are faulted; -1: all, until removed
    seconds: float | None = None  # the rule matches for this long after it is armed
    armed: float = field(default_factory=time.time)
    hits: list[dict[str, Any]] = field(default_factory=list)

    def matches(self, request: web.Request) -> bool:
        is_watch = request.query.get("watch") in ("true", "1")
        return (
            (not self.method or request.method == self.method)
            and (not self.path or re.search(self.path, request.path) is not None)
            and (not self.query or self.query in urllib.parse.unquote(request.query_string))
            and (self.watch is None or self.watch == is_watch)
            and (self.seconds is None or time.time() < self.armed + self.seconds)
        )

    def take(self, request: web.Request) -> bool:
        """Record the match; True if it is faulted (the rule has times left)."""
        faulted = self.times != 0
        if self.times > 0:
            self.times -= 1
        self.hits.append(
            {
                "time": time.time(),
                "method": request.method,
                "path": request.path,
                "faulted": faulted,
            }
        )
        return faulted

    def public(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Faults:
    """The armed rules and the open watch requests, consulted before each request is served."""

    def __init__(self) -> None:
        self.rules: dict[int, Rule] = {}
        self._ids = itertools.count(1)
        self._open_watches: dict[asyncio.Task[Any], web.Request] = {}

    async def serve(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if request.path.startswith(ADMIN):
            return await self._admin(request)
        for rule in list(self.rules.values()):
            if rule.matches(request) and rule.take(request):
                if rule.delay:  # an overloaded server: the answer comes, but late
                    await asyncio.sleep(rule.delay)
                if rule.status or rule.action:
                    return await self._inject(request, rule)
                break
        if request.query.get("watch") not in ("true", "1"):
            return await handler(request)
        task = asyncio.current_task()
        assert task is not None
        self._open_watches[task] = request
        try:
            return await handler(request)
        finally:
            self._open_watches.pop(task, None)

    async def _inject(self, request: web.Request, rule: Rule) -> web.StreamResponse:
        if rule.action == "reset":
            if request.transport is not None:
                request.transport.abort()  # the client reads a closed connection, no status
            return web.Response(status=503)  # written nowhere
        if rule.action in ("drop", "gone"):
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            if rule.action == "gone":
                status = _status(410, "Expired", "too old resource version (injected)")
                await response.write(
                    json.dumps({"type": "ERROR", "object": status}).encode() + b"\n"
                )
            return response
        headers = {}
        if rule.retry_after is not None:
            headers["Retry-After"] = f"{rule.retry_after:g}"
        reason = REASONS.get(rule.status, "InternalError")
        message = rule.message or f"injected fault: {rule.status} {reason}"
        body = _status(rule.status, reason, message)
        return web.Response(
            text=json.dumps(body),
            status=rule.status,
            headers=headers,
            content_type="application/json",
        )

    async def _admin(self, request: web.Request) -> web.Response:
        tail = request.path[len(ADMIN) :].strip("/")
        if request.method == "POST" and tail == "":
            fields = await request.json()
            rule = Rule(id=next(self._ids), **fields)
            self.rules[rule.id] = rule
            return web.json_response(rule.public())
        if request.method == "POST" and tail == "drop":
            return web.json_response({"dropped": self._drop(await request.json())})
        if request.method == "GET" and tail.isdigit() and int(tail) in self.rules:
            return web.json_response(self.rules[int(tail)].public())
        if request.method == "DELETE" and tail == "":
            self.rules.clear()
            return web.json_response({})
        if request.method == "DELETE" and tail.isdigit():
            self.rules.pop(int(tail), None)
            return web.json_response({})
        return web.json_response(_status(404, "NotFound", "no such fault endpoint"), status=404)

    def _drop(self, match: dict[str, Any]) -> int:
        """Cut the open watches that match, as a broken connection would."""
        probe = Rule(id=0, **match)
        doomed = [task for task, request in self._open_watches.items() if probe.matches(request)]
        for task in doomed:
            task.cancel()
        return len(doomed)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class FaultClient:
    """A test's handle on a running API server's faults."""

    def __init__(self, base_url: str, *, kubeconfig: Path) -> None:
        self._base = base_url.rstrip("/") + ADMIN
        # The emulated API server speaks HTTPS with its own CA, which the kubeconfig carries.
        config = yaml.safe_load(kubeconfig.read_text())
        (entry,) = config["clusters"]
        authority = base64.b64decode(entry["cluster"]["certificate-authority-data"]).decode()
        self._tls = ssl.create_default_context(cadata=authority)

    def _call(self, method: str, path: str = "", body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self._base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10, context=self._tls) as response:
            return json.loads(response.read() or b"{}")

    def add(self, **rule: Any) -> int:
        """Arm a rule (see `Rule`); returns its id."""
        return int(self._call("POST", "", rule)["id"])

    def hits(self, rule_id: int) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/{rule_id}")["hits"])

    def remove(self, rule_id: int) -> None:
        self._call("DELETE", f"/{rule_id}")

    def clear(self) -> None:
        self._call("DELETE")

    def drop_watches(self, **match: Any) -> int:
        """Cut the open watches matching (method, path, query); returns how many."""
        return int(self._call("POST", "/drop", match)["dropped"])
