"""HTTP face of the emulated API server: URL routing, verbs, watch streams and discovery."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.cluster import kinds, openapi, protobuf, tables
from tests.cluster.auth import Authorizer, Identity, Tokens, check_path, request_for, verb_of
from tests.cluster.faults import Faults
from tests.cluster.meta import LOG_DIR_ANNOTATION, ApiError, bad_request, conflict, now_rfc3339
from tests.cluster.patches import apply_patch
from tests.cluster.resources import ResourceType
from tests.cluster.scheduler import bind_pod
from tests.cluster.selectors import field_selector, label_selector
from tests.cluster.store import Store
from tests.cluster.watches import Watch

VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-yr-emulated",
    "platform": "linux/amd64",
    "goVersion": "go1.23",
    "compiler": "gc",
}
DEFAULT_WATCH_TIMEOUT = 1800.0
# The real server bookmarks about once a minute; quiet tests would never see one.
DEFAULT_BOOKMARK_INTERVAL = 5.0


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")


def _out(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """Serve a CRD object under the version the client asked for (no conversion needed)."""
    return obj if obj.get("apiVersion") == rt.api_version else {**obj, "apiVersion": rt.api_version}


class Handlers:
    def __init__(
        self, store: Store, tokens: Tokens, bookmark_interval: float = DEFAULT_BOOKMARK_INTERVAL
    ) -> None:
        self.store = store
        self.tokens = tokens
        self.authorizer = Authorizer(store)
        self.bookmark_interval = bookmark_interval
        self.faults = Faults()  # armed by tests through /emulated/faults

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self.dispatch)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        return await self.faults.serve(request, self._serve)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._dispatch(request)
        except ApiError as error:
            return _json(error.status(), error.code)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        registry = self.store.registry
        identity = self.tokens.authenticate(request.headers.get("Authorization"))
        parts = path.strip("/").split("/")
        resource_path = (parts[0] == "api" and len(parts) > 2) or (
            parts[0] == "apis" and len(parts) > 3
        )
        if not resource_path:  # discovery and the like: authorized as a path, not a resource
            check_path(identity, path)
        if path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok")
        if path == "/version":
            return _json(VERSION)
        if path == openapi.PREFIX:
            return _json(openapi.index(registry))
        if path.startswith(openapi.PREFIX + "/"):
            return self._doc(openapi.document(registry, path[len(openapi.PREFIX) :]))
        if path == "/api":
            host = request.host
            return _json(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": host}
                    ],
                }
            )
        if path == "/apis":
            return _json(registry.group_list())
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 2:
            if len(parts) == 2:
                return self._doc(registry.group_doc(parts[1]))
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            return self._doc(registry.resource_list(group, version))
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            inner = registry.get(group, version, rest[2])
            if inner is not None and inner.namespaced:
                namespace, rest = rest[1], rest[2:]
        rt = registry.get(group, version, rest[0])
        if rt is None or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in rt.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if rt.namespaced and name is not None and namespace is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        watching = request.query.get("watch") in ("true", "1")
        verb = verb_of(request.method, name, watching)
        self.authorizer.check(identity, request_for(rt, verb, namespace, name, sub))
        return await self._verb(request, rt, namespace, name, sub)

    def _doc(self, doc: dict[str, Any] | None) -> web.Response:
        if doc is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return _json(doc)

    async def _verb(
        self,
        request: web.Request,
        rt: ResourceType,
        namespace: str | None,
        name: str | None,
        sub: str | None,
    ) -> web.StreamResponse:
        method, query, ns = request.method, request.query, namespace or ""
        if query.get("dryRun") and method != "GET":  # refuse rather than persist by surprise
            raise bad_request("dryRun is not supported by the emulated API server")
        if name is None:
            if method == "GET":
                if query.get("watch") in ("true", "1"):
                    return await self._watch(request, rt, namespace)
                return self._list(request, rt, namespace)
            if method == "POST":
                body = await self._body(request)
                return _json(_out(rt, self.store.create(rt, ns, body)), 201)
            if method == "DELETE":
                return self._delete_collection(request, rt, namespace)
        elif method == "GET" and sub == "log":
            if query.get("follow") in ("true", "1"):
                return await self._follow_log(request, rt, ns, name)
            return self._log(rt, ns, name, query)
        elif method == "GET":
            obj = self.store.require(rt, ns, name)
            if tables.wanted(request):
                return _json(tables.render(self.store, rt, [obj], kind="Table"))
            return _json(_out(rt, obj))
        elif method == "POST" and sub == "binding":
            return self._bind(rt, ns, name, await self._body(request))
        elif method == "POST" and sub == "token":
            return self._token_request(rt, ns, name, await self._body(request, optional=True))
        elif method == "PUT":
            body = await self._body(request)
            return _json(_out(rt, self.store.update(rt, ns, name, lambda _: body, sub)))
        elif method == "PATCH":
            patch = await self._body(request)
            ctype = request.headers.get("Content-Type", "")
            obj = self.store.update(
                rt, ns, name, lambda old: apply_patch(ctype, old, patch, rt.custom), sub
            )
            return _json(_out(rt, obj))
        elif method == "DELETE":
            options = dict(await self._body(request, optional=True) or {})
            for key in ("gracePeriodSeconds", "propagationPolicy"):
                if key in query:
                    value = query[key]
                    options[key] = int(value) if key == "gracePeriodSeconds" else value
            obj, removed = self.store.delete(rt, ns, name, options)
            if removed and not (rt.custom or rt.key == kinds.POD_KEY):
                details = {"name": name, "kind": rt.plural, "uid": obj["metadata"]["uid"]}
                return _json(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": details,
                    }
                )
            return _json(_out(rt, obj), 200 if removed else 202)
        raise ApiError(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )

    async def _body(self, request: web.Request, optional: bool = False) -> Any:
        raw = await request.read()
        if not raw.strip():
            if optional:
                return None
            raise bad_request("the request body is empty")
        if request.content_type == protobuf.MEDIA_TYPE:
            return protobuf.decode(raw)
        try:
            return json.loads(raw)
        except ValueError as error:
            raise bad_request(f"the request body is not valid JSON: {error}") from None

    def _selected(self, request: web.Request, rt: ResourceType, namespace: str | None):
        labels = label_selector(request.query.get("labelSelector"))
        fields = field_selector(request.query.get("fieldSelector"))
        return [o for o in self.store.items(rt, namespace) if labels(o) and fields(o)]

    def _list(self, request: web.Request, rt: ResourceType, namespace: str | None) -> web.Response:
        items = self._selected(request, rt, namespace)
        if tables.wanted(request):
            return _json(tables.render(self.store, rt, items))
        return _json(
            {
                "kind": f"{rt.kind}List",
                "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(self.store.rv)},
                "items": [_out(rt, o) for o in items],
            }
        )

    def _delete_collection(self, request: web.Request, rt: ResourceType, namespace: str | None):
        for obj in self._selected(request, rt, namespace):
            meta = obj["metadata"]
            if self.store.lookup(rt, meta.get("namespace", ""), meta["name"]) is not None:
                self.store.delete(rt, meta.get("namespace", ""), meta["name"], {})
        return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})

    def _bind(self, rt: ResourceType, ns: str, name: str, binding: dict[str, Any]) -> web.Response:
        node = (binding.get("target") or {}).get("name")
        if not node:
            raise bad_request("binding target name is required")
        pod = self.store.require(rt, ns, name)
        if pod["spec"].get("nodeName"):
            raise conflict(
                rt.plural,
                rt.group,
                name,
                f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"',
            )
        bind_pod(self.store, ns, name, node)
        return _json(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "code": 201,
            },
            201,
        )

    def _token_request(
        self, rt: ResourceType, ns: str, name: str, body: dict[str, Any] | None
    ) -> web.Response:
        """TokenRequest: a bearer token that authenticates as the ServiceAccount."""
        account = self.store.require(rt, ns, name)
        uid = account["metadata"]["uid"]
        token = self.tokens.issue(Identity.service_account(ns, name, uid))
        spec = dict((body or {}).get("spec") or {})
        spec.setdefault("expirationSeconds", 3600)
        spec.setdefault("audiences", ["https://kubernetes.default.svc"])
        return _json(
            {
                "kind": "TokenRequest",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": name, "namespace": ns},
                "spec": spec,
                "status": {
                    "token": token,
                    "expirationTimestamp": now_rfc3339(spec["expirationSeconds"]),
                },
            },
            201,
        )

    def _log_path(self, rt: ResourceType, ns: str, name: str, query: Any) -> Path:
        pod = self.store.require(rt, ns, name)
        containers = [c["name"] for c in pod["spec"].get("containers", [])]
        container = query.get("container") or (containers[0] if containers else "")
        node_rt = self.store.registry.get("", "v1", "nodes")
        assert node_rt is not None
        node = self.store.lookup(node_rt, "", pod["spec"].get("nodeName") or "")
        log_dir = ((node or {}).get("metadata", {}).get("annotations") or {}).get(
            LOG_DIR_ANNOTATION
        )
        if not log_dir:
            raise bad_request(f'pod "{name}" has no logs yet (not running on an emulated node)')
        return Path(log_dir) / f"{ns}_{name}_{pod['metadata']['uid']}" / f"{container}.log"

    async def _follow_log(
        self, request: web.Request, rt: ResourceType, ns: str, name: str
    ) -> web.StreamResponse:
        """``follow=true``: stream the log as it grows, until the container has stopped."""
        path = self._log_path(rt, ns, name, request.query)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        offset = 0
        try:
            while True:
                pod = self.store.lookup(rt, ns, name)
                stopped = pod is None or kinds.container_stopped(pod)
                if path.exists():
                    with path.open("rb") as handle:
                        handle.seek(offset)
                        chunk = handle.read()
                    if chunk:
                        offset += len(chunk)
                        await response.write(chunk)
                if stopped:  # everything it wrote has been sent
                    break
                await asyncio.sleep(0.05)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the reader closed its stream (kubectl logs -f interrupted, a driver done)
        return response

    def _log(self, rt: ResourceType, ns: str, name: str, query: Any) -> web.Response:
        path = self._log_path(rt, ns, name, query)
        text = path.read_text(errors="replace") if path.exists() else ""
        if "tailLines" in query:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(query["tailLines"]) :]) if int(query["tailLines"]) else ""
        return web.Response(text=text, content_type="text/plain")

    async def _watch(self, request: web.Request, rt: ResourceType, namespace: str | None):
        query = request.query
        watch = Watch(
            rt.key,
            namespace,
            label_selector(query.get("labelSelector")),
            field_selector(query.get("fieldSelector")),
        )
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            self.store.open_watch(watch, rt, query.get("resourceVersion"))
        except ApiError as error:
            await response.write(_line("ERROR", error.status()))
            return response
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT)
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        try:
            while (remaining := deadline - loop.time()) > 0:
                wait = min(remaining, self.bookmark_interval) if bookmarks else remaining
                try:
                    event = await asyncio.wait_for(watch.queue.get(), wait)
                except asyncio.TimeoutError:
                    if bookmarks:  # the queue is empty: everything up to store.rv was sent
                        await response.write(_line("BOOKMARK", self._bookmark(rt)))
                        continue
                    break
                chunk = []
                while True:
                    kind = watch.translate(event)
                    if kind:
                        chunk.append(_line(kind, _out(rt, event.obj)))
                    if watch.queue.empty():
                        break
                    event = watch.queue.get_nowait()
                if chunk:
                    await response.write(b"".join(chunk))
        except ConnectionResetError:
            pass  # the client went away
        finally:
            self.store.close_watch(watch)
        return response

    def _bookmark(self, rt: ResourceType) -> dict[str, Any]:
        """An object of the watched kind that carries only the current resourceVersion."""
        return {
            "kind": rt.kind,
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(self.store.rv)},
        }


def _line(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"
