"""The SDK's one request path to the API server: typed errors, 429/5xx retried per Retry-After.

Every call the Kubernetes backend makes goes through :func:`call`, so a throttled or briefly
failing API server delays the driver instead of leaving half-created objects behind.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException

from yr.errors import YRError

logger = logging.getLogger("yr")
T = TypeVar("T")
RETRY_BUDGET_S = 60.0  # give up on a call that keeps failing transiently after this long
MAX_DELAY_S = 10.0


class KubeApiError(YRError):
    """The API server refused a request; ``status`` is the HTTP code, ``message`` its reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")


class NotFound(KubeApiError):
    """404: the object, its namespace or its resource type does not exist."""


class Conflict(KubeApiError):
    """409: already exists, or changed since it was read."""


class Forbidden(KubeApiError):
    """403: RBAC refused the request, or the namespace is terminating."""


class Invalid(KubeApiError):
    """422: the object failed validation (e.g. the CRD schema)."""


class Throttled(KubeApiError):
    """429 that stayed for the whole retry budget."""


class ServerError(KubeApiError):
    """5xx that stayed for the whole retry budget."""


_BY_STATUS: dict[int, type[KubeApiError]] = {
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: Invalid,
    429: Throttled,
}


def typed(error: ApiException) -> KubeApiError:
    """The typed form of the client's ApiException, with the Status message, not the body."""
    status = int(error.status or 0)
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else KubeApiError)
    return kind(status, str(error.reason or ""), status_message(error))


def status_message(error: ApiException) -> str:
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        return str(error.body or "")
    return str(body.get("message") or "") if isinstance(body, dict) else str(body)


def transient(status: int) -> bool:
    return status == 429 or status >= 500


def asked_delay(error: ApiException) -> float | None:
    """The seconds the server's Retry-After asks for (capped), if it gave a number."""
    raw = (error.headers or {}).get("Retry-After") if error.headers else None
    try:
        return None if raw is None else min(max(float(raw), 0.0), MAX_DELAY_S)
    except ValueError:
        return None


def backoff(attempt: int, *, cap: float = MAX_DELAY_S) -> float:
    """Exponential from 0.1 s, capped, with jitter so that clients do not retry in step."""
    return min(0.1 * 2**attempt, cap) * (0.5 + random.random() / 2)


def retry_after(error: ApiException, attempt: int) -> float:
    """The server's Retry-After when it gave one, else exponential backoff with jitter."""
    asked = asked_delay(error)
    return backoff(attempt) if asked is None else asked


def call(fn: Callable[..., T], *args: Any, budget_s: float = RETRY_BUDGET_S, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``; transient refusals retried, the others raised typed."""
    deadline = time.monotonic() + budget_s
    attempt = 0
    while True:
        try:
            return fn(*args, **kwargs)
        except ApiException as error:
            status = int(error.status or 0)
            delay = retry_after(error, attempt)
            if not transient(status) or time.monotonic() + delay > deadline:
                raise typed(error) from None
            logger.debug("yr: API %s %s, retrying in %.1fs", status, error.reason, delay)
            time.sleep(delay)  # backoff the server asked for, not synchronisation
            attempt += 1
