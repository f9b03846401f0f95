"""Small shared vocabulary of the emulated API server: Status errors, timestamps, names."""

from __future__ import annotations

import random
import re
import time
from datetime import datetime, timezone
from typing import Any

# Where a node keeps pod logs; the API server reads them for pods/log (same machine).
LOG_DIR_ANNOTATION = "emulated.yr.dev/log-dir"
# The alphabet the real apiserver uses for generateName suffixes (no vowels, no look-alikes).
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)


class ApiError(Exception):
    """An error the API answers with a `Status` object, as the real server does."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def resource_label(plural: str, group: str) -> str:
    """`pods` or `yrinstances.yr.dev`: how the real server names a resource in messages."""
    return f"{plural}.{group}" if group else plural


def _details(name: str, plural: str, group: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    return details


def not_found(plural: str, group: str, name: str) -> ApiError:
    label = resource_label(plural, group)
    return ApiError(404, "NotFound", f'{label} "{name}" not found', _details(name, plural, group))


def already_exists(plural: str, group: str, name: str) -> ApiError:
    label = resource_label(plural, group)
    return ApiError(
        409, "AlreadyExists", f'{label} "{name}" already exists', _details(name, plural, group)
    )


def conflict(plural: str, group: str, name: str, why: str) -> ApiError:
    label = resource_label(plural, group)
    message = f'Operation cannot be fulfilled on {label} "{name}": {why}'
    return ApiError(409, "Conflict", message, _details(name, plural, group))


def invalid(kind: str, group: str, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """422 Invalid; causes are (field, reason, message-without-field) like field.ErrorList."""
    texts = [f"{field}: {msg}" for field, _, msg in causes]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    qualified = f"{kind}.{group}" if group else kind
    details = {
        "name": name,
        "kind": kind,
        "causes": [{"reason": r, "message": m, "field": f} for f, r, m in causes],
    }
    if group:
        details["group"] = group
    return ApiError(422, "Invalid", f'{qualified} "{name}" is invalid: {joined}', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def now_rfc3339(offset_seconds: float = 0.0) -> str:
    """Second-precision UTC timestamps, the format of metadata.creationTimestamp."""
    moment = datetime.fromtimestamp(time.time() + offset_seconds, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """Microsecond timestamps, the format of events.k8s.io eventTime and Lease renewTime."""
    return datetime.now(tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> float:
    """Seconds since the epoch for an RFC 3339 timestamp."""
    text = text.replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


def generated_name(prefix: str) -> str:
    return prefix + "".join(random.choice(_SUFFIX_ALPHABET) for _ in range(5))


def name_problem(name: str) -> str | None:
    """Why `name` is not a valid DNS-1123 subdomain (most objects' rule), or None."""
    if len(name) > 253:
        return "must be no more than 253 characters"
    if not _DNS1123_SUBDOMAIN.match(name):
        return (
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters,"
            " '-' or '.', and must start and end with an alphanumeric character"
        )
    return None
