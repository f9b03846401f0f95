"""The Deployment controller: keeps `spec.replicas` pods of a Deployment's template running.

Pods carry the template's labels plus `pod-template-hash` and a controller ownerReference; a
changed template replaces them (Recreate: old pods go first). The real controller goes through a
ReplicaSet per template; here the pods belong to the Deployment itself.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import secrets
from typing import Any

from tests.cluster.controller import Controller
from tests.cluster.meta import ApiError, now_rfc3339
from tests.cluster.watches import Event

log = logging.getLogger("deployments")
Obj = dict[str, Any]
DEPLOYMENTS_KEY = ("apps", "deployments")
HASH_LABEL = "pod-template-hash"
ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what the real generators draw name suffixes from


def template_hash(template: Obj) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    return "".join(ALPHABET[int(c, 16) % len(ALPHABET)] for c in digest[:10])


def _ready(pod: Obj) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _live(pod: Obj) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and pod.get("status", {}).get(
        "phase"
    ) not in ("Succeeded", "Failed")


class DeploymentController(Controller):
    name = "deployment"

    def concerns(self, event: Event) -> bool:
        return event.key in (DEPLOYMENTS_KEY, ("", "pods"), ("", "serviceaccounts"))

    def pass_once(self) -> None:
        deployments = self.store.registry.get("apps", "v1", "deployments")
        pods = self.store.registry.get("", "v1", "pods")
        assert deployments is not None and pods is not None
        by_owner: dict[str, list[Obj]] = {}
        for pod in self.store.items(pods):
            for ref in pod["metadata"].get("ownerReferences") or []:
                if ref.get("controller") and ref.get("kind") == "Deployment":
                    by_owner.setdefault(ref["uid"], []).append(pod)
        for deployment in self.store.items(deployments):
            if not deployment["metadata"].get("deletionTimestamp"):
                self._sync(deployment, by_owner.get(deployment["metadata"]["uid"], []))

    def _sync(self, deployment: Obj, owned: list[Obj]) -> None:
        pods = self.store.registry.get("", "v1", "pods")
        assert pods is not None
        spec, meta = deployment.get("spec", {}), deployment["metadata"]
        current = template_hash(spec.get("template", {}))
        old = [p for p in owned if p["metadata"].get("labels", {}).get(HASH_LABEL) != current]
        new = [p for p in owned if p not in old and _live(p)]
        for pod in old + new[spec.get("replicas", 1) :]:
            if not pod["metadata"].get("deletionTimestamp"):
                with contextlib.suppress(ApiError):
                    self.store.delete(pods, meta["namespace"], pod["metadata"]["name"], {})
        recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
        if not (recreate and old):
            for _ in range(spec.get("replicas", 1) - len(new)):
                self._create_pod(deployment, current)
        self._status(deployment, new, current)

    def _create_pod(self, deployment: Obj, current: str) -> None:
        pods = self.store.registry.get("", "v1", "pods")
        assert pods is not None
        meta = deployment["metadata"]
        template = copy.deepcopy(deployment["spec"].get("template", {}))
        pod_meta = template.get("metadata") or {}
        pod_meta["labels"] = {**(pod_meta.get("labels") or {}), HASH_LABEL: current}
        suffix = "".join(secrets.choice(ALPHABET) for _ in range(5))
        pod_meta["name"] = f"{meta['name']}-{current}-{suffix}"
        pod_meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": template["spec"]}
        try:
            self.store.create(pods, meta["namespace"], body)
        except ApiError as error:  # e.g. its ServiceAccount does not exist yet: retried
            log.info("creating a pod of %s/%s: %s", meta["namespace"], meta["name"], error)
            self._failed_create(deployment, error.message)

    def _failed_create(self, deployment: Obj, message: str) -> None:
        events = self.store.registry.get("", "v1", "events")
        assert events is not None
        meta, now = deployment["metadata"], now_rfc3339()
        with contextlib.suppress(ApiError):
            self.store.create(
                events,
                meta["namespace"],
                {
                    "metadata": {"generateName": f"{meta['name']}."},
                    "involvedObject": {
                        "kind": "Deployment",
                        "apiVersion": "apps/v1",
                        "name": meta["name"],
                        "namespace": meta["namespace"],
                        "uid": meta["uid"],
                    },
                    "type": "Warning",
                    "reason": "FailedCreate",
                    "message": f"Error creating: {message}",
                    "firstTimestamp": now,
                    "lastTimestamp": now,
                    "count": 1,
                    "source": {"component": "deployment-controller"},
                },
            )

    def _status(self, deployment: Obj, new: list[Obj], current: str) -> None:
        deployments = self.store.registry.get("apps", "v1", "deployments")
        assert deployments is not None
        meta, replicas = deployment["metadata"], deployment.get("spec", {}).get("replicas", 1)
        ready = sum(1 for p in new if _ready(p))
        available = "True" if ready >= replicas else "False"
        status = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": len(new),
            "updatedReplicas": len(new),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [
                {
                    "type": "Available",
                    "status": available,
                    "reason": "MinimumReplicasAvailable"
                    if available == "True"
                    else "MinimumReplicasUnavailable",
                }
            ],
        }
        if {k: v for k, v in (deployment.get("status") or {}).items()} == status:
            return
        with contextlib.suppress(ApiError):
            self.store.update(
                deployments,
                meta["namespace"],
                meta["name"],
                lambda d: {**d, "status": status},
                "status",
            )
