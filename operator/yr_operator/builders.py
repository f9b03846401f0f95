"""Pure builders for the objects the operator creates: the instance Pod (no I/O here)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from collections.abc import Sequence
from typing import Any

from yr import contract as c
from yr.contract import (
    APP_LABEL,
    APP_VALUE,
    INCARNATION_ANNOTATION,
    INSTANCE_LABEL,
    KIND,
    PAYLOAD_DIR,
    PORT,
    SESSION_LABEL,
    pod_name,
)

RUN_AS_USER = 10001
# The chart's image (repository yr, tag its appVersion = this package's version), never
# ":latest": Kubernetes always pulls ":latest", which fails for an image loaded into the node.
DEFAULT_IMAGE = f"yr:{importlib.metadata.version('yr')}"
DEFAULT_IMAGE_PULL_POLICY = "IfNotPresent"
DEFAULT_SERVICE_ACCOUNT = "yr-instance"

LABEL_VALUE_MAX = 63


def default_image() -> str:
    """The image used when a YRInstance leaves `spec.image` empty (operator env)."""
    return os.environ.get("YR_INSTANCE_IMAGE") or DEFAULT_IMAGE


def default_image_pull_policy() -> str:
    """The instance container's imagePullPolicy (operator env; the chart's image.pullPolicy)."""
    return os.environ.get("YR_INSTANCE_IMAGE_PULL_POLICY") or DEFAULT_IMAGE_PULL_POLICY


def default_image_pull_secrets() -> list[str]:
    """Secrets instance pods pull their image with (operator env, comma-separated; the chart's
    imagePullSecrets)."""
    raw = os.environ.get("YR_INSTANCE_IMAGE_PULL_SECRETS", "")
    return [name.strip() for name in raw.split(",") if name.strip()]


def default_service_account() -> str:
    """The ServiceAccount every instance pod runs as (operator env)."""
    return os.environ.get("YR_INSTANCE_SERVICE_ACCOUNT") or DEFAULT_SERVICE_ACCOUNT


def incarnation_of(pod: dict[str, Any]) -> int | None:
    """The incarnation a pod was built for, or None for a pod we did not build."""
    meta = pod.get("metadata") or {}
    raw = (meta.get("annotations") or {}).get(INCARNATION_ANNOTATION)
    if raw is None:
        instance = (meta.get("labels") or {}).get(INSTANCE_LABEL, "")
        prefix, _, raw = (meta.get("name") or "").rpartition("-")
        if instance_label_value(prefix) != instance:
            return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def owner_reference(yrinstance: dict[str, Any]) -> dict[str, Any]:
    """The controller ownerReference that lets the garbage collector delete the pod."""
    meta = yrinstance["metadata"]
    return {
        "apiVersion": c.API_VERSION,
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
            INSTANCE_LABEL: instance_label_value(yrinstance["metadata"]["name"]),
            SESSION_LABEL: str(spec["session"]),
            APP_LABEL: APP_VALUE,
        }
    )
    return labels


def instance_label_value(instance_name: str) -> str:
    """The `yr.dev/instance` label of an instance's pods: its name, or for a name longer than a
    label value may be (63), a prefix of it and a hash of all of it, so that it stays unique."""
    if len(instance_name) <= LABEL_VALUE_MAX:
        return instance_name
    digest = hashlib.sha256(instance_name.encode()).hexdigest()[:16]
    prefix = instance_name[: LABEL_VALUE_MAX - len(digest) - 1].rstrip("-.")
    return f"{prefix}-{digest}"


def _field_ref(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def root_of(yrinstance: dict[str, Any]) -> str:
    """The top-level instance of its tree (itself when it carries no root label)."""
    labels = yrinstance["metadata"].get("labels") or {}
    return labels.get(c.ROOT_LABEL) or yrinstance["metadata"]["name"]


STOP_GRACE_SECONDS = 5  # for the server to stop, beyond any __yr_shutdown__ hook


def termination_grace_seconds(spec: dict[str, Any]) -> int:
    """The pod's grace period: the hook's (openYuanrong's GRACEFUL_SHUTDOWN_TIME) and the
    server's own stop, or only the latter when the class has no hook."""
    return int(spec.get("shutdownGraceSeconds") or 0) + STOP_GRACE_SECONDS


def container_env(yrinstance: dict[str, Any]) -> list[dict[str, Any]]:
    """The contract's env list, then the user's envVars (ours win on a name clash)."""
    spec = yrinstance["spec"]
    session = str(spec["session"])
    env: list[dict[str, Any]] = [
        {"name": c.ENV_BACKEND, "value": "kubernetes"},
        {"name": c.ENV_INSTANCE_NAME, "value": yrinstance["metadata"]["name"]},
        {"name": c.ENV_ROOT, "value": root_of(yrinstance)},
        {"name": c.ENV_CLASS_NAME, "value": str(spec.get("className", ""))},
        {"name": c.ENV_SESSION, "value": session},
        {"name": c.ENV_CONCURRENCY, "value": str(spec.get("concurrency") or 1)},
        {"name": c.ENV_PORT, "value": str(PORT)},
        {"name": c.ENV_PAYLOAD_FILE, "value": f"{PAYLOAD_DIR}/{c.PAYLOAD_KEY}"},
        {"name": c.ENV_TLS_CERT_FILE, "value": f"{c.TLS_DIR}/{c.TLS_CERT_KEY}"},
        {"name": c.ENV_TLS_KEY_FILE, "value": f"{c.TLS_DIR}/{c.TLS_PRIVATE_KEY_KEY}"},
        {"name": c.ENV_HEALTH_PORT, "value": str(c.HEALTH_PORT)},
        {
            "name": c.ENV_SESSION_TOKEN,
            "valueFrom": {
                "secretKeyRef": {"name": c.session_secret_name(session), "key": c.TOKEN_KEY}
            },
        },
        _field_ref(c.ENV_NAMESPACE, "metadata.namespace"),
        _field_ref(c.ENV_POD_NAME, "metadata.name"),
        _field_ref(c.ENV_POD_UID, "metadata.uid"),
        _field_ref(c.ENV_POD_IP, "status.podIP"),
        # The server refuses calls meant for another incarnation (a reused pod IP).
        _field_ref(c.ENV_INCARNATION, f"metadata.annotations['{INCARNATION_ANNOTATION}']"),
    ]
    if spec.get("shutdownGraceSeconds") is not None:
        env.append({"name": c.ENV_SHUTDOWN_GRACE, "value": str(spec["shutdownGraceSeconds"])})
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
    image_pull_policy: str | None = None,
    image_pull_secrets: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The Pod that runs incarnation `incarnation` of a YRInstance (see the contract)."""
    meta = yrinstance["metadata"]
    spec = yrinstance["spec"]
    name = pod_name(meta["name"], incarnation)
    if image_pull_secrets is None:
        image_pull_secrets = default_image_pull_secrets()
    pod: dict[str, Any] = {
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
            "terminationGracePeriodSeconds": termination_grace_seconds(spec),
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
                    "imagePullPolicy": image_pull_policy or default_image_pull_policy(),
                    "command": ["python", "-m", "yr.server"],
                    "ports": [
                        {"name": "grpc", "containerPort": PORT, "protocol": "TCP"},
                        {"name": "health", "containerPort": c.HEALTH_PORT, "protocol": "TCP"},
                    ],
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
                    # The SDK calls a Running pod as soon as its server reports SERVING; Ready
                    # only matters through the gateway. The kubelet probes at container start,
                    # before the server can listen, and every failed probe is a Warning event:
                    # a 1 s delay lets a normal start pass its first probe. The gRPC port is
                    # TLS-only, which the kubelet's gRPC probe cannot speak: it probes the
                    # plaintext health-only port.
                    "readinessProbe": {
                        "grpc": {"port": c.HEALTH_PORT},
                        "initialDelaySeconds": 1,
                        "periodSeconds": 1,
                        "timeoutSeconds": 1,
                        "failureThreshold": 3,
                    },
                    "securityContext": container_security_context(),
                    # A crash before serving (e.g. a module missing from the image) then
                    # reaches the driver through lastTermination.message.
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "volumeMounts": [
                        {"name": "payload", "mountPath": PAYLOAD_DIR, "readOnly": True},
                        {"name": "session-tls", "mountPath": c.TLS_DIR, "readOnly": True},
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
                # The session's TLS key pair, and only it: the pod never reads the Secret
                # through the API (its Role cannot get Secrets). Optional, so that the
                # kubelet's remounts do not warn (FailedMount) when a session's teardown
                # deletes the Secret before the pods; at start the token's secretKeyRef
                # still requires the Secret.
                {
                    "name": "session-tls",
                    "secret": {
                        "secretName": c.session_secret_name(str(spec["session"])),
                        "optional": True,
                        "defaultMode": 0o440,
                        "items": [
                            {"key": c.TLS_CERT_KEY, "path": c.TLS_CERT_KEY},
                            {"key": c.TLS_PRIVATE_KEY_KEY, "path": c.TLS_PRIVATE_KEY_KEY},
                        ],
                    },
                },
                {"name": "tmp", "emptyDir": {}},
            ],
        },
    }
    if image_pull_secrets:
        pod["spec"]["imagePullSecrets"] = [{"name": secret} for secret in image_pull_secrets]
    return pod


def with_custom_resources(resources: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """Extended resources (spec.customResources) as limits, and requests equal to them."""
    custom = {
        item["name"]: str(int(item["quantity"])) for item in spec.get("customResources") or []
    }
    if custom:
        resources["requests"].update(custom)
        resources["limits"] = dict(custom)
    return resources
