"""The node agent's side of the Kubernetes API: its Node object, pod status, deletes, events."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from tests.cluster.meta import LOG_DIR_ANNOTATION, now_rfc3339

log = logging.getLogger("node.api")
Obj = dict[str, Any]
SMP = "application/strategic-merge-patch+json"


class NodeApi:
    """Calls a kubelet makes, through the official client (so any API server will do)."""

    def __init__(
        self,
        core: CoreV1Api,
        name: str,
        host_ip: str,
        capacity: dict[str, str],
        labels: dict[str, str],
        log_dir: str,
    ) -> None:
        self.core = core
        self.name = name
        self.host_ip = host_ip
        self.capacity = capacity
        self.labels = labels
        self.log_dir = log_dir

    def patch_status(self, pod: Obj, status: Obj) -> bool:
        meta = pod["metadata"]
        try:
            self.core.patch_namespaced_pod_status(
                meta["name"],
                meta["namespace"],
                {"status": status},
                _content_type=SMP,
                _preload_content=False,
                _request_timeout=10,
            )
            return True
        except ApiException as error:
            if error.status != 404:
                log.warning("status of %s/%s: %s", meta["namespace"], meta["name"], error.reason)
            return False

    def is_current(self, pod: Obj) -> bool:
        """Whether the API still has this pod (same uid), not one recreated under its name."""
        meta = pod["metadata"]
        try:
            live = self.core.read_namespaced_pod(
                meta["name"], meta["namespace"], _request_timeout=10
            )
        except ApiException:
            return False
        return live.metadata.uid == meta["uid"]

    def delete_pod(self, pod: Obj) -> None:
        """The kubelet's final word: grace period 0, only for this incarnation (uid)."""
        meta = pod["metadata"]
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
        try:
            self.core.delete_namespaced_pod(
                meta["name"],
                meta["namespace"],
                body=body,
                _preload_content=False,
                _request_timeout=10,
            )
        except ApiException as error:
            if error.status not in (404, 409):
                log.warning("deleting %s/%s: %s", meta["namespace"], meta["name"], error.reason)

    def event(self, pod: Obj, kind: str, reason: str, message: str) -> None:
        meta, now = pod["metadata"], now_rfc3339()
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "kind": "Pod",
                "apiVersion": "v1",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "count": 1,
            "source": {"component": "kubelet", "host": self.name},
            "reportingComponent": "kubelet",
            "reportingInstance": self.name,
            "firstTimestamp": now,
            "lastTimestamp": now,
        }
        with contextlib.suppress(ApiException):  # events are best effort, as in the kubelet
            self.core.create_namespaced_event(
                meta["namespace"], body, _preload_content=False, _request_timeout=5
            )

    def register(self) -> None:
        body = {
            "metadata": {
                "name": self.name,
                "labels": self.labels,
                "annotations": {LOG_DIR_ANNOTATION: self.log_dir},
            }
        }
        try:
            self.core.create_node(body, _preload_content=False)
        except ApiException as error:
            if error.status != 409:
                raise
            self.core.patch_node(self.name, body, _preload_content=False)
        self.set_ready(True)

    def set_ready(self, ready: bool) -> None:
        now = now_rfc3339()
        reason, message = (
            ("KubeletReady", "kubelet is posting ready status")
            if ready
            else ("KubeletStopped", "the emulated node agent stopped")
        )
        status = {
            "capacity": self.capacity,
            "allocatable": self.capacity,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "reason": reason,
                    "message": message,
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": self.host_ip},
                {"type": "Hostname", "address": self.name},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.32.0-yr-emulated",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "containerRuntimeVersion": "emulated://0",
                "osImage": "",
                "kernelVersion": "",
                "kubeProxyVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }
        self.core.patch_node_status(
            self.name,
            {"status": status},
            _content_type=SMP,
            _preload_content=False,
            _request_timeout=5,
        )
