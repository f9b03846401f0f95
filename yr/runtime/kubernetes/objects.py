"""Pure builders of the Kubernetes objects the SDK creates (see docs/kubernetes-contract.md)."""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
from typing import Any

from yr.runtime.base import InstanceSpec

GROUP = "yr.dev"
VERSION = "v1alpha1"
PLURAL = "yrinstances"
LEASE_DURATION_S = int(os.environ.get("YR_LEASE_DURATION_SECONDS", "15"))
METHODS_ANNOTATION = "yr.dev/methods"
# The API server stores objects up to ~1.5 MiB in etcd; base64 and metadata eat into that.
MAX_PAYLOAD_BYTES = 1024 * 1024 - 64 * 1024


def now_microtime() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dns_label(text: str, *, limit: int = 40) -> str:
    """A DNS-1123 label fragment from a class name (lowercase, digits, dashes)."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return (label or "instance")[:limit].rstrip("-")


def owner_reference(*, api_version: str, kind: str, name: str, uid: str, controller: bool = False):
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": controller,
        "blockOwnerDeletion": False,
    }


def build_lease(*, session: str, holder: str) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": f"yr-driver-{session}",
            "labels": {"yr.dev/driver": "true", "yr.dev/session": session},
        },
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": LEASE_DURATION_S,
            "acquireTime": now_microtime(),
            "renewTime": now_microtime(),
        },
    }


def build_token_secret(*, session: str, token: str, owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": f"yr-session-{session}",
            "labels": {"yr.dev/session": session},
            "ownerReferences": [owner],
        },
        "type": "Opaque",
        "data": {"token": base64.b64encode(token.encode()).decode()},
    }


def build_payload_secret(*, name: str, session: str, payload: bytes, owner: dict[str, Any]):
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": f"{name}-payload",
            "labels": {"yr.dev/session": session, "yr.dev/instance": name},
            "ownerReferences": [owner],
        },
        "type": "Opaque",
        "data": {"payload": base64.b64encode(payload).decode()},
    }


def name_label(name: str, namespace: str) -> str:
    import hashlib

    return hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:32]


def build_yrinstance(
    *, name: str, session: str, spec: InstanceSpec, owner: dict[str, Any]
) -> dict[str, Any]:
    options = spec.options
    labels = {"yr.dev/session": session, "yr.dev/class": dns_label(spec.class_info.short_name)}
    if options.name:
        labels["yr.dev/name"] = name_label(options.name, options.namespace)
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "YRInstance",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {METHODS_ANNOTATION: json.dumps(spec.class_info.method_meta)},
            "ownerReferences": [owner],
        },
        "spec": {
            "className": spec.class_info.class_name,
            "cpu": options.cpu,
            "memory": options.memory,
            "concurrency": options.concurrency,
            "maxRestarts": options.recover_retry_times,
            "payloadSecret": f"{name}-payload",
            "session": session,
        },
    }
    if options.name:
        body["spec"]["instanceName"] = options.name
        body["spec"]["instanceNamespace"] = options.namespace
    if options.env_vars:
        body["spec"]["envVars"] = dict(options.env_vars)
    if options.pod_labels:
        body["spec"]["podLabels"] = dict(options.pod_labels)
    if options.custom_resources:  # extended resources: whole counts (see yr/resources.py)
        body["spec"]["customResources"] = [
            {"name": name, "quantity": int(amount)}
            for name, amount in sorted(options.custom_resources.items())
        ]
    return body
