"""The object store of the emulated API: CRUD with the real server's metadata rules.

All methods are synchronous and run on the server's event loop, so each one is atomic.
Committed objects are never mutated; every write stores a fresh dict.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import Any

from tests.cluster import kinds, schema
from tests.cluster.meta import (
    ApiError,
    already_exists,
    bad_request,
    conflict,
    generated_name,
    invalid,
    name_problem,
    not_found,
    now_rfc3339,
)
from tests.cluster.resources import Registry, ResourceType, types_from_crd
from tests.cluster.watches import HISTORY, Event, Hub, Watch

Obj = dict[str, Any]


def _meta(obj: Obj) -> dict[str, Any]:
    return obj.setdefault("metadata", {})


def _without(obj: Obj, *keys: str) -> Obj:
    return {k: v for k, v in obj.items() if k not in keys}


class Store:
    def __init__(self, registry: Registry, watch_history: int = HISTORY) -> None:
        self.registry = registry
        self.rv = 0
        self.objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {}
        self.hub = Hub(watch_history)
        # In-process controllers (GC, scheduler) hear every event here.
        self.listeners: list[Callable[[Event], None]] = self.hub.listeners

    # ---- reads
    def lookup(self, rt: ResourceType, namespace: str, name: str) -> Obj | None:
        return self.objects.get(rt.key, {}).get((namespace if rt.namespaced else "", name))

    def require(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.lookup(rt, namespace, name)
        if obj is None:
            raise not_found(rt.plural, rt.group, name)
        return obj

    def items(self, rt: ResourceType, namespace: str | None = None) -> list[Obj]:
        bucket = self.objects.get(rt.key, {})
        return [o for (ns, _), o in sorted(bucket.items()) if not namespace or ns == namespace]

    def find_by_uid(self, rt: ResourceType, namespace: str, name: str, uid: str) -> Obj | None:
        obj = self.lookup(rt, namespace, name)
        return obj if obj is not None and obj["metadata"].get("uid") == uid else None

    # ---- writes
    def create(self, rt: ResourceType, namespace: str, body: Obj) -> Obj:
        obj = copy.deepcopy(body)
        meta = _meta(obj)
        if rt.namespaced:
            if meta.get("namespace", namespace) != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on"
                    " the request"
                )
            meta["namespace"] = namespace
            self._check_namespace_open(namespace)
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise invalid(
                    rt.kind,
                    rt.group,
                    "",
                    [
                        (
                            "metadata.name",
                            "FieldValueRequired",
                            "Required value: name or generateName is required",
                        )
                    ],
                )
            meta["name"] = generated_name(meta["generateName"])
        problem = name_problem(meta["name"])
        if problem:
            raise invalid(
                rt.kind,
                rt.group,
                meta["name"],
                [
                    (
                        "metadata.name",
                        "FieldValueInvalid",
                        f'Invalid value: "{meta["name"]}": {problem}',
                    )
                ],
            )
        if self.lookup(rt, namespace, meta["name"]) is not None:
            raise already_exists(rt.plural, rt.group, meta["name"])
        self._check_owner_references(rt, obj)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion"):
            meta.pop(key, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339(), generation=1)
        kinds.prepare_create(rt, obj)
        obj = self._check_schema(rt, obj)
        if rt.key == kinds.POD_KEY:
            self._admit_service_account(obj)
        if rt.key == kinds.CRD_KEY:
            self._register_crd(obj)
        created = self._commit(rt, obj, None)
        if rt.key == kinds.NAMESPACE_KEY:
            # The ServiceAccount controller's job, done at once (real: shortly after).
            accounts = self.registry.get("", "v1", "serviceaccounts")
            assert accounts is not None
            self.create(accounts, meta["name"], {"metadata": {"name": "default"}})
        return created

    def _admit_service_account(self, pod: Obj) -> None:
        """The ServiceAccount admission plugin: a pod runs as an account that exists."""
        meta, account = pod["metadata"], pod["spec"]["serviceAccountName"]
        accounts = self.registry.get("", "v1", "serviceaccounts")
        assert accounts is not None
        if self.lookup(accounts, meta["namespace"], account) is None:
            raise ApiError(
                403,
                "Forbidden",
                f'pods "{meta["name"]}" is forbidden: error looking up service account '
                f'{meta["namespace"]}/{account}: serviceaccount "{account}" not found',
                {"name": meta["name"], "kind": "pods"},
            )

    def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        produce: Callable[[Obj], Any],
        subresource: str | None = None,
    ) -> Obj:
        """Replace or patch: `produce` turns a copy of the stored object into the candidate."""
        old = self.require(rt, namespace, name)
        candidate = produce(copy.deepcopy(old))
        if not isinstance(candidate, dict):
            raise bad_request("the object must be a JSON object")
        cmeta = _meta(candidate)
        if cmeta.get("name", name) != name:
            raise bad_request(
                f"the name of the object ({cmeta.get('name')}) does not match the name on the URL"
                f" ({name})"
            )
        wanted_rv = cmeta.get("resourceVersion")
        if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
            raise conflict(
                rt.plural,
                rt.group,
                name,
                "the object has been modified; please apply"
                " your changes to the latest version and try again",
            )
        if subresource == "status":
            new = copy.deepcopy(old)
            if candidate.get("status") is None:
                new.pop("status", None)
            else:
                new["status"] = candidate["status"]
        elif subresource == "binding":
            new = candidate  # a binding sets spec.nodeName and the PodScheduled condition at once
        else:
            new = candidate
            if rt.has_status:
                new.pop("status", None)
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
            self._check_owner_references(rt, new)
        meta, old_meta = _meta(new), old["metadata"]
        for key in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "name",
            "generation",
            "resourceVersion",
        ):
            meta.pop(key, None)
            if key in old_meta:
                meta[key] = old_meta[key]
        new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
        kinds.normalize(rt, new)
        new = self._check_schema(rt, new)
        if new == old:
            return old  # a no-op write keeps the resourceVersion, as on the real server
        ignored = ("metadata", "status") if rt.has_status else ("metadata",)
        if _without(new, *ignored) != _without(old, *ignored):
            meta["generation"] = old_meta.get("generation", 1) + 1
        if meta.get("deletionTimestamp") and not kinds.blocks_removal(rt, new):
            return self._remove(rt, new)
        return self._commit(rt, new, old)

    def delete(
        self, rt: ResourceType, namespace: str, name: str, options: dict[str, Any]
    ) -> tuple[Obj, bool]:
        """Delete with DeleteOptions; returns (object, removed-now)."""
        obj = self.require(rt, namespace, name)
        meta = obj["metadata"]
        pre = options.get("preconditions") or {}
        for field in ("uid", "resourceVersion"):
            if pre.get(field) and pre[field] != meta.get(field):
                raise conflict(
                    rt.plural,
                    rt.group,
                    name,
                    f"Precondition failed: {field} in "
                    f"precondition: {pre[field]}, {field} in object meta: {meta.get(field)}",
                )
        policy = options.get("propagationPolicy") or (
            "Orphan" if options.get("orphanDependents") else "Background"
        )
        if policy == "Orphan":
            self.orphan_dependents(meta["uid"])
        grace = kinds.grace_period(rt, obj, options)
        new = copy.deepcopy(obj)
        nmeta = new["metadata"]
        finalizers = list(nmeta.get("finalizers", []))
        first_delete = not meta.get("deletionTimestamp")
        if policy == "Foreground" and first_delete and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if finalizers:
            nmeta["finalizers"] = finalizers
        current_grace = meta.get("deletionGracePeriodSeconds")
        if meta.get("deletionTimestamp") and current_grace is not None and grace >= current_grace:
            grace = current_grace  # a second delete may only shorten the grace period
        nmeta["deletionGracePeriodSeconds"] = grace
        if not kinds.blocks_removal(rt, new):
            return self._remove(rt, new), True
        if (
            meta.get("deletionTimestamp")
            and grace == current_grace
            and finalizers == meta.get("finalizers", [])
        ):
            return obj, False
        nmeta["deletionTimestamp"] = now_rfc3339(grace)
        nmeta["generation"] = meta.get("generation", 1) + 1
        kinds.mark_terminating(rt, new)
        return self._commit(rt, new, obj), False

    def orphan_dependents(self, owner_uid: str) -> None:
        for rt in self._types_by_key():
            for obj in self.items(rt):
                refs = obj["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == owner_uid for r in refs):
                    kept = [r for r in refs if r.get("uid") != owner_uid]
                    self.update(
                        rt,
                        obj["metadata"].get("namespace", ""),
                        obj["metadata"]["name"],
                        lambda o, kept=kept: {
                            **o,
                            "metadata": {**o["metadata"], "ownerReferences": kept},
                        },
                    )

    def _types_by_key(self) -> list[ResourceType]:
        """One served type per stored group/resource."""
        seen: dict[tuple[str, str], ResourceType] = {}
        for rt in self.registry.all():
            seen.setdefault(rt.key, rt)
        return list(seen.values())

    # ---- internals
    def _check_namespace_open(self, namespace: str) -> None:
        ns = self.objects.get(kinds.NAMESPACE_KEY, {}).get(("", namespace))
        if ns is None:
            raise not_found("namespaces", "", namespace)
        if ns["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f"unable to create new content in namespace "
                f"{namespace} because it is being terminated",
            )

    def _check_owner_references(self, rt: ResourceType, obj: Obj) -> None:
        causes = []
        for i, ref in enumerate(obj["metadata"].get("ownerReferences") or []):
            for field in ("apiVersion", "kind", "name", "uid"):
                if not ref.get(field):
                    causes.append(
                        (
                            f"metadata.ownerReferences[{i}].{field}",
                            "FieldValueInvalid",
                            f'Invalid value: "": {field} must not be empty',
                        )
                    )
        if causes:
            raise invalid(rt.kind, rt.group, obj["metadata"].get("name", ""), causes)

    def _check_schema(self, rt: ResourceType, obj: Obj) -> Obj:
        if rt.schema is None:
            return obj
        prepared, causes = schema.check_object(obj, rt.schema)
        if causes:
            raise invalid(rt.kind, rt.group, obj["metadata"].get("name", ""), causes)
        return prepared

    def _register_crd(self, crd: Obj) -> None:
        for rt in types_from_crd(crd):
            self.registry.add(rt)

    def _commit(self, rt: ResourceType, obj: Obj, old: Obj | None) -> Obj:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        ns = obj["metadata"].get("namespace", "") if rt.namespaced else ""
        self.objects.setdefault(rt.key, {})[(ns, obj["metadata"]["name"])] = obj
        self._emit(Event(self.rv, rt.key, "MODIFIED" if old else "ADDED", obj, old))
        return obj

    def _remove(self, rt: ResourceType, obj: Obj) -> Obj:
        meta = obj["metadata"]
        ns = meta.get("namespace", "") if rt.namespaced else ""
        old = self.objects.get(rt.key, {}).pop((ns, meta["name"]), None)
        self.rv += 1
        final = copy.deepcopy(obj)
        final["metadata"]["resourceVersion"] = str(self.rv)
        self._emit(Event(self.rv, rt.key, "DELETED", final, old))
        if rt.key == kinds.CRD_KEY:  # deleting a CRD deletes all its objects
            spec = obj.get("spec", {})
            group, plural = spec.get("group", ""), spec.get("names", {}).get("plural", "")
            served = [t for t in self.registry.all() if t.key == (group, plural)]
            for t in served[:1]:
                for item in self.items(t):
                    self._remove(t, item)
            self.registry.remove_group_resource(group, plural)
        return final

    def _emit(self, event: Event) -> None:
        self.hub.emit(event)

    def open_watch(self, watch: Watch, rt: ResourceType, since: str | None) -> None:
        """Prime a watch with what it must see first, then subscribe it (atomically)."""
        self.hub.open(watch, since, lambda: self.items(rt, watch.namespace), self.rv)

    def close_watch(self, watch: Watch) -> None:
        self.hub.close(watch)
