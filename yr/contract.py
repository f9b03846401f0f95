"""The names the SDK, the operator and the gateway share on Kubernetes, in one importable place.

Dependency-free on purpose: the operator imports it without the SDK's runtime, and the SDK
without kopf. docs/kubernetes-contract.md describes the same contract in prose.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# -- the custom resource --------------------------------------------------------------------
GROUP = "yr.dev"
VERSION = "v1alpha1"
PLURAL = "yrinstances"
KIND = "YRInstance"
API_VERSION = f"{GROUP}/{VERSION}"
# Resource groups (issue 12): one YRResourceGroup per group, its bundles held by placeholder pods.
GROUP_PLURAL = "yrresourcegroups"
GROUP_KIND = "YRResourceGroup"

# -- the instance server --------------------------------------------------------------------
PORT = 50051
PAYLOAD_DIR = "/var/run/yr/payload"
PAYLOAD_KEY = "payload"
TOKEN_KEY = "token"
# The session's TLS key pair (yr/tls.py), in the session Secret next to the token; mounted into
# instance pods at TLS_DIR. The certificate's only name is session_server_name(session).
TLS_CERT_KEY = "tls.crt"
TLS_PRIVATE_KEY_KEY = "tls.key"
TLS_DIR = "/var/run/yr/tls"
# Plaintext, health only: the kubelet's gRPC probe cannot speak TLS.
HEALTH_PORT = 50053

# -- labels and annotations -----------------------------------------------------------------
SESSION_LABEL = "yr.dev/session"
INSTANCE_LABEL = "yr.dev/instance"
CLASS_LABEL = "yr.dev/class"
NAME_LABEL = "yr.dev/name"
DRIVER_LABEL = "yr.dev/driver"
ROOT_LABEL = "yr.dev/root"  # the top-level instance of the tree: one selector lists a tree
DETACHED_LABEL = "yr.dev/detached"  # "true": owned by no driver; its session is its own
APP_LABEL = "app.kubernetes.io/name"
APP_VALUE = "yr-instance"
RESOURCE_GROUP_LABEL = "yr.dev/resource-group"  # on a group's placeholders and instances
BUNDLE_LABEL = "yr.dev/bundle"  # the bundle index a placeholder or instance pod holds
PLACEHOLDER_APP_VALUE = "yr-placeholder"  # APP_LABEL of a placeholder pod
METHODS_ANNOTATION = "yr.dev/methods"
INCARNATION_ANNOTATION = "yr.dev/incarnation"

# -- env of an instance pod -----------------------------------------------------------------
ENV_BACKEND = "YR_BACKEND"
ENV_INSTANCE_NAME = "YR_INSTANCE_NAME"
ENV_CLASS_NAME = "YR_CLASS_NAME"
ENV_SESSION = "YR_SESSION"
ENV_CONCURRENCY = "YR_CONCURRENCY"
ENV_PORT = "YR_PORT"
ENV_PAYLOAD_FILE = "YR_PAYLOAD_FILE"
ENV_SESSION_TOKEN = "YR_SESSION_TOKEN"
ENV_NAMESPACE = "YR_NAMESPACE"
ENV_POD_NAME = "YR_POD_NAME"
ENV_POD_UID = "YR_POD_UID"
ENV_POD_IP = "YR_POD_IP"
ENV_ROOT = "YR_ROOT"  # the root of the pod's tree, which the instances it creates inherit
ENV_INCARNATION = "YR_INCARNATION"
ENV_SHUTDOWN_GRACE = "YR_SHUTDOWN_GRACE_SECONDS"  # only when the class has __yr_shutdown__
ENV_TLS_CERT_FILE = "YR_TLS_CERT_FILE"
ENV_TLS_KEY_FILE = "YR_TLS_KEY_FILE"
ENV_HEALTH_PORT = "YR_HEALTH_PORT"

# -- the gateway ----------------------------------------------------------------------------
# The chart's self-signed key pair of the gateway (tls.crt, tls.key), read by drivers to pin it.
GATEWAY_TLS_SECRET = "yr-gateway-tls"
GATEWAY_SERVER_NAME = "yr-gateway"
ENV_GATEWAY_TLS_CERT_FILE = "YR_GATEWAY_TLS_CERT_FILE"
ENV_GATEWAY_TLS_KEY_FILE = "YR_GATEWAY_TLS_KEY_FILE"

# -- status.phase ---------------------------------------------------------------------------
PENDING = "Pending"
RUNNING = "Running"
READY = "Ready"
RESTARTING = "Restarting"
FAILED = "Failed"
TERMINATING = "Terminating"
PHASES = (PENDING, RUNNING, READY, RESTARTING, FAILED, TERMINATING)

# -- status.reason (besides the kubelet's and scheduler's own, passed through) ---------------
REASON_FAILED_CREATE = "FailedCreate"
REASON_UNSCHEDULABLE = "Unschedulable"
REASON_POD_DELETED = "PodDeleted"
REASON_SIGNAL = "Signal"
REASON_ERROR = "Error"
REASON_OOM_KILLED = "OOMKilled"
REASON_COMPLETED = "Completed"
REASON_DELETED = "Deleted"
REASON_OWNER_DELETED = "OwnerDeleted"
REASON_EXITED = "Exited"  # the instance ended itself with yr.exit(): not a crash

# -- yr.exit() in a pod ---------------------------------------------------------------------
# An instance may not write its own YRInstance (its Role has no patch), so it ends itself by
# exiting with this code; the operator records SELF_EXIT_MESSAGE as the reason (never restarting
# it) and then deletes the YRInstance, so callers get the same words as on the local runtime.
EXIT_CODE_SELF = 83
SELF_EXIT_MESSAGE = "ended by its own yr.exit()"
TERMINATION_LOG = "/dev/termination-log"  # the kubelet's default terminationMessagePath
REASON_WAITING_FOR_GROUP = "WaitingForResourceGroup"
REASON_GROUP_REMOVED = "ResourceGroupRemoved"

# -- YRResourceGroup status.phase -----------------------------------------------------------
GROUP_PENDING = "Pending"  # placeholders being placed, or released and waiting to retry
GROUP_ADMITTED = "Admitted"  # every bundle held on its node


# -- post-mortems ---------------------------------------------------------------------------
LAST_LINES = 20  # lines of a dead pod's output kept in status.lastTermination.output
LAST_LINES_MAX_BYTES = 4096  # ... and no more bytes than this (the newest kept)


def session_secret_name(session: str) -> str:
    """The Secret holding a session's gRPC token under TOKEN_KEY and its TLS key pair under
    TLS_CERT_KEY / TLS_PRIVATE_KEY_KEY, owned by the driver Lease."""
    return f"yr-session-{session}"


def session_server_name(session: str) -> str:
    """The one name in a session's certificate; clients check it in place of the pod IP."""
    return f"yr-session.{session}"


def payload_secret_name(instance: str) -> str:
    """The Secret holding an instance's pickled class and arguments under PAYLOAD_KEY."""
    return f"{instance}-payload"


def placeholder_name(group: str, bundle: int, attempt: int) -> str:
    """A placeholder pod's name: a fresh one per reservation attempt, so a retry never waits
    for the previous attempt's pods to be gone."""
    return f"{group}-b{bundle}-a{attempt}"


def lease_name(session: str) -> str:
    return f"yr-driver-{session}"


def pod_name(instance: str, incarnation: int) -> str:
    """Deterministic per incarnation, so a restarted operator never creates a second pod."""
    return f"{instance}-{incarnation}"


@dataclasses.dataclass(frozen=True)
class LastTermination:
    """How an incarnation ended (status.lastTermination): data, so nobody parses prose."""

    incarnation: int
    reason: str
    message: str = ""
    exit_code: int | None = None
    signal: int | None = None
    output: str = ""  # the last lines the pod printed, read before the operator deleted it

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "incarnation": self.incarnation,
            "reason": self.reason,
            "message": self.message,
        }
        if self.exit_code is not None:
            out["exitCode"] = self.exit_code
        if self.signal is not None:
            out["signal"] = self.signal
        if self.output:
            out["output"] = self.output
        return out

    @classmethod
    def from_status(cls, raw: dict[str, Any] | None) -> LastTermination | None:
        if not raw:
            return None
        return cls(
            incarnation=int(raw.get("incarnation") or 0),
            reason=str(raw.get("reason") or ""),
            message=str(raw.get("message") or ""),
            exit_code=raw.get("exitCode"),
            signal=raw.get("signal"),
            output=str(raw.get("output") or ""),
        )
