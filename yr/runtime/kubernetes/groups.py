"""Resource groups on Kubernetes: YRResourceGroup objects, admission futures, placement checks."""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch

from yr import contract as c
from yr.errors import YRError, YRSchedulingError
from yr.runtime import node_resources
from yr.runtime.base import Bundle, InstanceSpec, ResourceGroupSpec
from yr.runtime.kubernetes import api

WATCH_SLICE_S = 30


def build_resource_group(
    *, spec: ResourceGroupSpec, session: str, owner: dict[str, Any]
) -> dict[str, Any]:
    """The YRResourceGroup the operator reserves with placeholder pods."""
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.GROUP_KIND,
        "metadata": {
            "name": spec.name,
            "labels": {c.SESSION_LABEL: session},
            "ownerReferences": [owner],
        },
        "spec": {
            "strategy": spec.strategy,
            "session": session,
            "bundles": [_bundle_body(bundle) for bundle in spec.bundles],
        },
    }


def _bundle_body(bundle: Bundle) -> dict[str, Any]:
    body: dict[str, Any] = {"cpu": bundle.cpu, "memory": bundle.memory}
    if bundle.custom:
        body["customResources"] = [
            {"name": name, "quantity": int(amount)}
            for name, amount in sorted(bundle.custom.items())
        ]
    return body


def _bundle_of(body: dict[str, Any]) -> dict[str, float]:
    """A stored bundle as resource name -> amount (CPU millicores, Memory MB, custom)."""
    amounts = {"CPU": float(body["cpu"]), "Memory": float(body["memory"])}
    for item in body.get("customResources") or []:
        amounts[item["name"]] = float(item["quantity"])
    return amounts


def _node_room(node: Any) -> dict[str, float]:
    allocatable = (node.status.allocatable or node.status.capacity or {}) if node.status else {}
    room = {
        "CPU": node_resources.cpu_millicores(allocatable.get("cpu")),
        "Memory": node_resources.memory_mb(allocatable.get("memory")),
    }
    for name, value in allocatable.items():
        if "/" in name:
            room[name] = float(value)
    return room


def _fits(bundle: dict[str, float], room: dict[str, float]) -> bool:
    return all(room.get(name, 0.0) >= amount for name, amount in bundle.items())


def _describe(bundle: dict[str, float]) -> str:
    parts = [f"{bundle['CPU']:g}m CPU", f"{bundle['Memory']:g} MB"]
    parts += [f"{amount:g} {name}" for name, amount in bundle.items() if "/" in name]
    return ", ".join(parts)


def never_admitted(spec: ResourceGroupSpec, rooms: list[dict[str, float]]) -> str:
    """Why the group can never be admitted on nodes of these sizes ("" if it can be)."""
    bundles = [_bundle_of(_bundle_body(b)) for b in spec.bundles]
    where = f"resource group {spec.name!r} ({spec.strategy})"
    if not rooms:
        return f"{where}: the cluster has no schedulable node"
    for index, bundle in enumerate(bundles):
        if not any(_fits(bundle, room) for room in rooms):
            return f"{where}: bundle {index} ({_describe(bundle)}) is larger than any node"
    names = set().union(*bundles)
    total = {name: sum(bundle.get(name, 0.0) for bundle in bundles) for name in names}
    whole = {name: sum(room.get(name, 0.0) for room in rooms) for name in total}
    if not _fits(total, whole):
        return (
            f"{where} needs {_describe(total)} in all, more than the cluster's {_describe(whole)}"
        )
    if spec.strategy == "STRICT_PACK" and not any(_fits(total, room) for room in rooms):
        return f"{where} needs {_describe(total)} on one node, larger than any node"
    if spec.strategy == "STRICT_SPREAD" and len(bundles) > len(rooms):
        return f"{where} needs {len(bundles)} distinct nodes, the cluster has {len(rooms)}"
    return ""


def check_placement(spec: InstanceSpec, group: dict[str, Any]) -> None:
    """Raise, before anything is created, when the instance cannot go where it asks: ValueError
    for a bundle the group lacks, YRSchedulingError for a bundle too small for it."""
    wanted = spec.options.resource_group_options
    name, index = wanted.resource_group_name, wanted.bundle_index
    bundles = [_bundle_of(b) for b in group["spec"]["bundles"]]
    if index >= len(bundles):
        raise ValueError(
            f"resource group {name!r} has {len(bundles)} bundle(s) (0..{len(bundles) - 1}), "
            f"no bundle_index {index}"
        )
    options = spec.options
    needs = {"CPU": float(options.cpu), "Memory": float(options.memory)}
    needs.update({k: float(v) for k, v in (options.custom_resources or {}).items()})
    candidates = [index] if index >= 0 else range(len(bundles))
    if not any(_fits(needs, bundles[i]) for i in candidates):
        which = f"bundle {index} ({_describe(bundles[index])})" if index >= 0 else "every bundle"
        raise YRSchedulingError(
            f"{spec.class_info.short_name} needs {_describe(needs)}, more than {which} of "
            f"resource group {name!r}; lower its InvokeOptions or make the bundle larger"
        )


class ResourceGroups:
    """A session's resource groups in one namespace, through the API server."""

    def __init__(self, *, api_client: k8s.ApiClient, namespace: str, session: str) -> None:
        self._custom = k8s.CustomObjectsApi(api_client)
        self._core = k8s.CoreV1Api(api_client)
        self._namespace = namespace
        self._session = session
        self._stopping = threading.Event()

    def _path_args(self) -> tuple[str, str, str, str]:
        return (c.GROUP, c.VERSION, self._namespace, c.GROUP_PLURAL)

    def create(self, spec: ResourceGroupSpec, *, owner: dict[str, Any]) -> None:
        impossible = self._never_admitted(spec)
        if impossible:
            raise YRSchedulingError(impossible)
        body = build_resource_group(spec=spec, session=self._session, owner=owner)
        try:
            api.call(self._custom.create_namespaced_custom_object, *self._path_args(), body)
        except api.Conflict:
            raise ValueError(
                f"a resource group named {spec.name!r} already exists in namespace "
                f"{self._namespace!r}"
            ) from None
        except api.KubeApiError as error:
            raise YRError(f"the API server refused YRResourceGroup {spec.name}: {error}") from None

    def _never_admitted(self, spec: ResourceGroupSpec) -> str:
        try:
            nodes = api.call(self._core.list_node).items
        except api.Forbidden:
            return ""  # an instance pod may not list nodes: the operator's status will say
        rooms = [
            _node_room(node)
            for node in nodes
            if not (node.spec and node.spec.unschedulable)
            and node_resources.kubernetes_node(node, {})["status"] == node_resources.NODE_READY
        ]
        return never_admitted(spec, rooms)

    def get(self, name: str) -> dict[str, Any]:
        try:
            return api.call(self._custom.get_namespaced_custom_object, *self._path_args(), name)
        except api.NotFound:
            raise ValueError(
                f"no resource group named {name!r} in namespace {self._namespace!r}"
            ) from None

    def describe(self, name: str) -> str:
        try:
            group = self.get(name)
        except ValueError as error:
            return str(error)
        status = group.get("status") or {}
        if not status:
            return (
                "no operator has acted on it (it has no status); is the yr operator running "
                "and watching this namespace?"
            )
        text = (
            f"{status.get('phase')}, {status.get('reserved', 0)}/{status.get('total', 0)} "
            "bundles reserved"
        )
        if status.get("reason"):
            text += f", {status['reason']}"
        return text + (f": {status['message']}" if status.get("message") else "")

    def admitted(self, name: str) -> concurrent.futures.Future:
        """Resolved when the group is Admitted; failed when it is deleted."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        threading.Thread(
            target=self._follow, args=(name, future), name="yr-k8s-group", daemon=True
        ).start()
        return future

    def _follow(self, name: str, future: concurrent.futures.Future) -> None:
        while not future.done() and not self._stopping.is_set():
            try:
                listing = api.call(
                    self._custom.list_namespaced_custom_object,
                    *self._path_args(),
                    field_selector=f"metadata.name={name}",
                )
                if self._settle(name, listing.get("items") or [], future, deleted=False):
                    return
                stream = watch.Watch().stream(
                    self._custom.list_namespaced_custom_object,
                    *self._path_args(),
                    field_selector=f"metadata.name={name}",
                    resource_version=listing["metadata"].get("resourceVersion", ""),
                    timeout_seconds=WATCH_SLICE_S,
                )
                for event in stream:
                    gone = event["type"] == "DELETED"
                    if self._settle(name, [event["object"]], future, deleted=gone):
                        return
                    if self._stopping.is_set() or future.done():
                        return
            except Exception as error:  # an API hiccup: look again shortly
                if isinstance(error, api.Forbidden):
                    future.set_exception(YRError(f"cannot follow resource group {name}: {error}"))
                    return
                self._stopping.wait(0.5)
        if not future.done():
            future.set_exception(YRError("the session was finalized"))

    @staticmethod
    def _settle(
        name: str, items: list[dict[str, Any]], future: concurrent.futures.Future, *, deleted: bool
    ) -> bool:
        if future.done():
            return True
        if deleted or not items or items[0]["metadata"].get("deletionTimestamp"):
            future.set_exception(YRError(f"resource group {name} was removed"))
            return True
        if (items[0].get("status") or {}).get("phase") == c.GROUP_ADMITTED:
            future.set_result(None)
            return True
        return False

    def remove(self, name: str) -> None:
        """Delete the group's instances (their subtrees follow them) and the group (its
        placeholders follow it)."""
        self.get(name)
        listing = api.call(
            self._custom.list_namespaced_custom_object,
            c.GROUP,
            c.VERSION,
            self._namespace,
            c.PLURAL,
            label_selector=f"{c.RESOURCE_GROUP_LABEL}={name}",
        )
        for instance in listing.get("items") or []:
            self._delete(c.PLURAL, instance["metadata"]["name"])
        self._delete(c.GROUP_PLURAL, name)

    def _delete(self, plural: str, name: str) -> None:
        with contextlib.suppress(api.NotFound):
            api.call(
                self._custom.delete_namespaced_custom_object,
                c.GROUP,
                c.VERSION,
                self._namespace,
                plural,
                name,
                body=k8s.V1DeleteOptions(propagation_policy="Background"),
            )

    def stop(self) -> None:
        self._stopping.set()
