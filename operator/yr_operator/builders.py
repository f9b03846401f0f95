"""Pure builders for the objects the operator creates: the instance Pod (no I/O here)."""

from __future__ import annotations

import os
from typing import Any

GROUP = "yr.dev"
VERSION = "v1alpha1"
PLURAL = "yrinstances"
KIND = "YRInstance"

PORT = 50051
PAYLOAD_DIR = "/var/run/yr/payload"
RUN_AS_USER = 10001
DEFAULT_IMAGE = "yr:latest"
DEFAULT_SERVICE_ACCOUNT = "yr-instance"

INSTANCE_LABEL = "yr.dev/instance"
SESSION_LABEL = "yr.dev/session"
APP_LABEL = "app.kubernetes.io/name"
APP_VALUE = "yr-instance"
INCARNATION_ANNOTATION = "yr.dev/incarnation"


def default_image() -> str:
    """The image used when a YRInstance leaves `spec.image` empty (operator env)."""
    return os.environ.get("YR_INSTANCE_IMAGE") or DEFAULT_IMAGE


def default_service_account() -> str:
    """The ServiceAccount every instance pod runs as (operator env)."""
    return os.environ.get("YR_INSTANCE_SERVICE_ACCOUNT") or DEFAULT_SERVICE_ACCOUNT


def pod_name(instance_name: str, incarnation: int) -> str:
    """Deterministic per incarnation, so a restarted operator never creates a second pod."""
    return f"{instance_name}-{incarnation}"


def incarnation_of(pod: dict[str, Any]) -> int | None:
    """The incarnation a pod was built for, or None for a pod we did not build."""
    meta = pod.get("metadata") or {}
    raw = (meta.get("annotations") or {}).get(INCARNATION_ANNOTATION)
    if raw is None:
        instance = (meta.get("labels") or {}).get(INSTANCE_LABEL, "")
        prefix, _, raw = (meta.get("name") or "").rpartition("-")
        if prefix != instance:
            return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def owner_reference(yrinstance: dict[str, Any]) -> dict[str, Any]:
    """The controller ownerReference that lets the garbage collector delete the pod."""
    meta = yrinstance["metadata"]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pod_labels(yrinstance: dict[str, Any]) -> dict[str, str]:
    """The user's podLabels overlaid by ours: selectors must never be overridden."""
    spec = yrinstance["spec"]
    labels = {str(k): str(v) for k, v in (spec.get("podLabels") or {}).items()}
    labels.update(
        {
            INSTANCE_LABEL: yrinstance["metadata"]["name"],
            SESSION_LABEL: str(spec["session"]),
            APP_LABEL: APP_VALUE,
        }
    )
    return labels


def _field_ref(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def container_env(yrinstance: dict[str, Any]) -> list[dict[str, Any]]:
    """The contract's env list, then the user's envVars (ours win on a name clash)."""
    spec = yrinstance["spec"]
    session = str(spec["session"])
    env: list[dict[str, Any]] = [
        {"name": "YR_BACKEND", "value": "kubernetes"},
        {"name": "YR_INSTANCE_NAME", "value": yrinstance["metadata"]["name"]},
        {"name": "YR_CLASS_NAME", "value": str(spec.get("className", ""))},
        {"name": "YR_SESSION", "value": session},
        {"name": "YR_CONCURRENCY", "value": str(spec.get("concurrency") or 1)},
        {"name": "YR_PORT", "value": str(PORT)},
        {"name": "YR_PAYLOAD_FILE", "value": f"{PAYLOAD_DIR}/payload"},
        {
            "name": "YR_SESSION_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": f"yr-session-{session}", "key": "token"}},
        },
        _field_ref("YR_NAMESPACE", "metadata.namespace"),
        _field_ref("YR_POD_NAME", "metadata.name"),
        _field_ref("YR_POD_UID", "metadata.uid"),
        _field_ref("YR_POD_IP", "status.podIP"),
    ]
    taken = {e["name"] for e in env}
    for key, value in (spec.get("envVars") or {}).items():
        if key not in taken:
            env.append({"name": str(key), "value": str(value)})
    return env


def container_security_context() -> dict[str, Any]:
    """Non-root and read-only: the payload is code, so the pod gets as little as possible."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def build_pod(
    yrinstance: dict[str, Any],
    *,
    incarnation: int,
    image: str | None = None,
    service_account: str | None = None,
) -> dict[str, Any]:
    """The Pod that runs incarnation `incarnation` of a YRInstance (see the contract)."""
    meta = yrinstance["metadata"]
    spec = yrinstance["spec"]
    name = pod_name(meta["name"], incarnation)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": meta.get("namespace"),
            "labels": pod_labels(yrinstance),
            "annotations": {INCARNATION_ANNOTATION: str(incarnation)},
            "ownerReferences": [owner_reference(yrinstance)],
        },
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": service_account or default_service_account(),
            "automountServiceAccountToken": True,
            # Service links only add env noise and slow container start.
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 5,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS_USER,
                "runAsGroup": RUN_AS_USER,
                "fsGroup": RUN_AS_USER,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "instance",
                    "image": spec.get("image") or image or default_image(),
                    "command": ["python", "-m", "yr.server"],
                    "ports": [{"name": "grpc", "containerPort": PORT, "protocol": "TCP"}],
                    "env": container_env(yrinstance),
                    "resources": with_custom_resources(
                        {
                            "requests": {
                                "cpu": f"{int(spec['cpu'])}m",
                                "memory": f"{int(spec['memory'])}Mi",
                            }
                        },
                        spec,
                    ),
                    "readinessProbe": {
                        "grpc": {"port": PORT},
                        "periodSeconds": 1,
                        "timeoutSeconds": 1,
                        "failureThreshold": 3,
                    },
                    "securityContext": container_security_context(),
                    "volumeMounts": [
                        {"name": "payload", "mountPath": PAYLOAD_DIR, "readOnly": True},
                        {"name": "tmp", "mountPath": "/tmp"},
                    ],
                }
            ],
            "volumes": [
                # 0440 + fsGroup: readable by the non-root user, by nobody else.
                {
                    "name": "payload",
                    "secret": {"secretName": spec["payloadSecret"], "defaultMode": 0o440},
                },
                {"name": "tmp", "emptyDir": {}},
            ],
        },
    }


def with_custom_resources(resources: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """Extended resources (spec.customResources) as limits, and requests equal to them."""
    custom = {
        item["name"]: str(int(item["quantity"])) for item in spec.get("customResources") or []
    }
    if custom:
        resources["requests"].update(custom)
        resources["limits"] = dict(custom)
    return resources
