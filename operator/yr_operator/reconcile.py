"""The one idempotent reconcile: read a YRInstance and its pods, apply the plan, post events."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import time
from typing import Any

from yr import contract as c

from . import metrics
from .builders import build_pod, incarnation_of
from .events import post_event
from .group_reconcile import GroupReconciler, Placement
from .groups import in_bundle, rejected_at_admission
from .kube import ApiError, Conflict, Kube, NotFound
from .leases import parse_time
from .owners import DyingOwners
from .plan import Plan, plan
from .postmortem import keep_last_words
from .status import build_status, creating_quietly, status_changed, status_patch
from .timers import Requeue

log = logging.getLogger("yr_operator")
Key = tuple[str, str]  # (namespace, name)
RETRY_SECONDS = 1.0
QUIET_CHECK_S = 2.0  # a pod ContainerCreating this long has its Warning Events read


def _event_time(event: dict[str, Any]) -> str:
    return event.get("lastTimestamp") or event.get("eventTime") or ""


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reconciler:
    """Serialises reconciles per instance and remembers restart times between them."""

    def __init__(
        self, *, kube: Kube, image: str, service_account: str, dying: DyingOwners | None = None
    ) -> None:
        self.kube = kube
        self.dying = dying or DyingOwners()
        self.image = image
        self.service_account = service_account
        self._locks: dict[Key, asyncio.Lock] = {}
        self._queued: set[Key] = set()  # a reconcile is waiting for the lock: coalesce into it
        self._users: dict[Key, int] = {}  # reconciles holding or awaiting each key's lock
        self._restart_at: dict[tuple[str, str, str, int], float] = {}
        self._requeue = Requeue(lambda ns, name: self.reconcile_logged(namespace=ns, name=name))
        self._payload_held_by: dict[Key, str] = {}  # uid of the pod made owner of the payload
        self.groups = GroupReconciler(kube=kube, image=image, wake_instance=self._wake)

    async def _wake(self, namespace: str, name: str) -> None:
        await self.reconcile_logged(namespace=namespace, name=name)

    async def reconcile(
        self, *, namespace: str, name: str, body: dict[str, Any] | None = None
    ) -> None:
        """Bring one instance to its desired state; safe to call any number of times."""
        key = (namespace, name)
        fresh = body is not None and not body.get("status")
        if key in self._queued and not fresh:
            return  # the queued run reads the state after we would have: it does our work
        with metrics.reconciling():
            await self._reconcile(key, body=body, fresh=fresh)

    async def _reconcile(self, key: Key, *, body: dict[str, Any] | None, fresh: bool) -> None:
        namespace, name = key
        lock = self._locks.setdefault(key, asyncio.Lock())
        # The lock is dropped only when nobody holds or awaits it: a new one while a run still
        # waits on the old would let two reconciles of one instance interleave.
        self._users[key] = self._users.get(key, 0) + 1
        self._queued.add(key)
        try:
            async with lock:
                self._queued.discard(key)
                # Hot path for a brand-new instance: no reads, just create the pod.
                if fresh and body is not None and await self._run(body, pods=[], fast=True):
                    return
                yri = await self.kube.get_yrinstance(namespace=namespace, name=name)
                if yri is None:
                    self._forget(key)
                    return
                pods = await self.kube.list_instance_pods(namespace=namespace, instance=name)
                warnings = await self._kubelet_warnings(yri, pods)
                await self._run(yri, pods=pods, fast=False, warnings=warnings)
        finally:
            self._queued.discard(key)
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key]
                self._locks.pop(key, None)

    async def _kubelet_warnings(
        self, yri: dict[str, Any], pods: list[dict[str, Any]]
    ) -> dict[str, tuple[str, str]]:
        """Why the kubelet keeps a pod ContainerCreating (e.g. FailedMount), from its Events.

        Asked only of pods older than a few seconds, and asked again while they stay so: the
        Event does not change the pod, so nothing else would wake the reconcile up."""
        meta, found = yri["metadata"], {}
        now = time.time()
        for pod in pods:
            if not creating_quietly(pod):
                continue
            pmeta = pod["metadata"]
            self.requeue(namespace=meta["namespace"], name=meta["name"], delay=QUIET_CHECK_S)
            created = parse_time(pmeta.get("creationTimestamp"))
            if created is None or now - created < QUIET_CHECK_S:
                continue
            events = await self.kube.warning_events(namespace=meta["namespace"], uid=pmeta["uid"])
            if events:
                latest = max(events, key=_event_time)
                found[pmeta["name"]] = (latest.get("reason") or "", latest.get("message") or "")
        return found

    async def _run(
        self,
        yri: dict[str, Any],
        *,
        pods: list[dict[str, Any]],
        fast: bool,
        warnings: dict[str, tuple[str, str]] | None = None,
    ) -> bool:
        """Plan and apply; False when the fast path must fall back to a full read."""
        meta, current = yri["metadata"], yri.get("status") or {}
        rkey = (
            meta["namespace"],
            meta["name"],
            meta.get("uid", ""),
            int(current.get("restarts") or 0),
        )
        now = time.time()
        in_group = bool((yri.get("spec") or {}).get("resourceGroup"))
        if in_group and await self._group_gone(yri, pods):
            return True
        if in_group and await self._lost_bundle_race(yri, pods):
            return True
        p = plan(
            yri,
            pods,
            now=now,
            now_iso=_iso(now),
            restart_at=self._restart_at.get(rkey),
            kubelet_warnings=warnings,
        )
        await keep_last_words(self.kube, yri, p)  # before its pod, and its log, are gone
        for pod in p.delete:
            await self.kube.delete_pod(namespace=meta["namespace"], name=pod)
        if p.create is not None and self.dying.owner_dying(yri):
            # Its owner is going, and it with it: a new pod would only fail (and warn) on the
            # session Secret already gone. Nothing to write, nothing to announce.
            return True
        if p.create is not None:
            async with self.groups.placing if in_group else contextlib.nullcontext():
                placement = await self.groups.take_bundle(yri) if in_group else Placement()
                if placement.removed:
                    return await self._group_gone(yri, pods)
                if placement.wait_reason:
                    await self._wait_for_group(yri, p, placement)
                    return True
                created = await self._create(yri, p, fast=fast, placement=placement)
            if created is not True:
                return created is None
            if p.status is not None and in_group:
                p = dataclasses.replace(p, status={**p.status, "bundle": placement.bundle})
        if p.status is not None and "bundle" in current and "bundle" not in p.status:
            p = dataclasses.replace(p, status={**p.status, "bundle": current["bundle"]})
        if p.restart_at is not None:
            incarnation = p.status["restarts"] if p.status else rkey[3]
            self._remember_restart((*rkey[:3], incarnation), when=p.restart_at, now=now)
        metrics.observe(yri, p.status)
        await self._write(yri, p.status, p.event)
        if p.delete_instance:  # after the status: its callers' watch sees why, then the delete
            await self.kube.delete_yrinstance(
                namespace=meta["namespace"], name=meta["name"], uid=meta.get("uid", "")
            )
        elif p.started_pod is not None:  # after the status: a Running pod is called at once
            await self._hold_payload(yri, *p.started_pod)
        return True

    async def _hold_payload(self, yri: dict[str, Any], pod_name: str, pod_uid: str) -> None:
        """Make the started pod an owner of the payload Secret, beside the YRInstance.

        Owned by its YRInstance alone, the Secret would be collected with the pod, at once,
        while the kubelet still runs and remounts the pod (FailedMount Warnings). With the pod
        as an owner too, the garbage collector deletes it only once the pod is gone; a restart
        keeps it through the YRInstance (the dead pod's reference is dropped as dangling)."""
        meta = yri["metadata"]
        key = (meta["namespace"], meta["name"])
        secret = (yri.get("spec") or {}).get("payloadSecret")
        if not secret or self._payload_held_by.get(key) == pod_uid:
            return
        owner = {"apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": pod_uid}
        try:
            await self.kube.add_owner_if_owned_by(
                namespace=key[0], secret=secret, owned_by=meta["uid"], owner=owner
            )
        except ApiError as e:
            log.warning("cannot make pod %s an owner of Secret %s: %s", pod_name, secret, e)
            if e.transient:
                self.requeue(namespace=key[0], name=key[1], delay=RETRY_SECONDS)
                return
            # Refused for good (e.g. an older chart without the patch right): teardown may
            # warn, nothing else depends on it.
        self._payload_held_by[key] = pod_uid

    def _remember_restart(
        self, rkey: tuple[str, str, str, int], *, when: float, now: float
    ) -> None:
        """Keep the restart time of the incarnation `rkey` (only) and wake up for it."""
        for older in [k for k in self._restart_at if k[:3] == rkey[:3] and k[3] < rkey[3]]:
            del self._restart_at[older]
        self._restart_at[rkey] = when
        self.requeue(namespace=rkey[0], name=rkey[1], delay=when - now)

    async def _group_gone(self, yri: dict[str, Any], pods: list[dict[str, Any]]) -> bool:
        """An instance whose resource group was removed ends (its pods, and so its subtree)."""
        meta, rg = yri["metadata"], yri["spec"]["resourceGroup"]
        group = await self.kube.get_group(namespace=meta["namespace"], name=rg["name"])
        if group is not None and not group["metadata"].get("deletionTimestamp"):
            return False
        for pod in pods:
            await self.kube.delete_pod(namespace=meta["namespace"], name=pod["metadata"]["name"])
        current = yri.get("status") or {}
        message = f"resource group {rg['name']} was removed"
        status = build_status(
            phase="Failed",
            reason=c.REASON_GROUP_REMOVED,
            message=message,
            restarts=int(current.get("restarts") or 0),
            generation=meta.get("generation"),
            previous=current,
            now=_iso(time.time()),
        )
        first = current.get("reason") != c.REASON_GROUP_REMOVED
        await self._write(
            yri, status, ("Normal", c.REASON_GROUP_REMOVED, message) if first else None
        )
        return True

    async def _lost_bundle_race(self, yri: dict[str, Any], pods: list[dict[str, Any]]) -> bool:
        """A pod the kubelet refused (its bundle's capacity was taken in the instant between
        releasing the placeholder and binding the pod) is deleted; its group reserves the
        bundle again, and the instance takes it over once that is done."""
        meta, current = yri["metadata"], yri.get("status") or {}
        k = int(current.get("restarts") or 0)
        for pod in pods:
            reason = rejected_at_admission(pod)
            if not reason or incarnation_of(pod) != k:
                continue
            pmeta = pod["metadata"]
            message = (pod.get("status") or {}).get("message") or reason
            log.info("%s: %s; creating it again", pmeta["name"], message)
            await self.kube.delete_pod_now(
                namespace=meta["namespace"], name=pmeta["name"], uid=pmeta["uid"]
            )
            if "bundle" in current:
                await self.groups.bundle_lost(yri, int(current["bundle"]))
            status = build_status(
                phase="Pending",
                reason=reason,
                message=f"{message}; retrying",
                restarts=k,
                generation=meta.get("generation"),
                previous=current,
                now=_iso(time.time()),
            )
            if "bundle" in current:
                status["bundle"] = current["bundle"]
            await self._write(yri, status, ("Warning", reason, message))
            self.requeue(namespace=meta["namespace"], name=meta["name"], delay=RETRY_SECONDS)
            return True
        return False

    async def _wait_for_group(self, yri: dict[str, Any], p: Plan, placement: Placement) -> None:
        """Pending until the group is admitted (a group reconcile wakes it) or a bundle frees."""
        meta = yri["metadata"]
        status = build_status(
            phase="Pending",
            reason=placement.wait_reason,
            message=placement.message,
            restarts=p.create or 0,
            generation=meta.get("generation"),
            previous=yri.get("status"),
            now=_iso(time.time()),
        )
        changed = (yri.get("status") or {}).get("reason") != placement.wait_reason
        await self._write(
            yri, status, ("Normal", placement.wait_reason, placement.message) if changed else None
        )
        self.requeue(namespace=meta["namespace"], name=meta["name"], delay=placement.retry_in)

    async def _create(
        self, yri: dict[str, Any], p: Plan, *, fast: bool, placement: Placement
    ) -> bool | None:
        """True created; False fall back to a full read; None handled (status written)."""
        meta = yri["metadata"]
        pod = build_pod(
            yri, incarnation=p.create or 0, image=self.image, service_account=self.service_account
        )
        if placement.node:
            rg = yri["spec"]["resourceGroup"]["name"]
            pod = in_bundle(pod, group=rg, bundle=placement.bundle, node=placement.node)
        try:
            await self.kube.create_pod(namespace=meta["namespace"], pod=pod)
            return True
        except Conflict:
            if fast:
                return False  # already there (an earlier operator run): read and decide
            # Taken by a pod our list did not count: an old owner's, awaiting the GC.
            self.requeue(namespace=meta["namespace"], name=meta["name"], delay=RETRY_SECONDS)
            return None
        except ApiError as e:
            metrics.pod_create_failed(e.status)
            if e.transient:
                raise  # still failing after the request's own retries: kopf retries later
            # Quota, admission or RBAC refusal: say so, like a ReplicaSet's FailedCreate.
            status = build_status(
                phase="Pending",
                reason="FailedCreate",
                message=e.message,
                restarts=p.create or 0,
                previous=yri.get("status"),
                now=_iso(time.time()),
            )
            await self._write(yri, status, ("Warning", "FailedCreate", e.message))
            self.requeue(namespace=meta["namespace"], name=meta["name"], delay=5.0)
            return None

    async def _write(
        self, yri: dict[str, Any], status: dict[str, Any] | None, event: tuple[str, str, str] | None
    ) -> None:
        meta, current = yri["metadata"], yri.get("status")
        if status is not None and status_changed(current, status):
            try:
                await self.kube.patch_yrinstance_status(
                    namespace=meta["namespace"],
                    name=meta["name"],
                    status=status_patch(current, status),
                )
            except NotFound:
                return  # deleted meanwhile: the GC takes care of the pod
        if event is not None:
            kind, reason, message = event
            post_event(yri, kind=kind, reason=reason, message=message)

    def requeue(self, *, namespace: str, name: str, delay: float) -> None:
        """Reconcile again after `delay` seconds (one timer per object, the earliest wins)."""
        self._requeue.after((namespace, name), delay)

    async def reconcile_logged(self, *, namespace: str, name: str) -> None:
        """For callers nobody retries (pod events, timers): on error, try again shortly."""
        try:
            await self.reconcile(namespace=namespace, name=name)
        except Exception as e:
            log.warning("reconcile of %s/%s failed, retrying: %s", namespace, name, e)
            self.requeue(namespace=namespace, name=name, delay=RETRY_SECONDS)

    def _forget(self, key: Key) -> None:
        metrics.forget(*key)
        self._payload_held_by.pop(key, None)
        self._requeue.cancel(key)
        for rkey in [k for k in self._restart_at if k[:2] == key]:
            del self._restart_at[rkey]
