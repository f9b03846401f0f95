"""Other sessions' instances this process calls: detached instances and their subtrees.

A detached YRInstance is owned by nothing but its namespace and runs in a session of its own,
whose token and TLS key pair sit in the Secret ``yr-session-<session>``, owned by that
YRInstance (killing it collects them). Its creator keeps the credentials it made in memory; a
later driver reads the Secret (RBAC: ``get`` on ``secrets``) when it looks the instance up by
name. Each such session is followed by a status watch of its own.
"""

from __future__ import annotations

import base64
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from yr import contract as c
from yr.errors import YRError
from yr.runtime.kubernetes import api
from yr.runtime.kubernetes.watcher import StatusWatcher
from yr.tls import PinnedServer, make_key_pair


@dataclass(frozen=True)
class SessionKeys:
    """What reaches one session's instances: its token and its certificate, pinned."""

    session: str
    token: str
    server: PinnedServer
    key: bytes = b""  # the private key, only where the session was just made (for its Secret)


def new_session_keys() -> SessionKeys:
    """A fresh session for a detached instance, as a driver makes one for itself."""
    session = secrets.token_hex(5)
    server_name = c.session_server_name(session)
    certificate, key = make_key_pair(server_name)
    return SessionKeys(
        session, secrets.token_urlsafe(32), PinnedServer(certificate, server_name), key
    )


def read_session_keys(core: Any, namespace: str, session: str, *, instance: str) -> SessionKeys:
    """The credentials of ``session`` from its Secret; a clear error when they cannot be had."""
    secret_name = c.session_secret_name(session)
    try:
        secret = api.call(core.read_namespaced_secret, secret_name, namespace, budget_s=10.0)
        data = secret.data or {}
        token = base64.b64decode(data[c.TOKEN_KEY]).decode()
        certificate = base64.b64decode(data[c.TLS_CERT_KEY])
    except api.Forbidden:
        raise YRError(
            f"instance {instance} runs in session {session} (it was created detached, or by "
            f"another driver): calling it needs that session's Secret {secret_name!r}, which "
            "this process's Kubernetes account may not read. Give the driver's account 'get' "
            "on secrets in namespace "
            f"{namespace!r}; an instance pod's account never has it"
        ) from None
    except (api.KubeApiError, KeyError) as error:
        raise YRError(
            f"cannot reach instance {instance}: its session's Secret {secret_name!r} in "
            f"namespace {namespace!r} is unreadable ({error}); the instance is probably "
            "being deleted"
        ) from None
    return SessionKeys(session, token, PinnedServer(certificate, c.session_server_name(session)))


class OtherSessions:
    """The sessions besides our own whose instances this process calls, each with its watch."""

    def __init__(self, make_watcher: Callable[[str], StatusWatcher]) -> None:
        self._make_watcher = make_watcher
        self._keys: dict[str, SessionKeys] = {}
        self._watchers: dict[str, StatusWatcher] = {}
        self._lock = threading.Lock()

    def add(self, keys: SessionKeys) -> StatusWatcher:
        """Remember ``keys`` (the first ones known win) and return the session's watcher."""
        with self._lock:
            self._keys.setdefault(keys.session, keys)
            watcher = self._watchers.get(keys.session)
            if watcher is None:
                watcher = self._watchers[keys.session] = self._make_watcher(keys.session)
            return watcher

    def watcher(self, session: str) -> StatusWatcher | None:
        with self._lock:
            return self._watchers.get(session)

    def keys(self, session: str) -> SessionKeys:
        with self._lock:
            keys = self._keys.get(session)
        if keys is None:
            raise YRError(f"no credentials for session {session}: look its instance up first")
        return keys

    def stop(self) -> None:
        with self._lock:
            watchers, self._watchers = list(self._watchers.values()), {}
        for watcher in watchers:
            watcher.stop()
