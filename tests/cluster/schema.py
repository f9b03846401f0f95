"""CRD structural schemas: prune unknown fields, apply defaults and validate, like the real server.

Messages follow the apiextensions-apiserver wording so tests and operators see what a real
cluster would say, e.g. `spec.cpu: Invalid value: 0: spec.cpu in body should be greater than
or equal to 1`.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

Cause = tuple[str, str, str]  # (field path, reason, message), like a field.Error

_ROOT_KEPT = ("apiVersion", "kind", "metadata")
_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
}


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else _go_text(value)


def _go_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _type_ok(schema_type: str, value: Any) -> bool:
    if schema_type == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if schema_type == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES.get(schema_type, object))


def prune_and_default(value: Any, schema: dict[str, Any], root: bool = False) -> Any:
    """Drop fields the schema does not know (unless preserved) and fill in `default`s."""
    if isinstance(value, dict):
        props = schema.get("properties")
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        result = {}
        for key, item in value.items():
            if root and key in _ROOT_KEPT:
                result[key] = item
            elif props is not None and key in props:
                result[key] = prune_and_default(item, props[key])
            elif isinstance(additional, dict):
                result[key] = prune_and_default(item, additional)
            elif preserve or additional is True:
                result[key] = item
        for key, sub in (props or {}).items():
            if key not in result and "default" in sub:
                result[key] = prune_and_default(copy.deepcopy(sub["default"]), sub)
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune_and_default(item, schema["items"]) for item in value]
    return value


def validate(value: Any, schema: dict[str, Any], path: str = "") -> list[Cause]:
    """Every violation of `schema` by `value`, as field.Error-like triples."""
    field = path or "<root>"
    if value is None:
        if schema.get("nullable"):
            return []
        if "type" in schema:
            return [_type_error(field, "null", schema["type"])]
        return []
    int_or_string = schema.get("x-kubernetes-int-or-string")
    if int_or_string:
        if not (_type_ok("integer", value) or isinstance(value, str)):
            return [_type_error(field, _type_name(value), "integer,string")]
    elif "type" in schema and not _type_ok(schema["type"], value):
        return [_type_error(field, _type_name(value), schema["type"])]
    causes: list[Cause] = []
    causes += _scalar_rules(value, schema, field)
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                causes.append((_join(path, key), "FieldValueRequired", "Required value"))
        props = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            if key in props:
                causes += validate(item, props[key], _join(path, key))
            elif isinstance(additional, dict):
                causes += validate(item, additional, _join(path, key))
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            causes += validate(item, schema["items"], f"{field}[{index}]")
    for sub in schema.get("allOf", []):
        causes += validate(value, sub, path)
    for combinator in ("anyOf", "oneOf"):
        options = schema.get(combinator)
        if options and all(validate(value, sub, path) for sub in options):
            causes.append(
                (
                    field,
                    "FieldValueInvalid",
                    f"Invalid value: {_show(value)}: {field} in body must validate {combinator}",
                )
            )
    return causes


def _type_error(field: str, actual: str, expected: str) -> Cause:
    message = f'Invalid value: "{actual}": {field} in body must be of type {expected}: "{actual}"'
    return (field, "FieldValueTypeInvalid", message)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _scalar_rules(value: Any, schema: dict[str, Any], field: str) -> list[Cause]:
    shown = _show(value)

    def bad(rule: str) -> Cause:
        return (field, "FieldValueInvalid", f"Invalid value: {shown}: {field} in body {rule}")

    causes = []
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(_show(v) for v in schema["enum"])
        causes.append(
            (
                field,
                "FieldValueNotSupported",
                f"Unsupported value: {shown}: supported values: {allowed}",
            )
        )
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema:
            if schema.get("exclusiveMinimum") is True and value <= schema["minimum"]:
                causes.append(bad(f"should be greater than {_go_text(schema['minimum'])}"))
            elif value < schema["minimum"]:
                causes.append(
                    bad(f"should be greater than or equal to {_go_text(schema['minimum'])}")
                )
        if "maximum" in schema:
            if schema.get("exclusiveMaximum") is True and value >= schema["maximum"]:
                causes.append(bad(f"should be less than {_go_text(schema['maximum'])}"))
            elif value > schema["maximum"]:
                causes.append(bad(f"should be less than or equal to {_go_text(schema['maximum'])}"))
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            causes.append(bad(f"should match '{schema['pattern']}'"))
        if "minLength" in schema and len(value) < schema["minLength"]:
            causes.append(bad(f"should be at least {schema['minLength']} chars long"))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            causes.append(
                (
                    field,
                    "FieldValueTooLong",
                    f"Too long: may not be more than {schema['maxLength']} bytes",
                )
            )
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            causes.append(bad(f"should have at least {schema['minItems']} items"))
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            causes.append(
                (
                    field,
                    "FieldValueTooMany",
                    f"Too many: {len(value)}: must have at most {schema['maxItems']} items",
                )
            )
    if isinstance(value, dict):
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            causes.append(bad(f"should have at least {schema['minProperties']} properties"))
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            causes.append(bad(f"should have at most {schema['maxProperties']} properties"))
    return causes


def check_object(obj: dict[str, Any], schema: dict[str, Any]) -> tuple[dict[str, Any], list[Cause]]:
    """Prune, default and validate a whole custom object; metadata is the server's business."""
    prepared = prune_and_default(obj, schema, root=True)
    body_schema = dict(schema)
    props = dict(body_schema.get("properties") or {})
    for key in _ROOT_KEPT:
        props.pop(key, None)
    body_schema["properties"] = props
    body = {k: v for k, v in prepared.items() if k not in _ROOT_KEPT}
    return prepared, validate(body, body_schema)
