"""kopf handlers: every YRInstance and pod event funnels into the one reconcile."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from typing import Any

import kopf

from yr.contract import (
    APP_LABEL,
    APP_VALUE,
    DRIVER_LABEL,
    GROUP,
    GROUP_PLURAL,
    KIND,
    PLACEHOLDER_APP_VALUE,
    PLURAL,
    VERSION,
)

from .builders import default_image, default_service_account
from .kube import Kube, load_configuration
from .leases import Leases, delete_expired, grace_seconds
from .owners import DyingOwners
from .reconcile import Reconciler

PROGRESS_PREFIX = "operator.yr.dev"
RETRY_BACKOFF = 1.0  # seconds before kopf retries a handler that hit an API error


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Settings for a lean hot path; shared state that every handler reaches through memo."""
    # Progress and diff-base live in annotations, never in the status the operator owns.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PROGRESS_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PROGRESS_PREFIX, key="last-handled-configuration"
    )
    settings.posting.enabled = True  # kopf.event() below; kopf's own log lines are not posted
    settings.posting.reporting_component = "yr-operator"
    settings.posting.event_name_prefix = "yr-"
    settings.watching.reconnect_backoff = 0.1
    settings.watching.connect_timeout = 5
    settings.watching.server_timeout = 300
    # The client must outwait the server's own end of a watch, or every watch ends in an error.
    settings.watching.client_timeout = 330
    settings.networking.error_backoffs = (0.1, 0.5, 1, 2, 5)
    kube = Kube(load_configuration())
    memo.kube = kube
    memo.dying = DyingOwners()
    memo.reconciler = Reconciler(
        kube=kube,
        image=default_image(),
        service_account=default_service_account(),
        dying=memo.dying,
    )
    memo.leases = Leases(grace_s=grace_seconds())


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    task = memo.leases.task
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await memo.kube.close()


async def lease_expiry(*, leases: Leases, kube: Kube) -> None:
    """Delete driver Leases unrenewed for their leaseDurationSeconds and the grace.

    A plain task over what the watch reported, not a kopf timer: timers and daemons put a
    finalizer on their objects, and a driver must be able to delete its Lease with the
    operator down.
    """
    await delete_expired(leases=leases, kube=kube)


@kopf.on.create(GROUP, VERSION, PLURAL, backoff=RETRY_BACKOFF)
async def yrinstance_create(
    body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, **_: Any
) -> None:
    await memo.reconciler.reconcile(namespace=namespace, name=name, body=_plain(body))


@kopf.on.resume(GROUP, VERSION, PLURAL, backoff=RETRY_BACKOFF)
async def yrinstance_resume(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    await memo.reconciler.reconcile(namespace=namespace, name=name)


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", backoff=RETRY_BACKOFF)
async def yrinstance_update(
    namespace: str, name: str, memo: kopf.Memo, logger: logging.Logger, **_: Any
) -> None:
    # A pod is immutable: a changed spec shows in observedGeneration and in the next incarnation.
    logger.info("spec changed; it applies from the next incarnation")
    await memo.reconciler.reconcile(namespace=namespace, name=name)


@kopf.on.event("v1", "pods", labels={APP_LABEL: APP_VALUE})
async def pod_event(
    type: str | None,
    body: kopf.Body,
    namespace: str,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """A pod changed: reconcile the YRInstance that controls it."""
    memo.dying.observe(event_type=type, body=body)  # it may own nested instances
    owners = body.get("metadata", {}).get("ownerReferences") or []
    # The controller reference names the YRInstance; the yr.dev/instance label is a hash for
    # names longer than a label value may be.
    controller = next((o for o in owners if o.get("kind") == KIND and o.get("controller")), None)
    if controller is not None and controller.get("name"):
        await memo.reconciler.reconcile_logged(namespace=namespace, name=controller["name"])


@kopf.on.create(GROUP, VERSION, GROUP_PLURAL, backoff=RETRY_BACKOFF)
async def yrresourcegroup_create(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    await memo.reconciler.groups.reconcile(namespace=namespace, name=name)


@kopf.on.resume(GROUP, VERSION, GROUP_PLURAL, backoff=RETRY_BACKOFF)
async def yrresourcegroup_resume(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    await memo.reconciler.groups.reconcile(namespace=namespace, name=name)


@kopf.on.event(GROUP, VERSION, GROUP_PLURAL)
async def yrresourcegroup_event(
    type: str | None, body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, **_: Any
) -> None:
    """A group being deleted ends the instances placed in it (they fail, their pods go); once
    it is gone, groups waiting for capacity try again at once."""
    if type == "DELETED" or body.get("metadata", {}).get("deletionTimestamp"):
        kube = memo.reconciler.kube
        for instance in await kube.list_group_instances(namespace=namespace, group=name):
            await memo.reconciler.reconcile_logged(namespace=namespace, name=instance)
    if type == "DELETED":
        await memo.reconciler.groups.capacity_freed(namespace=namespace)


@kopf.on.event("v1", "pods", labels={APP_LABEL: PLACEHOLDER_APP_VALUE})
async def placeholder_event(body: kopf.Body, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    """A placeholder was bound (or went): its group may be complete now."""
    owners = body.get("metadata", {}).get("ownerReferences") or []
    group = next((o for o in owners if o.get("controller")), None)
    if group is not None and group.get("name"):
        await memo.reconciler.groups.reconcile_logged(namespace=namespace, name=group["name"])


@kopf.on.event("coordination.k8s.io", "v1", "leases", labels={DRIVER_LABEL: "true"})
async def lease_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.dying.observe(event_type=type, body=body)
    memo.leases.observe(event_type=type, body=_plain(body))
    leases: Leases = memo.leases
    if leases.task is None or leases.task.done():
        # Started from a resource handler, not at startup: only here can it post Events.
        leases.task = asyncio.create_task(lease_expiry(leases=leases, kube=memo.kube))


def _plain(body: kopf.Body) -> dict[str, Any]:
    """A detached plain dict: kopf's body is a live view that changes under us."""
    return copy.deepcopy({k: body[k] for k in body})
