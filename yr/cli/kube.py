"""``yr --kubernetes``: the same rows as a local session, read from YRInstances and their pods.

The tree comes from ownerReferences (a top-level instance is owned by its driver's Lease, a
child by its creator's Pod, which its YRInstance controls); a dead pod's last lines come from
``status.lastTermination.output``; stacks come from the pod's instance server (through the
gateway when ``YR_GATEWAY`` is set), with the token of the session's Secret.
"""

from __future__ import annotations

import base64
import datetime
import os
import re
from typing import Any

import grpc

from yr import contract as c
from yr.cli.waits import attach_waits
from yr.errors import DeathInfo
from yr.protocol import CHANNEL_OPTIONS, ROUTE_METADATA_KEY, TOKEN_METADATA_KEY, yr_pb2, yr_pb2_grpc
from yr.tls import PinnedServer

# The local runtime's words for the operator's phases, so both backends print the same facts.
STATES = {
    c.PENDING: "pending",
    c.RUNNING: "starting",
    c.READY: "ready",
    c.RESTARTING: "restarting",
    c.FAILED: "dead",
    c.TERMINATING: "terminated",
}
RPC_TIMEOUT_S = 10.0
_INCARNATION = re.compile(r"-\d+$")


def _age_s(timestamp: str | None, now: datetime.datetime) -> float:
    if not timestamp:
        return 0.0
    created = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return max((now - created).total_seconds(), 0.0)


def _owner(meta: dict[str, Any], names: set[str]) -> str:
    """The creating instance's name, or "driver" for a top-level one."""
    for ref in meta.get("ownerReferences") or ():
        if ref.get("kind") == c.KIND and ref.get("name") in names:
            return ref["name"]
        if ref.get("kind") == "Pod":  # <instance>-<incarnation>
            creator = _INCARNATION.sub("", ref.get("name", ""))
            if creator in names:
                return creator
    return "driver"


def _reason(status: dict[str, Any]) -> str:
    phase = status.get("phase") or c.PENDING
    ended = c.LastTermination.from_status(status.get("lastTermination"))
    if phase in (c.FAILED, c.RESTARTING) and ended is not None:
        return DeathInfo(
            exit_code=ended.exit_code, signal=ended.signal, reason=ended.message
        ).describe()
    if status.get("reason"):
        return f"{status['reason']}: {status.get('message', '')}".rstrip(": ")
    return ""


def instance_row(item: dict[str, Any], names: set[str], now: datetime.datetime) -> dict[str, Any]:
    meta, spec, status = item["metadata"], item.get("spec") or {}, item.get("status") or {}
    address = f"{status['podIP']}:{status.get('port') or c.PORT}" if status.get("podIP") else ""
    state = STATES.get(status.get("phase") or c.PENDING, "pending")
    return {
        "id": meta["name"],
        "name": spec.get("instanceName", ""),
        "class": spec.get("className", ""),
        "state": state,
        "reason": _reason(status),
        "cpu": spec.get("cpu", 0),
        "memory": spec.get("memory", 0),
        "custom_resources": dict(spec.get("customResources") or {}),
        "concurrency": spec.get("concurrency", 1),
        "restarts": int(status.get("restarts") or 0),
        "owner": _owner(meta, names),
        "age_s": round(_age_s(meta.get("creationTimestamp"), now), 3),
        "node": status.get("node", ""),
        "pod": status.get("podName", "") if state != "dead" else "",
        "pid": None,
        "address": address if state == "ready" else "",
        "root": (meta.get("labels") or {}).get(c.ROOT_LABEL, ""),
        "session": spec.get("session", ""),
    }


class KubernetesBackend:
    """YRInstances of one namespace, one view per driver session."""

    def __init__(self, *, namespace: str | None, kubeconfig: str = "") -> None:
        from kubernetes import client as k8s

        from yr.runtime.kubernetes.runtime import _load_config

        self._api_client = _load_config(kubeconfig or os.environ.get("KUBECONFIG", ""))
        self.namespace = namespace or "default"
        self._custom = k8s.CustomObjectsApi(self._api_client)
        self._core = k8s.CoreV1Api(self._api_client)

    def nothing_found(self) -> str:
        return f"no YRInstance in namespace {self.namespace}"

    def views(self) -> list[dict[str, Any]]:
        items = self._custom.list_namespaced_custom_object(
            c.GROUP, c.VERSION, self.namespace, c.PLURAL
        )["items"]
        names = {item["metadata"]["name"] for item in items}
        now = datetime.datetime.now(datetime.timezone.utc)
        by_session: dict[str, list[dict[str, Any]]] = {}
        for item in items:
            row = instance_row(item, names, now)
            by_session.setdefault(row["session"], []).append(row)
        views = [
            {
                "backend": "kubernetes",
                "title": f"driver {c.lease_name(session)} (namespace {self.namespace})",
                "session": {"id": session, "namespace": self.namespace},
                "instances": rows,
            }
            for session, rows in sorted(by_session.items())
        ]
        for view in views:
            attach_waits(view, self.waits)
        return views

    def _session_secret(self, session: str) -> dict[str, bytes]:
        secret = self._core.read_namespaced_secret(c.session_secret_name(session), self.namespace)
        return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}

    def _channel(self, address: str, session: dict[str, bytes], name: str) -> grpc.Channel:
        """TLS pinned to the gateway's certificate when going through it, else to the session's
        (as the SDK's own channels are: yr/tls.py)."""
        gateway = os.environ.get("YR_GATEWAY", "")
        if gateway:
            secret = self._core.read_namespaced_secret(c.GATEWAY_TLS_SECRET, self.namespace)
            server = PinnedServer(
                base64.b64decode(secret.data[c.TLS_CERT_KEY]), c.GATEWAY_SERVER_NAME
            )
            return server.secure_channel(gateway, list(CHANNEL_OPTIONS))
        server = PinnedServer(session[c.TLS_CERT_KEY], c.session_server_name(name))
        return server.secure_channel(address, list(CHANNEL_OPTIONS))

    def _debug(self, row: dict[str, Any], method: str, request: Any) -> Any:
        """A Debug RPC to the instance's pod, through the gateway when YR_GATEWAY is set."""
        if not row["address"]:
            raise LookupError(f"instance {row['id']} is {row['state']}: it has no live pod")
        session = self._session_secret(row["session"])
        metadata: tuple[tuple[str, str], ...] = (
            (TOKEN_METADATA_KEY, session[c.TOKEN_KEY].decode()),
        )
        if os.environ.get("YR_GATEWAY", ""):
            metadata += ((ROUTE_METADATA_KEY, row["id"]),)
        with self._channel(row["address"], session, row["session"]) as channel:
            rpc = getattr(yr_pb2_grpc.DebugStub(channel), method)
            return rpc(request, metadata=metadata, timeout=RPC_TIMEOUT_S)

    def stacks(self, view: dict[str, Any], row: dict[str, Any]) -> yr_pb2.StacksReply:
        return self._debug(row, "Stacks", yr_pb2.StacksRequest())

    def waits(self, row: dict[str, Any]) -> yr_pb2.WaitsReply:
        return self._debug(row, "Waits", yr_pb2.WaitsRequest())

    def logs(
        self, view: dict[str, Any], row: dict[str, Any], *, after: int
    ) -> tuple[list[tuple[int, str]], bool]:
        """The live pod's log; for a dead instance, the last lines the operator kept."""
        from kubernetes.client.exceptions import ApiException

        text = ""
        if row["pod"]:
            try:
                text = self._core.read_namespaced_pod_log(row["pod"], self.namespace)
            except ApiException as error:
                if error.status != 404:
                    raise
        ended = row["state"] in ("dead", "terminated")
        if not text:
            item = self._custom.get_namespaced_custom_object(
                c.GROUP, c.VERSION, self.namespace, c.PLURAL, row["id"]
            )
            last = (item.get("status") or {}).get("lastTermination") or {}
            text = last.get("output", "")
        lines = list(enumerate(text.splitlines(), start=1))
        return [(number, line) for number, line in lines if number > after], ended
