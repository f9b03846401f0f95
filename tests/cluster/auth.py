"""Who is asking and may they: bearer tokens, ServiceAccount tokens and RBAC, as the real server.

Authentication: `Authorization: Bearer <token>`. The API server issues an admin token (group
`system:masters`, for tests and the node agents) and a token per TokenRequest
(`POST .../serviceaccounts/<name>/token`), which authenticates as
`system:serviceaccount:<ns>:<name>` in groups `system:serviceaccounts`,
`system:serviceaccounts:<ns>` and `system:authenticated`.

Authorization: RBAC over the stored Roles, ClusterRoles and their bindings — rules match on
apiGroups, resources (`pods`, `pods/status`, `*`), verbs and resourceNames; a RoleBinding grants
only in its namespace; `system:masters` may do anything.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from tests.cluster.meta import ApiError
from tests.cluster.resources import ResourceType

Obj = dict[str, Any]
RBAC = "rbac.authorization.k8s.io"
MASTERS = "system:masters"
# What the real server lets anybody (system:public-info-viewer) and any authenticated user
# (system:discovery, system:basic-user) read without a binding.
PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/version")
DISCOVERY_PREFIXES = ("/api", "/apis", "/openapi")


@dataclass(frozen=True)
class Identity:
    user: str
    groups: tuple[str, ...]
    uid: str = ""

    @classmethod
    def service_account(cls, namespace: str, name: str, uid: str = "") -> Identity:
        groups = ("system:serviceaccounts", f"system:serviceaccounts:{namespace}")
        return cls(
            f"system:serviceaccount:{namespace}:{name}", (*groups, "system:authenticated"), uid
        )


ADMIN = Identity("yr-test-admin", (MASTERS, "system:authenticated"))


class Tokens:
    """Opaque bearer tokens and the identities they stand for (in memory, like a token cache)."""

    def __init__(self) -> None:
        self.identities: dict[str, Identity] = {}

    def issue(self, identity: Identity) -> str:
        token = secrets.token_urlsafe(32)
        self.identities[token] = identity
        return token

    def authenticate(self, authorization: str | None) -> Identity | None:
        """The identity of an `Authorization` header; None when absent (anonymous)."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        identity = self.identities.get(token.strip()) if scheme.lower() == "bearer" else None
        if identity is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return identity

    def revoke_service_account(self, namespace: str, name: str) -> None:
        """A deleted ServiceAccount's tokens stop working, as bound tokens do."""
        user = f"system:serviceaccount:{namespace}:{name}"
        for token in [t for t, i in self.identities.items() if i.user == user]:
            del self.identities[token]


def verb_of(method: str, name: str | None, watch: bool) -> str:
    if method in ("GET", "HEAD"):
        if watch:
            return "watch"
        return "get" if name else "list"
    if method == "POST":
        return "create"
    if method == "PUT":
        return "update"
    if method == "PATCH":
        return "patch"
    if method == "DELETE":
        return "delete" if name else "deletecollection"
    return method.lower()


@dataclass(frozen=True)
class Request:
    verb: str
    group: str
    resource: str
    subresource: str
    namespace: str
    name: str


def _subject_matches(subject: Obj, identity: Identity, binding_namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return name == identity.user
    if kind == "Group":
        return name in identity.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return identity.user == f"system:serviceaccount:{namespace}:{name}"
    return False


def _rule_allows(rule: Obj, request: Request) -> bool:
    def has(field: str, value: str) -> bool:
        values = rule.get(field) or []
        return "*" in values or value in values

    resource = request.resource + (f"/{request.subresource}" if request.subresource else "")
    resources = rule.get("resources") or []
    resource_ok = (
        "*" in resources
        or resource in resources
        or (request.subresource and f"*/{request.subresource}" in resources)
    )
    names = rule.get("resourceNames") or []
    # resourceNames cannot restrict list/watch/create/deletecollection: they name no object.
    names_ok = not names or (request.name != "" and request.name in names)
    return (
        has("apiGroups", request.group) and resource_ok and has("verbs", request.verb) and names_ok
    )


class Authorizer:
    """RBAC over the objects in the store (read on every request: bindings apply at once)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def _objects(self, plural: str, namespace: str | None = None) -> list[Obj]:
        rt = self.store.registry.get(RBAC, "v1", plural)
        return self.store.items(rt, namespace) if rt is not None else []

    def _role_rules(self, ref: Obj, namespace: str) -> list[Obj]:
        kind, name = ref.get("kind"), ref.get("name", "")
        if kind == "ClusterRole":
            rt = self.store.registry.get(RBAC, "v1", "clusterroles")
            role = self.store.lookup(rt, "", name)
        else:
            rt = self.store.registry.get(RBAC, "v1", "roles")
            role = self.store.lookup(rt, namespace, name)
        return (role or {}).get("rules") or []

    def rules_for(self, identity: Identity, namespace: str) -> Iterator[Obj]:
        for binding in self._objects("clusterrolebindings"):
            if any(_subject_matches(s, identity, "") for s in binding.get("subjects") or []):
                yield from self._role_rules(binding.get("roleRef") or {}, "")
        if namespace:
            for binding in self._objects("rolebindings", namespace):
                subjects = binding.get("subjects") or []
                if any(_subject_matches(s, identity, namespace) for s in subjects):
                    yield from self._role_rules(binding.get("roleRef") or {}, namespace)

    def allows(self, identity: Identity, request: Request) -> bool:
        if MASTERS in identity.groups:
            return True
        return any(_rule_allows(r, request) for r in self.rules_for(identity, request.namespace))

    def check(self, identity: Identity | None, request: Request) -> None:
        """Raise the real server's 403 when `identity` may not make `request`."""
        who = identity.user if identity else "system:anonymous"
        if identity is not None and self.allows(identity, request):
            return
        resource = request.resource + (f"/{request.subresource}" if request.subresource else "")
        where = (
            f'in the namespace "{request.namespace}"'
            if request.namespace
            else "at the cluster scope"
        )
        subject = f'{request.resource} "{request.name}"' if request.name else request.resource
        details: Obj = {"kind": request.resource}
        if request.name:
            details["name"] = request.name
        if request.group:
            details["group"] = request.group
        raise ApiError(
            403,
            "Forbidden",
            f'{subject} is forbidden: User "{who}" cannot {request.verb} resource "{resource}" '
            f'in API group "{request.group}" {where}',
            details,
        )


def check_path(identity: Identity | None, path: str) -> None:
    """Non-resource URLs: public ones for anybody, discovery and OpenAPI for any user."""
    if path in PUBLIC_PATHS:
        return
    if identity is not None and (path.startswith(DISCOVERY_PREFIXES)):
        return
    who = identity.user if identity else "system:anonymous"
    raise ApiError(
        403, "Forbidden", f'forbidden: User "{who}" cannot get path "{path}"', {"kind": ""}
    )


def request_for(
    rt: ResourceType, verb: str, namespace: str | None, name: str | None, sub: str | None
) -> Request:
    return Request(verb, rt.group, rt.plural, sub or "", namespace or "", name or "")


def kubeconfig_text(
    server: str, ca_pem: bytes, token: str | None, namespace: str = "default"
) -> str:
    """A kubeconfig for `server` (trusting `ca_pem`) with `token` (None: anonymous)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "yr-local",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": "yr-local", "user": {"token": token} if token else {}}],
        "contexts": [
            {
                "name": "yr-local",
                "context": {"cluster": "yr-local", "user": "yr-local", "namespace": namespace},
            }
        ],
        "current-context": "yr-local",
    }
    return yaml.safe_dump(config, sort_keys=False)
