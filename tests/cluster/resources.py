"""The resource types the emulated API serves (built-ins plus CRDs) and their discovery docs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SUBRESOURCE_VERBS = {
    "status": ["get", "patch", "update"],
    "binding": ["create"],
    "log": ["get"],
    "finalize": ["update"],
}


@dataclass(frozen=True)
class ResourceType:
    """One served group/version/resource and what the server must do differently for it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # openAPIV3Schema of a CRD version: prune, default and validate against it.
    schema: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    printer_columns: tuple[dict[str, Any], ...] = field(default=(), compare=False, hash=False)
    custom: bool = False  # a CRD: no strategic merge patch, objects keep apiVersion/kind

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        """Storage key: all versions of one group/resource share objects."""
        return (self.group, self.plural)

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    def discovery_entries(self) -> list[dict[str, Any]]:
        entry: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular or self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": ALL_VERBS,
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        entries = [entry]
        for sub in self.subresources:
            entries.append(
                {
                    "name": f"{self.plural}/{sub}",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": "Binding" if sub == "binding" else self.kind,
                    "verbs": SUBRESOURCE_VERBS.get(sub, ["get"]),
                }
            )
        return entries


def _t(group: str, version: str, plural: str, kind: str, namespaced: bool = True, **kw: Any):
    return ResourceType(group, version, plural, kind, namespaced, **kw)


BUILTINS: tuple[ResourceType, ...] = (
    _t(
        "",
        "v1",
        "namespaces",
        "Namespace",
        False,
        short_names=("ns",),
        subresources=("status", "finalize"),
    ),
    _t(
        "",
        "v1",
        "pods",
        "Pod",
        short_names=("po",),
        subresources=("status", "binding", "log"),
        categories=("all",),
    ),
    _t("", "v1", "nodes", "Node", False, short_names=("no",), subresources=("status",)),
    _t("", "v1", "events", "Event", short_names=("ev",)),
    _t("", "v1", "secrets", "Secret"),
    _t("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    _t(
        "",
        "v1",
        "services",
        "Service",
        short_names=("svc",),
        subresources=("status",),
        categories=("all",),
    ),
    _t("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",), subresources=("token",)),
    _t("", "v1", "endpoints", "Endpoints", short_names=("ep",)),
    _t("coordination.k8s.io", "v1", "leases", "Lease"),
    _t("events.k8s.io", "v1", "events", "Event"),
    _t(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        short_names=("crd", "crds"),
        subresources=("status",),
    ),
    _t(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        short_names=("deploy",),
        subresources=("status",),
        categories=("all",),
    ),
    _t("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    _t("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    _t("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _t("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _t("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", short_names=("netpol",)),
)


def types_from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """One ResourceType per served version of a CustomResourceDefinition object."""
    spec = crd["spec"]
    names = spec["names"]
    result = []
    for version in spec.get("versions", []):
        if not version.get("served", True):
            continue
        subresources = tuple(sorted((version.get("subresources") or {}).keys()))
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        result.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular", names["kind"].lower()),
                short_names=tuple(names.get("shortNames", [])),
                subresources=subresources,
                categories=tuple(names.get("categories", [])),
                schema=schema,
                printer_columns=tuple(version.get("additionalPrinterColumns", [])),
                custom=True,
            )
        )
    return result


class Registry:
    """Served resource types by group/version/plural, with discovery documents."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        for rt in BUILTINS:
            self.add(rt)

    def add(self, rt: ResourceType) -> None:
        self._types[(rt.group, rt.version, rt.plural)] = rt

    def remove_group_resource(self, group: str, plural: str) -> None:
        for key in [k for k in self._types if k[0] == group and k[2] == plural]:
            del self._types[key]

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        """Resolve an ownerReference's apiVersion/kind to a served type."""
        group, _, version = api_version.rpartition("/")
        for rt in self._types.values():
            if rt.group == group and rt.version == version and rt.kind == kind:
                return rt
        for rt in self._types.values():  # another version of the same group/kind still counts
            if rt.group == group and rt.kind == kind:
                return rt
        return None

    def all(self) -> list[ResourceType]:
        return list(self._types.values())

    def group_versions(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for group, version, _ in self._types:
            if group and version not in groups.setdefault(group, []):
                groups[group].append(version)
        return groups

    def resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        types = [rt for (g, v, _), rt in self._types.items() if g == group and v == version]
        if not types:
            return None
        resources = [entry for rt in types for entry in rt.discovery_entries()]
        gv = f"{group}/{version}" if group else version
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": resources,
        }

    def group_doc(self, group: str) -> dict[str, Any] | None:
        versions = self.group_versions().get(group)
        if not versions:
            return None
        listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": listed,
            "preferredVersion": listed[0],
        }

    def group_list(self) -> dict[str, Any]:
        groups = [self.group_doc(g) for g in sorted(self.group_versions())]
        for doc in groups:
            assert doc is not None
            del doc["kind"], doc["apiVersion"]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
