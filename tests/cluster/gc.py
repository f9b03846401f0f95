"""The garbage collector and namespace controller: cascading deletion by ownerReferences.

Rules mirrored from the real GC: an owner counts only if an object of that kind, name *and
uid* exists in the dependent's namespace (a namespaced dependent never sees owners in other
namespaces); a dependent whose owners are all absent is deleted (Background); one whose
remaining owners are being deleted in the foreground is deleted in the foreground; one with a
live owner left just loses the dangling references. A foreground-deleting owner keeps its
`foregroundDeletion` finalizer until no dependent with blockOwnerDeletion=true remains.
"""

from __future__ import annotations

import contextlib
from typing import Any

from tests.cluster.controller import Controller
from tests.cluster.meta import ApiError
from tests.cluster.resources import ResourceType

Obj = dict[str, Any]
FOREGROUND = "foregroundDeletion"


def _ns(obj: Obj) -> str:
    return obj["metadata"].get("namespace", "")


class GarbageCollector(Controller):
    name = "garbage collection"

    def pass_once(self) -> None:
        self.collect_once()

    def _all(self) -> list[tuple[ResourceType, Obj]]:
        return [(rt, obj) for rt in self.store._types_by_key() for obj in self.store.items(rt)]

    def _owner_state(self, dependent: ResourceType, obj: Obj, ref: dict[str, Any]) -> str:
        """'solid', 'waiting' (owner deleting in foreground), 'absent' or 'unknown' (kind)."""
        owner_rt = self.store.registry.by_kind(ref.get("apiVersion", ""), ref.get("kind", ""))
        if owner_rt is None:
            return "unknown"
        if owner_rt.namespaced and not dependent.namespaced:
            return "absent"
        owner = self.store.find_by_uid(owner_rt, _ns(obj), ref.get("name", ""), ref.get("uid", ""))
        if owner is None:
            return "absent"
        meta = owner["metadata"]
        if meta.get("deletionTimestamp") and FOREGROUND in (meta.get("finalizers") or []):
            return "waiting"
        return "solid"

    def collect_once(self) -> None:
        for rt, obj in self._all():
            meta = obj["metadata"]
            refs = meta.get("ownerReferences") or []
            if not refs or meta.get("deletionTimestamp"):
                continue
            states = [self._owner_state(rt, obj, ref) for ref in refs]
            if "absent" not in states and "waiting" not in states:
                continue
            if "solid" in states or "unknown" in states:
                kept = [r for r, s in zip(refs, states, strict=True) if s in ("solid", "unknown")]
                self._set_metadata(rt, obj, "ownerReferences", kept)
            else:
                self._delete(rt, obj, "Foreground" if "waiting" in states else "Background")
        self._release_foreground_owners()
        self._drain_namespaces()

    def _release_foreground_owners(self) -> None:
        objects = self._all()
        blocking = {
            ref.get("uid")
            for _, obj in objects
            for ref in obj["metadata"].get("ownerReferences") or []
            if ref.get("blockOwnerDeletion")
        }
        for rt, obj in objects:
            meta = obj["metadata"]
            finalizers = meta.get("finalizers") or []
            deleting = meta.get("deletionTimestamp") and FOREGROUND in finalizers
            if deleting and meta["uid"] not in blocking:
                self._set_metadata(
                    rt, obj, "finalizers", [f for f in finalizers if f != FOREGROUND]
                )

    def _drain_namespaces(self) -> None:
        """The namespace controller: empty a terminating namespace, then let it go."""
        ns_rt = self.store.registry.get("", "v1", "namespaces")
        assert ns_rt is not None
        for ns in self.store.items(ns_rt):
            if not ns["metadata"].get("deletionTimestamp"):
                continue
            name = ns["metadata"]["name"]
            left = [(rt, o) for rt, o in self._all() if rt.namespaced and _ns(o) == name]
            for rt, obj in left:
                if not obj["metadata"].get("deletionTimestamp"):
                    self._delete(rt, obj, "Background")
            if not left:
                with contextlib.suppress(ApiError):
                    self.store.update(ns_rt, "", name, _without_spec_finalizers)

    def _set_metadata(self, rt: ResourceType, obj: Obj, key: str, value: Any) -> None:
        def change(current: Obj) -> Obj:
            return {**current, "metadata": {**current["metadata"], key: value}}

        with contextlib.suppress(ApiError):  # raced with another writer: the next pass retries
            self.store.update(rt, _ns(obj), obj["metadata"]["name"], change)

    def _delete(self, rt: ResourceType, obj: Obj, policy: str) -> None:
        with contextlib.suppress(ApiError):
            self.store.delete(rt, _ns(obj), obj["metadata"]["name"], {"propagationPolicy": policy})


def _without_spec_finalizers(namespace: Obj) -> Obj:
    return {**namespace, "spec": {**namespace.get("spec", {}), "finalizers": []}}
