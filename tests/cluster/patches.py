"""The three patch formats of the Kubernetes API: JSON merge, JSON patch and strategic merge."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer

from tests.cluster.meta import ApiError, bad_request

# Strategic merge: lists merged by key instead of replaced (patchMergeKey in the Go types).
# None means a list of primitives merged as a set (finalizers).
MERGE_KEYS: dict[str, str | None] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "env": "name",
    "imagePullSecrets": "name",
    "conditions": "type",
    "addresses": "type",
    "podIPs": "ip",
    "hostIPs": "ip",
    "ownerReferences": "uid",
    "finalizers": None,
    "ports": "containerPort",  # service ports use "port": resolved per item below
}


def unprocessable(message: str) -> ApiError:
    """A patch that cannot be applied (kopf relies on 422 for a failed `test` op)."""
    return ApiError(422, "Invalid", message)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 through `jsonpatch`; any failure is a 422 as on the real server."""
    if not isinstance(ops, list):
        raise bad_request("json patch must be a list of operations")
    try:
        return jsonpatch.JsonPatch(ops).apply(target)
    except jsonpatch.InvalidJsonPatch as exc:
        raise bad_request(f"invalid json patch: {exc}") from None
    except jsonpatch.JsonPatchTestFailed as exc:
        raise unprocessable(f"test failed: {exc}") from None
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise unprocessable(str(exc)) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise bad_request(f"invalid json patch: {exc}") from None


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _strip_directives(v)
            for k, v in value.items()
            if not k.startswith("$") and not k.startswith("$setElementOrder/")
        }
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _merge_list(field: str, target: list[Any], patch: list[Any]) -> list[Any]:
    key = MERGE_KEYS[field]
    if key is None:
        return target + [v for v in patch if v not in target]
    result = [copy.deepcopy(item) for item in target]
    for item in patch:
        if not isinstance(item, dict):
            return _strip_directives(patch)
        item_key = "port" if field == "ports" and "containerPort" not in item else key
        match = next(
            (i for i, t in enumerate(result) if t.get(item_key) == item.get(item_key)), None
        )
        if item.get("$patch") == "delete":
            if match is not None:
                result.pop(match)
        elif match is not None:
            result[match] = strategic_merge(result[match], item)
        else:
            result.append(_strip_directives(item))
    return result


def strategic_merge(target: Any, patch: Any) -> Any:
    """A subset of strategic merge patch: keyed list merges, $patch replace/delete, null deletes."""
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return _strip_directives(patch)
    if patch.get("$patch") == "replace":
        return _strip_directives(patch)
    result = dict(target)
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field, []) if v not in value]
            continue
        if value is None or (isinstance(value, dict) and value.get("$patch") == "delete"):
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = strategic_merge(result[key], value)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(result.get(key), list):
            result[key] = _merge_list(key, result[key], value)
        else:
            result[key] = _strip_directives(value)
    return result


def apply_patch(content_type: str, target: dict[str, Any], patch: Any, custom: bool) -> Any:
    """Dispatch on the request's Content-Type, refusing what the real server refuses."""
    media = content_type.split(";")[0].strip()
    if media == "application/merge-patch+json":
        return merge_patch(target, patch)
    if media == "application/json-patch+json":
        return json_patch(target, patch)
    if media == "application/strategic-merge-patch+json" and not custom:
        return strategic_merge(target, patch)
    raise ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f"application/json-patch+json, application/merge-patch+json"
        f"{'' if custom else ', application/strategic-merge-patch+json'}",
    )
