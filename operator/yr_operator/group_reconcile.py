"""Resource groups on the cluster: reserve bundles with placeholder pods, hand them to instances."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from yr import contract as c

from .events import post_event
from .groups import (
    REBIND_ATTEMPT,
    GroupPlan,
    bind_seconds,
    blocking_placeholders,
    build_placeholder_pod,
    choose_bundle,
    plan_group,
)
from .kube import ApiError, Conflict, Kube, NotFound
from .status import status_changed, status_patch
from .timers import Requeue

log = logging.getLogger("yr_operator")
Key = tuple[str, str]
RETRY_SECONDS = 1.0


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where an instance's next pod goes: a bundle's node, or why it must wait (or fail)."""

    bundle: int = -1
    node: str = ""
    wait_reason: str = ""
    message: str = ""
    removed: bool = False  # the group is gone: the instance ends
    retry_in: float = 5.0  # when a waiting instance looks again (admission also wakes it)


class GroupReconciler:
    """Serialises work per group (reservation and bundle claims) and wakes waiting instances."""

    def __init__(
        self,
        *,
        kube: Kube,
        image: str,
        wake_instance: Callable[[str, str], Awaitable[None]],
    ) -> None:
        self.kube = kube
        self.image = image
        self._wake_instance = wake_instance
        self._locks: dict[Key, asyncio.Lock] = {}
        self._requeue = Requeue(lambda ns, name: self.reconcile_logged(namespace=ns, name=name))
        # Held while placeholders are created, and from a takeover's check that no placeholder
        # waits in the scheduler until the instance pod is bound: a placeholder released to its
        # instance is then never taken by another group's pending placeholder (a steal that
        # can leave two admitted teams each short of a member).
        self.placing = asyncio.Lock()

    def _lock(self, key: Key) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def reconcile(self, *, namespace: str, name: str, retry_now: bool = False) -> None:
        """Bring one group to its desired state; safe to call any number of times."""
        key = (namespace, name)
        async with self.placing, self._lock(key):
            group = await self.kube.get_group(namespace=namespace, name=name)
            if group is None or group["metadata"].get("deletionTimestamp"):
                self._forget(key)
                return  # the garbage collector deletes its placeholders
            pods = await self.kube.list_placeholders(namespace=namespace, group=name)
            p = plan_group(group, pods, now=time.time(), bind_s=bind_seconds(), retry_now=retry_now)
            changed = status_changed(group.get("status"), p.status)
            await self._apply(group, p)
        # Newly admitted, or a lost bundle placed again: its waiting instances go on.
        if changed and p.status.get("phase") == c.GROUP_ADMITTED:
            for instance in await self.kube.list_group_instances(namespace=namespace, group=name):
                await self._wake_instance(namespace, instance)

    async def _apply(self, group: dict[str, Any], p: GroupPlan) -> None:
        meta = group["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        for pod in p.delete:
            await self.kube.delete_pod(namespace=namespace, name=pod)
        current = group.get("status") or {}
        if status_changed(current, p.status):
            try:
                await self.kube.patch_group_status(
                    namespace=namespace, name=name, status=status_patch(current, p.status)
                )
            except NotFound:
                return
        wanted = [(b, int(p.status["attempt"])) for b in p.create]
        wanted += [(b, REBIND_ATTEMPT) for b in p.rebind]
        for bundle, attempt in wanted:
            pod = build_placeholder_pod(group, bundle=bundle, attempt=attempt, image=self.image)
            with contextlib.suppress(Conflict):  # created by an earlier run of this attempt
                await self.kube.create_pod(namespace=namespace, pod=pod)
        if p.event is not None:
            kind, reason, message = p.event
            post_event(group, kind=kind, reason=reason, message=message)
        if p.requeue_in is not None:
            self.requeue(namespace=namespace, name=name, delay=p.requeue_in)

    async def capacity_freed(self, *, namespace: str) -> None:
        """A group went away: released groups of the namespace try again now, not after
        their backoff (the oldest first, so the longest waiting gets the first chance)."""
        waiting = [
            g
            for g in await self.kube.list_groups(namespace=namespace)
            if (g.get("status") or {}).get("retryAt") and not g["metadata"].get("deletionTimestamp")
        ]
        waiting.sort(key=lambda g: g["metadata"].get("creationTimestamp") or "")
        for group in waiting:
            await self.reconcile_logged(
                namespace=namespace, name=group["metadata"]["name"], retry_now=True
            )

    async def take_bundle(self, yri: dict[str, Any]) -> Placement:
        """Claim a bundle of the instance's admitted group and free its placeholder, so that
        the instance's pod, bound to that node, gets the placeholder's capacity. The caller
        holds ``placing`` until that pod is created."""
        meta, wanted = yri["metadata"], yri["spec"]["resourceGroup"]
        namespace, instance, name = meta["namespace"], meta["name"], wanted["name"]
        waiting = blocking_placeholders(
            await self.kube.list_placeholders(namespace=namespace),
            now=time.time(),
            bind_s=bind_seconds(),
        )
        if waiting:
            return Placement(
                wait_reason="WaitingForReservations",
                message=f"placeholder pod(s) {', '.join(waiting[:3])} wait for the "
                "scheduler: the bundle passes to this instance once none could take it",
                retry_in=0.5,
            )
        async with self._lock((namespace, name)):
            group = await self.kube.get_group(namespace=namespace, name=name)
            if group is None or group["metadata"].get("deletionTimestamp"):
                return Placement(removed=True, message=f"resource group {name} was removed")
            status = group.get("status") or {}
            if status.get("phase") != c.GROUP_ADMITTED:
                detail = status.get("message") or "not reserved yet"
                return Placement(
                    wait_reason=c.REASON_WAITING_FOR_GROUP,
                    message=f"resource group {name} is {status.get('phase') or 'Pending'}: "
                    f"{detail}",
                )
            chosen = choose_bundle(group, instance=instance, index=int(wanted["bundleIndex"]))
            if isinstance(chosen, str):
                return Placement(wait_reason="BundleInUse", message=f"{name}: {chosen}")
            bundles = [dict(b) for b in status["bundles"]]
            if not bundles[chosen].get("node"):
                return Placement(
                    wait_reason="BundleLost",
                    message=f"bundle {chosen} of resource group {name} is being reserved again "
                    "(its capacity was taken while it passed to this instance)",
                )
            if bundles[chosen].get("instance") != instance:
                bundles[chosen]["instance"] = instance
                try:
                    await self.kube.patch_group_status(
                        namespace=namespace,
                        name=name,
                        status={"bundles": bundles},
                        resource_version=group["metadata"]["resourceVersion"],
                    )
                except Conflict:
                    return Placement(wait_reason="BundleInUse", message="claim raced; retrying")
            await self._release_placeholder(namespace, name, chosen)
            return Placement(bundle=chosen, node=bundles[chosen]["node"])

    async def bundle_lost(self, yri: dict[str, Any], bundle: int) -> None:
        """The kubelet refused the instance's pod on its bundle's node: forget the node, so the
        group reserves that bundle again (see plan_group) before the instance retries."""
        meta, name = yri["metadata"], yri["spec"]["resourceGroup"]["name"]
        namespace = meta["namespace"]
        async with self._lock((namespace, name)):
            group = await self.kube.get_group(namespace=namespace, name=name)
            if group is None or bundle >= len((group.get("status") or {}).get("bundles") or []):
                return
            bundles = [dict(b) for b in group["status"]["bundles"]]
            bundles[bundle]["node"] = ""
            with contextlib.suppress(NotFound):
                await self.kube.patch_group_status(
                    namespace=namespace, name=name, status={"bundles": bundles}
                )
        self.requeue(namespace=namespace, name=name, delay=0)

    async def _release_placeholder(self, namespace: str, group: str, bundle: int) -> None:
        for pod in await self.kube.list_placeholders(namespace=namespace, group=group):
            labels = pod["metadata"].get("labels") or {}
            if labels.get(c.BUNDLE_LABEL) == str(bundle):
                meta = pod["metadata"]
                await self.kube.delete_pod_now(
                    namespace=namespace, name=meta["name"], uid=meta["uid"]
                )

    def requeue(self, *, namespace: str, name: str, delay: float) -> None:
        """Reconcile again after `delay` seconds (one timer per object, the earliest wins)."""
        self._requeue.after((namespace, name), delay)

    async def reconcile_logged(self, *, namespace: str, name: str, retry_now: bool = False) -> None:
        try:
            await self.reconcile(namespace=namespace, name=name, retry_now=retry_now)
        except (ApiError, OSError) as e:
            log.warning("reconcile of group %s/%s failed, retrying: %s", namespace, name, e)
            self.requeue(namespace=namespace, name=name, delay=RETRY_SECONDS)

    def _forget(self, key: Key) -> None:
        self._requeue.cancel(key)
