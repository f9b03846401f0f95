"""A driver's side of the keeper: the detached instances it handed over, and how to reach them.

Locally, a detached instance cannot be a child of the driver's fork server, which ends with the
driver. It lives in the per-user keeper (``yr.runtime.local.keeper``), a headless session that
outlives drivers; the driver reaches the keeper's runtime through the Runtime contract (its
control server), given by ``connect``, and calls its instances with the keeper's token.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
from collections.abc import Callable

from yr.errors import DeathInfo, YRError
from yr.runtime.base import ClassInfo, Endpoint, InstanceSpec, Runtime

KEEPER_SESSION = "keeper"  # Endpoint.session of a kept instance: call it with the keeper's token
# connect(start): the keeper's runtime, started first if ``start`` and none runs; else None
Connect = Callable[[bool], "Runtime | None"]


class KeptInstances:
    """The instances this driver created detached or looked up in the keeper."""

    def __init__(self, connect: Connect) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._keepers: dict[str, Runtime] = {}  # kept instance -> the keeper holding it

    def _keeper(self, *, start: bool) -> Runtime | None:
        return self._connect(start)

    def holds(self, instance_id: str) -> bool:
        with self._lock:
            return instance_id in self._keepers

    def _of(self, instance_id: str) -> Runtime:
        with self._lock:
            return self._keepers[instance_id]

    def _remember(self, instance_id: str, keeper: Runtime) -> None:
        with self._lock:
            self._keepers[instance_id] = keeper

    def create(self, spec: InstanceSpec) -> str:
        keeper = self._keeper(start=True)
        assert keeper is not None  # connect(start=True) starts one or raises
        instance_id = keeper.create(spec, owner_id=None)
        self._remember(instance_id, keeper)
        return instance_id

    def endpoint(self, instance_id: str, min_incarnation: int) -> concurrent.futures.Future:
        found = self._of(instance_id).endpoint(instance_id, min_incarnation=min_incarnation)
        tagged: concurrent.futures.Future = concurrent.futures.Future()

        def done(future: concurrent.futures.Future) -> None:
            error = future.exception()
            if error is not None:
                tagged.set_exception(error)
                return
            endpoint: Endpoint = future.result()
            tagged.set_result(dataclasses.replace(endpoint, session=KEEPER_SESSION))

        found.add_done_callback(done)
        return tagged

    def await_death(self, instance_id: str, incarnation: int, timeout: float) -> DeathInfo | None:
        return self._of(instance_id).await_death(instance_id, incarnation, timeout=timeout)

    def terminate(self, instance_id: str, *, wait: bool, reason: str) -> None:
        """End a kept instance, also one known only by its id (``yr.kill_instance(id)``)."""
        with self._lock:
            keeper = self._keepers.get(instance_id)
        keeper = keeper or self._keeper(start=False)
        if keeper is None:
            raise YRError(f"no instance {instance_id} in this session or in the keeper")
        keeper.terminate(instance_id, wait=wait, reason=reason)

    def get_named(self, name: str, namespace: str) -> tuple[str, ClassInfo]:
        keeper = self._keeper(start=False)
        if keeper is None:
            raise ValueError(f"no instance named {name!r} in namespace {namespace!r}")
        instance_id, info = keeper.get_named(name, namespace)
        self._remember(instance_id, keeper)
        return instance_id, info

    def list_named(self) -> list[str]:
        keeper = self._keeper(start=False)
        return keeper.list_named() if keeper is not None else []

    def token(self) -> str:
        keeper = self._keeper(start=False)
        return keeper.session_token if keeper is not None else ""
