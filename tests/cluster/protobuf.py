"""Protobuf request bodies, which client-go's typed clients send (helm stores releases that way).

Only what our clients send this way is understood: Secrets, ConfigMaps, Namespaces and
DeleteOptions (helm's release storage, `--create-namespace` and `uninstall`), decoded from the
wire format with the field numbers of k8s.io/api's generated.proto. Responses are always JSON,
which these clients accept.
"""

from __future__ import annotations

import base64
from typing import Any

from tests.cluster.meta import ApiError

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"
Obj = dict[str, Any]

# Field number -> (name, type); "map" is map<string,string>, "bytesmap" map<string,bytes>.
OBJECT_META = {
    1: ("name", "string"),
    2: ("generateName", "string"),
    3: ("namespace", "string"),
    5: ("uid", "string"),
    6: ("resourceVersion", "string"),
    11: ("labels", "map"),
    12: ("annotations", "map"),
    14: ("finalizers", "repeated string"),
}
KINDS: dict[str, dict[int, tuple[str, Any]]] = {
    "Secret": {
        1: ("metadata", OBJECT_META),
        2: ("data", "bytesmap"),
        3: ("type", "string"),
        4: ("stringData", "map"),
        5: ("immutable", "bool"),
    },
    "ConfigMap": {
        1: ("metadata", OBJECT_META),
        2: ("data", "map"),
        3: ("binaryData", "bytesmap"),
        4: ("immutable", "bool"),
    },
    "Namespace": {1: ("metadata", OBJECT_META)},
    "DeleteOptions": {
        1: ("gracePeriodSeconds", "int"),
        2: ("preconditions", {1: ("uid", "string"), 2: ("resourceVersion", "string")}),
        3: ("orphanDependents", "bool"),
        4: ("propagationPolicy", "string"),
    },
}
UNKNOWN = {
    1: ("typeMeta", {1: ("apiVersion", "string"), 2: ("kind", "string")}),
    2: ("raw", "bytes"),
}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs; length-delimited values stay bytes."""
    pos, out = 0, []
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = int.from_bytes(data[pos : pos + size], "little"), pos + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((number, value))
    return out


def _message(data: bytes, schema: dict[int, tuple[str, Any]]) -> Obj:
    obj: Obj = {}
    for number, value in _fields(data):
        if number not in schema:
            continue  # server-set or unused here (timestamps, managedFields, ...)
        name, kind = schema[number]
        if isinstance(kind, dict):
            obj[name] = _message(value, kind)  # type: ignore[arg-type]
        elif kind in ("map", "bytesmap"):
            entry = dict(_fields(value))  # type: ignore[arg-type]
            key, raw = entry.get(1, b"").decode(), entry.get(2, b"")  # type: ignore[union-attr]
            text = base64.b64encode(raw).decode() if kind == "bytesmap" else raw.decode()  # type: ignore[union-attr]
            obj.setdefault(name, {})[key] = text
        elif kind == "repeated string":
            obj.setdefault(name, []).append(value.decode())  # type: ignore[union-attr]
        elif kind == "string":
            if value:  # gogo-protobuf writes every string field, empty ones too
                obj[name] = value.decode()  # type: ignore[union-attr]
        elif kind == "bool":
            obj[name] = bool(value)
        else:
            obj[name] = value
    return obj


def decode(body: bytes) -> Obj:
    """A Kubernetes protobuf envelope (`k8s\\0` + runtime.Unknown) as the JSON object it encodes."""
    if not body.startswith(MAGIC):
        raise ApiError(400, "BadRequest", "the protobuf body lacks the k8s envelope")
    unknown = _message(body[len(MAGIC) :], UNKNOWN)
    meta = unknown.get("typeMeta", {})
    kind = meta.get("kind", "")
    if kind not in KINDS:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"the emulated API server decodes protobuf only for {', '.join(KINDS)}, not {kind!r}",
        )
    obj = _message(unknown.get("raw", b""), KINDS[kind])
    return {"apiVersion": meta.get("apiVersion", "v1"), "kind": kind, **obj}
