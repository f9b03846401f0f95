"""Pure builders of the Kubernetes objects the SDK creates (see docs/kubernetes-contract.md)."""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
from typing import Any

from yr import contract as c
from yr.runtime.base import InstanceSpec


def lease_duration_seconds() -> int:
    """YR_LEASE_DURATION_SECONDS (driver env, default 15): how long the driver's Lease lasts
    unrenewed; the driver renews it every third of that."""
    raw = os.environ.get("YR_LEASE_DURATION_SECONDS", "15")
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"YR_LEASE_DURATION_SECONDS must be a whole number >= 1, got {raw!r}")
    return value


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


def build_lease(*, session: str, holder: str, duration_s: int) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": c.lease_name(session),
            "labels": {c.DRIVER_LABEL: "true", c.SESSION_LABEL: session},
        },
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration_s,
            "acquireTime": now_microtime(),
            "renewTime": now_microtime(),
        },
    }


def build_token_secret(
    *, session: str, token: str, certificate: bytes, key: bytes, owner: dict[str, Any]
) -> dict[str, Any]:
    """The session Secret: the token and the session's TLS key pair (see yr/tls.py)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": c.session_secret_name(session),
            "labels": {c.SESSION_LABEL: session},
            "ownerReferences": [owner],
        },
        "type": "Opaque",
        "data": {
            c.TOKEN_KEY: base64.b64encode(token.encode()).decode(),
            c.TLS_CERT_KEY: base64.b64encode(certificate).decode(),
            c.TLS_PRIVATE_KEY_KEY: base64.b64encode(key).decode(),
        },
    }


def build_payload_secret(*, name: str, session: str, payload: bytes, owner: dict[str, Any]):
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": c.payload_secret_name(name),
            "labels": {c.SESSION_LABEL: session, c.INSTANCE_LABEL: name},
            "ownerReferences": [owner],
        },
        "type": "Opaque",
        "data": {c.PAYLOAD_KEY: base64.b64encode(payload).decode()},
    }


def name_label(name: str, namespace: str) -> str:
    import hashlib

    return hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:32]


def build_yrinstance(
    *, name: str, session: str, spec: InstanceSpec, owner: dict[str, Any] | None, root: str = ""
) -> dict[str, Any]:
    """``root``: the top-level instance of the creator's tree ("" for a driver: it is one).
    ``owner`` None: a detached instance, owned by nothing but its namespace."""
    options = spec.options
    labels = {
        c.SESSION_LABEL: session,
        c.CLASS_LABEL: dns_label(spec.class_info.short_name),
        c.ROOT_LABEL: root or name,
    }
    if options.name:
        labels[c.NAME_LABEL] = name_label(options.name, options.namespace)
    if owner is None:
        labels[c.DETACHED_LABEL] = "true"
    body: dict[str, Any] = {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {c.METHODS_ANNOTATION: json.dumps(spec.class_info.method_meta)},
        },
        "spec": {
            "className": spec.class_info.class_name,
            "cpu": options.cpu,
            "memory": options.memory,
            "concurrency": options.concurrency,
            "maxRestarts": options.recover_retry_times,
            "payloadSecret": c.payload_secret_name(name),
            "session": session,
        },
    }
    if owner is not None:
        body["metadata"]["ownerReferences"] = [owner]
    if options.name:
        body["spec"]["instanceName"] = options.name
        body["spec"]["instanceNamespace"] = options.namespace
    if spec.class_info.has_shutdown_hook:
        body["spec"]["shutdownGraceSeconds"] = int(options.shutdown_grace_s())
    if options.env_vars:
        body["spec"]["envVars"] = dict(options.env_vars)
    if options.pod_labels:
        body["spec"]["podLabels"] = dict(options.pod_labels)
    placement = options.resource_group_options
    if placement.placed:
        labels[c.RESOURCE_GROUP_LABEL] = placement.resource_group_name
        body["spec"]["resourceGroup"] = {
            "name": placement.resource_group_name,
            "bundleIndex": placement.bundle_index,
        }
    if options.custom_resources:  # extended resources: whole counts (see yr/resources.py)
        body["spec"]["customResources"] = [
            {"name": name, "quantity": int(amount)}
            for name, amount in sorted(options.custom_resources.items())
        ]
    return body
