"""A minimal async Kubernetes client: the few calls the reconcile makes, on kopf's event loop."""

from __future__ import annotations

import asyncio
import json
import os
import random
import ssl
from typing import Any
from urllib.parse import quote

import aiohttp
import kubernetes

from yr.contract import (
    APP_LABEL,
    APP_VALUE,
    GROUP,
    GROUP_PLURAL,
    INSTANCE_LABEL,
    PLACEHOLDER_APP_VALUE,
    PLURAL,
    RESOURCE_GROUP_LABEL,
    VERSION,
)

from .builders import instance_label_value

RETRY_BUDGET_S = 30.0  # a 429/5xx keeps being retried for this long within one request
MAX_DELAY_S = 10.0


class ApiError(Exception):
    """A non-2xx answer; `status` is the HTTP code, subclasses name the common ones."""

    def __init__(self, status: int, body: Any, retry_after: float | None = None) -> None:
        message = body.get("message") if isinstance(body, dict) else str(body)
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message or ""
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        return self.status == 429 or self.status >= 500


class NotFound(ApiError):
    """404."""


class Conflict(ApiError):
    """409: already exists, or a failed precondition."""


_TYPED: dict[int, type[ApiError]] = {404: NotFound, 409: Conflict}


def api_error(status: int, body: Any, retry_after: float | None = None) -> ApiError:
    return _TYPED.get(status, ApiError)(status, body, retry_after)


def _retry_after(raw: str | None) -> float | None:
    try:
        return min(max(float(raw), 0.0), MAX_DELAY_S) if raw is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def load_configuration() -> kubernetes.client.Configuration:
    """Kubeconfig ($KUBECONFIG or ~/.kube/config) if present, else the in-cluster account."""
    cfg = kubernetes.client.Configuration()
    in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ and "KUBECONFIG" not in os.environ
    if in_cluster:
        kubernetes.config.load_incluster_config(client_configuration=cfg)
    else:
        kubernetes.config.load_kube_config(client_configuration=cfg)
    return cfg


class Kube:
    """Raw JSON over one aiohttp session; no model classes (they cost more than the call)."""

    def __init__(self, cfg: kubernetes.client.Configuration) -> None:
        self._cfg = cfg
        self._host = cfg.host.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self._host.startswith("https"):
            return False
        ctx = ssl.create_default_context(cafile=self._cfg.ssl_ca_cert)
        if not self._cfg.verify_ssl:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self._cfg.cert_file:
            ctx.load_cert_chain(self._cfg.cert_file, self._cfg.key_file)
        return ctx

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        # Refreshes a rotated in-cluster token or an exec/OIDC credential when due.
        token = self._cfg.get_api_key_with_prefix("authorization", alias="BearerToken")
        if token:
            headers["Authorization"] = token
        elif self._cfg.username:
            headers["Authorization"] = self._cfg.get_basic_auth_token()
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """One call; 429 and 5xx are retried (after Retry-After when given) for a while."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RETRY_BUDGET_S
        attempt = 0
        while True:
            try:
                return await self._once(
                    method, path, body=body, params=params, content_type=content_type
                )
            except ApiError as e:
                delay = e.retry_after
                if delay is None:
                    delay = min(0.1 * 2**attempt, MAX_DELAY_S) * (0.5 + random.random() / 2)
                if not e.transient or loop.time() + delay > deadline:
                    raise
                attempt += 1
                await asyncio.sleep(delay)  # the server's backoff, not synchronisation

    async def _once(
        self,
        method: str,
        path: str,
        *,
        body: Any,
        params: dict[str, str] | None,
        content_type: str,
    ) -> Any:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl(), limit=64)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=30)
            )
        headers = self._headers()
        if body is not None:
            headers["Content-Type"] = content_type
        async with self._session.request(
            method, self._host + path, json=body, params=params, headers=headers
        ) as resp:
            text = await resp.text()
            try:
                data = json.loads(text) if text else None
            except ValueError:
                data = text
            if resp.status >= 400:
                raise api_error(resp.status, data, _retry_after(resp.headers.get("Retry-After")))
            return data

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    # --- the calls the operator makes ---------------------------------------------------

    def _yri_path(self, namespace: str, name: str) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{quote(name)}"

    async def get_yrinstance(self, *, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", self._yri_path(namespace, name))
        except NotFound:
            return None

    async def patch_yrinstance_status(
        self, *, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        return await self.request(
            "PATCH",
            self._yri_path(namespace, name) + "/status",
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    async def list_instance_pods(self, *, namespace: str, instance: str) -> list[dict[str, Any]]:
        label = instance_label_value(instance)
        selector = f"{INSTANCE_LABEL}={label},{APP_LABEL}={APP_VALUE}"
        data = await self.request(
            "GET", f"/api/v1/namespaces/{namespace}/pods", params={"labelSelector": selector}
        )
        # Filter again: an emulated API server may ignore label selectors.
        return [
            p
            for p in (data or {}).get("items") or []
            if (p.get("metadata", {}).get("labels") or {}).get(INSTANCE_LABEL) == label
        ]

    async def warning_events(self, *, namespace: str, uid: str) -> list[dict[str, Any]]:
        """The Warning Events about one object (by uid), as the kubelet posts them."""
        data = await self.request(
            "GET",
            f"/api/v1/namespaces/{namespace}/events",
            params={"fieldSelector": f"involvedObject.uid={uid},type=Warning"},
        )
        return list((data or {}).get("items") or [])

    async def pod_log_tail(self, *, namespace: str, name: str, lines: int) -> str:
        """The last ``lines`` lines the pod's container wrote (RBAC: pods/log get)."""
        text = await self.request(
            "GET",
            f"/api/v1/namespaces/{namespace}/pods/{quote(name)}/log",
            params={"tailLines": str(lines), "limitBytes": str(64 * 1024)},
        )
        return text if isinstance(text, str) else json.dumps(text)

    async def add_owner_if_owned_by(
        self, *, namespace: str, secret: str, owned_by: str, owner: dict[str, Any]
    ) -> bool:
        """Append `owner` to Secret `secret`'s ownerReferences if its first owner has uid
        `owned_by` (a JSON Patch `test`, so no read and no Secret we do not manage is touched).

        False if the Secret is gone (404) or is not owned so (422: the test failed)."""
        ops = [
            {"op": "test", "path": "/metadata/ownerReferences/0/uid", "value": owned_by},
            {"op": "add", "path": "/metadata/ownerReferences/-", "value": owner},
        ]
        try:
            await self.request(
                "PATCH",
                f"/api/v1/namespaces/{namespace}/secrets/{quote(secret)}",
                body=ops,
                content_type="application/json-patch+json",
            )
        except NotFound:
            return False
        except ApiError as e:
            if e.status == 422:
                return False
            raise
        return True

    async def create_pod(self, *, namespace: str, pod: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", f"/api/v1/namespaces/{namespace}/pods", body=pod)

    async def delete(
        self,
        path: str,
        *,
        preconditions: dict[str, str] | None = None,
        grace_seconds: int | None = None,
    ) -> bool:
        """Delete; False if it was already gone (404) or changed under us (409)."""
        body: dict[str, Any] = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "propagationPolicy": "Background",
        }
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        if preconditions:
            body["preconditions"] = preconditions
        try:
            await self.request("DELETE", path, body=body)
        except (NotFound, Conflict):
            return False
        return True

    async def delete_yrinstance(self, *, namespace: str, name: str, uid: str) -> bool:
        """Delete one YRInstance, only the incarnation of the name we read (uid precondition)."""
        pre = {"uid": uid} if uid else None
        return await self.delete(self._yri_path(namespace, name), preconditions=pre)

    async def delete_pod(self, *, namespace: str, name: str) -> bool:
        return await self.delete(f"/api/v1/namespaces/{namespace}/pods/{quote(name)}")

    async def delete_lease(
        self, *, namespace: str, name: str, uid: str, resource_version: str
    ) -> bool:
        # The preconditions make a lease renewed since we looked survive the delete.
        path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{quote(name)}"
        pre = {"uid": uid, "resourceVersion": resource_version}
        return await self.delete(path, preconditions={k: v for k, v in pre.items() if v})

    # --- resource groups ------------------------------------------------------------------

    def _group_path(self, namespace: str, name: str) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{GROUP_PLURAL}/{quote(name)}"

    async def get_group(self, *, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", self._group_path(namespace, name))
        except NotFound:
            return None

    async def patch_group_status(
        self, *, namespace: str, name: str, status: dict[str, Any], resource_version: str = ""
    ) -> dict[str, Any]:
        """Merge-patch the status; with ``resource_version``, only if nobody wrote since."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return await self.request(
            "PATCH",
            self._group_path(namespace, name) + "/status",
            body=body,
            content_type="application/merge-patch+json",
        )

    async def list_groups(self, *, namespace: str) -> list[dict[str, Any]]:
        data = await self.request(
            "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{GROUP_PLURAL}"
        )
        return list((data or {}).get("items") or [])

    async def list_placeholders(self, *, namespace: str, group: str = "") -> list[dict[str, Any]]:
        """The placeholder pods of one group, or (``group`` empty) of every group there."""
        selector = f"{APP_LABEL}={PLACEHOLDER_APP_VALUE}"
        if group:
            selector += f",{RESOURCE_GROUP_LABEL}={group}"
        data = await self.request(
            "GET", f"/api/v1/namespaces/{namespace}/pods", params={"labelSelector": selector}
        )
        return [
            p
            for p in (data or {}).get("items") or []
            if (labels := p.get("metadata", {}).get("labels") or {}).get(APP_LABEL)
            == PLACEHOLDER_APP_VALUE
            and (not group or labels.get(RESOURCE_GROUP_LABEL) == group)
        ]

    async def list_group_instances(self, *, namespace: str, group: str) -> list[str]:
        """Names of the YRInstances placed in a group."""
        data = await self.request(
            "GET",
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}",
            params={"labelSelector": f"{RESOURCE_GROUP_LABEL}={group}"},
        )
        return [
            i["metadata"]["name"]
            for i in (data or {}).get("items") or []
            if (i["metadata"].get("labels") or {}).get(RESOURCE_GROUP_LABEL) == group
        ]

    async def delete_pod_now(self, *, namespace: str, name: str, uid: str) -> bool:
        """Delete a pod at once (grace 0), only the one with that uid."""
        return await self.delete(
            f"/api/v1/namespaces/{namespace}/pods/{quote(name)}",
            preconditions={"uid": uid},
            grace_seconds=0,
        )
