"""OpenAPI v3 documents, as kubectl and helm fetch them to validate what they send.

Built-in kinds get a permissive schema (any fields, the real server prunes nothing of ours);
a CRD's kind gets its own `openAPIV3Schema`. Every schema carries
`x-kubernetes-group-version-kind`, which is how clients find the schema of an object.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tests.cluster.resources import Registry, ResourceType

Obj = dict[str, Any]
PREFIX = "/openapi/v3"


def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def _schema_name(rt: ResourceType) -> str:
    group = ".".join(reversed(rt.group.split("."))) if rt.group else "io.k8s.api.core"
    return f"{group}.{rt.version}.{rt.kind}"


def _schema(rt: ResourceType) -> Obj:
    gvk = [{"group": rt.group, "version": rt.version, "kind": rt.kind}]
    if rt.schema is None:
        return {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "x-kubernetes-group-version-kind": gvk,
        }
    schema = json.loads(json.dumps(rt.schema))
    properties = schema.setdefault("properties", {})
    properties.setdefault("apiVersion", {"type": "string"})
    properties.setdefault("kind", {"type": "string"})
    properties.setdefault(
        "metadata", {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    )
    schema["x-kubernetes-group-version-kind"] = gvk
    return schema


def _object_path(rt: ResourceType) -> str:
    scope = "namespaces/{namespace}/" if rt.namespaced else ""
    return f"/{_gv_path(rt.group, rt.version)}/{scope}{rt.plural}/{{name}}"


def _paths(rt: ResourceType) -> Obj:
    """The object's PATCH operation: clients look there for server-side field validation."""
    patch = {
        "x-kubernetes-group-version-kind": {
            "group": rt.group,
            "version": rt.version,
            "kind": rt.kind,
        },
        "x-kubernetes-action": "patch",
        "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
        "responses": {"200": {"description": "OK"}},
    }
    return {_object_path(rt): {"patch": patch}}


def group_version_document(registry: Registry, group: str, version: str) -> Obj | None:
    types = [rt for rt in registry.all() if (rt.group, rt.version) == (group, version)]
    if not types:
        return None
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": {path: item for rt in types for path, item in _paths(rt).items()},
        "components": {"schemas": {_schema_name(rt): _schema(rt) for rt in types}},
    }


def index(registry: Registry) -> Obj:
    """`/openapi/v3`: one entry per group/version, its URL carrying a content hash."""
    paths = {}
    for group, version in sorted({(rt.group, rt.version) for rt in registry.all()}):
        doc = group_version_document(registry, group, version)
        digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]
        path = _gv_path(group, version)
        paths[path] = {"serverRelativeURL": f"{PREFIX}/{path}?hash={digest}"}
    return {"paths": paths}


def document(registry: Registry, path: str) -> Obj | None:
    """The document at `/openapi/v3/<path>` (`api/v1`, `apis/<group>/<version>`), or None."""
    parts = path.strip("/").split("/")
    if parts[:1] == ["api"] and len(parts) == 2:
        return group_version_document(registry, "", parts[1])
    if parts[:1] == ["apis"] and len(parts) == 3:
        return group_version_document(registry, parts[1], parts[2])
    return None
