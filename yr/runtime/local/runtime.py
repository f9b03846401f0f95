"""LocalRuntime: schedules instances on a logical CPU capacity and runs each as a process.

It keeps the ownership tree (who created whom) so that terminating, crashing for good or
restarting an instance destroys everything it created; the fork server's death-by-EOF covers
the case where the driver itself is killed.

This module creates the runtime's state and serves the Runtime contract, handing detached
instances to the keeper (kept.py). Its parts, mixins over the same state and lock, live beside
it: runtime_scheduling (placing, spawning, failing, terminating instances), runtime_events
(what the fork server reports: readiness, crashes, restarts, its own death), runtime_groups
(resource groups) and runtime_views (``yr.resources()``, the ``yr`` command's views).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import secrets
import threading
import time
from typing import Any

from yr import segment_pool, sharedmem
from yr.console import notice
from yr.errors import DeathInfo, YRError
from yr.localcall.wire import transport
from yr.options import Config
from yr.runtime.base import (
    ClassInfo,
    InstanceSpec,
    Runtime,
    qualified_name,
)
from yr.runtime.local.control import ControlServer
from yr.runtime.local.groups import ResourceGroups
from yr.runtime.local.instances import (
    LocalInstance,
    check_creatable,
    default_num_cpus,
    walk_subtree,
)
from yr.runtime.local.kept import KEEPER_SESSION, Connect, KeptInstances
from yr.runtime.local.ledger import CpuLedger
from yr.runtime.local.output import OutputForwarder
from yr.runtime.local.process import ZygoteProcess
from yr.runtime.local.runtime_events import ForkServerEvents
from yr.runtime.local.runtime_groups import ResourceGroupMethods
from yr.runtime.local.runtime_scheduling import Scheduling
from yr.runtime.local.runtime_views import RuntimeViews
from yr.runtime.local.sessiondir import SessionDirectory, sweep_dead_sessions
from yr.runtime.local.waits import WaitGraph

logger = logging.getLogger("yr")

TERMINATE_WAIT_S = 10.0


def _publish(control_address: str, token: str, role: str) -> Any:
    """Announce the session to the ``yr`` command; a session runs on without it if it cannot."""
    from yr.runtime.local import discovery

    try:
        return discovery.publish(control_address=control_address, token=token, role=role)
    except OSError as error:
        logger.warning("yr: this session is not visible to the `yr` command: %s", error)
        return None


class LocalRuntime(ForkServerEvents, Scheduling, ResourceGroupMethods, RuntimeViews, Runtime):
    """Every instance a child process of one fork server, scheduled on a CPU ledger."""

    def __init__(
        self,
        *,
        num_cpus: int,
        log_to_driver: bool = True,
        resources: dict | None = None,
        role: str = "driver",
        connect_keeper: Connect | None = None,
    ) -> None:
        """``role`` "keeper": the keeper of detached instances (see keeper.py). A driver given
        ``connect_keeper`` hands the detached instances it creates to the keeper."""
        self.shares_memory = True
        self._is_keeper = role == "keeper"
        self._kept = KeptInstances(connect_keeper) if connect_keeper else None
        self.supports_detached = self._is_keeper or self._kept is not None
        self._refusing = ""  # why new instances are refused (a keeper about to end)
        self.session_token = secrets.token_urlsafe(32)
        self._shm_prefix = sharedmem.session_prefix(self.session_token)
        self._ledger = CpuLedger(num_cpus * 1000, resources)
        self._groups = ResourceGroups(self._ledger)
        self._instances: dict[str, LocalInstance] = {}
        self._named: dict[tuple[str, str], str] = {}
        self._pending: list[str] = []
        self._spawned_pids: set[int] = set()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._closed = False
        self.waits = WaitGraph()  # who (concurrency 1) is blocked in yr.get on whom
        self._zygote_death = ""  # why the fork server is gone, once it is
        local_calls = transport() == "local"  # a misspelt YR_TRANSPORT fails before anything
        segment_pool.pool_limit_bytes(), segment_pool.pool_idle_seconds()  # so do these
        sweep_dead_sessions()  # what drivers killed before their cleanup left behind
        self._directory = SessionDirectory(shm_prefix=self._shm_prefix)
        # Instances serve same-machine calls on sockets in the directory (mode 0700).
        self._socket_dir = self._directory.path if local_calls else ""
        self._output = OutputForwarder(directory=self._directory.path, echo=log_to_driver)
        self._zygote = ZygoteProcess(
            on_event=self._on_event,
            shm_prefix=self._shm_prefix,
            session_dir=self._directory.path,
        )
        self._control = ControlServer(self)
        self._published = _publish(self._control.address, self.session_token, role)
        self._timer = threading.Thread(
            target=self._expire_pending, name="yr-scheduler", daemon=True
        )
        self._timer.start()

    @classmethod
    def start(cls, config: Config, *, connect_keeper: Connect | None = None) -> LocalRuntime:
        num_cpus = config.num_cpus or default_num_cpus()
        runtime = cls(
            num_cpus=num_cpus,
            log_to_driver=config.log_to_driver,
            resources=config.resources,
            connect_keeper=connect_keeper,
        )
        notice(
            f"yr: local runtime started with {runtime._ledger.total}m CPU capacity ({num_cpus} "
            f"logical CPUs on {os.cpu_count() or 1} cores; set yr.Config(num_cpus=N) or "
            "YR_NUM_CPUS to change it)"
        )
        return runtime

    # -- creating ---------------------------------------------------------------------------

    def create(self, spec: InstanceSpec, *, owner_id: str | None) -> str:
        options = spec.options
        if options.is_detached:
            if self._kept is not None:  # a driver: the keeper holds it, not our fork server
                return self._kept.create(spec)
            if not self._is_keeper:
                raise YRError(
                    f"{spec.class_info.short_name}: this local runtime has no keeper to hold "
                    "a detached instance past its driver"
                )
            owner_id = None  # in the keeper: owned by nothing
        sharedmem.check_session_segments(spec.payload_buffers, self._shm_prefix)
        with self._lock:
            self._check_open()
            if options.resource_group_options.placed:
                self._groups.check_placement(options, spec.class_info.short_name)
            check_creatable(spec, owner_id, self._ledger, self._instances, self._named)
            name_key = (options.namespace, options.name)
            instance_id = f"{spec.class_info.short_name.lower()}-{secrets.token_hex(4)}"
            instance = LocalInstance(
                instance_id=instance_id,
                spec=spec,
                owner_id=owner_id,
                requested_at=time.monotonic(),
                restarts_left=options.recover_retry_times,
            )
            self._instances[instance_id] = instance
            if options.name:
                self._named[name_key] = instance_id
            if owner_id is not None:
                self._instances[owner_id].children.add(instance_id)
            if options.resource_group_options.placed:
                self._groups.join(instance_id, options)
            self._pending.append(instance_id)
            self._schedule()
            self._changed.notify_all()
        return instance_id

    # -- the Runtime contract ---------------------------------------------------------------

    def endpoint(self, instance_id: str, *, min_incarnation: int = 0) -> concurrent.futures.Future:
        if self._kept is not None and self._kept.holds(instance_id):
            return self._kept.endpoint(instance_id, min_incarnation)
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            instance = self._instances.get(instance_id)
            if instance is None:
                future.set_exception(YRError(f"no instance {instance_id} in this session"))
            elif instance.error is not None:
                future.set_exception(instance.error)
            elif instance.state == "ready" and instance.incarnation >= min_incarnation:
                future.set_result(instance.endpoint)
            else:
                instance.waiters.append((min_incarnation, future))
        return future

    def await_death(
        self, instance_id: str, incarnation: int, *, timeout: float
    ) -> DeathInfo | None:
        if self._kept is not None and self._kept.holds(instance_id):
            return self._kept.await_death(instance_id, incarnation, timeout)
        deadline = time.monotonic() + timeout
        with self._lock:
            instance = self._instances.get(instance_id)
            if instance is None:
                return None
            while incarnation not in instance.deaths:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return None
                self._changed.wait(remaining)
            return instance.deaths[incarnation]

    def terminate(self, instance_id: str, *, wait: bool = False, reason: str = "") -> None:
        with self._lock:
            ours = instance_id in self._instances
        if not ours and self._kept is not None:  # kept for us, or for an earlier driver
            self._kept.terminate(instance_id, wait=wait, reason=reason)
            return
        with self._lock:
            if instance_id not in self._instances:
                raise YRError(f"no instance {instance_id} in this session")
            subtree = list(walk_subtree(self._instances, instance_id))
            self._terminate_locked(instance_id, reason=reason or "terminated")
            self._changed.notify_all()
            if not wait:
                return
            deadline = time.monotonic() + TERMINATE_WAIT_S
            while any(i.process_alive for i in subtree):
                if not self._changed.wait(max(deadline - time.monotonic(), 0)):
                    break

    def block_wait(self, waiter: str, targets: list[str]) -> None:
        self.waits.block(waiter, targets)

    def end_wait(self, waiter: str, targets: list[str]) -> None:
        self.waits.unblock(waiter, targets)

    def get_named(self, name: str, namespace: str) -> tuple[str, ClassInfo]:
        with self._lock:
            instance_id = self._named.get((namespace, name))
            if instance_id is not None:
                return instance_id, self._instances[instance_id].spec.class_info
        if self._kept is not None:  # a detached one, kept past the driver that made it
            return self._kept.get_named(name, namespace)
        raise ValueError(f"no instance named {name!r} in namespace {namespace!r}")

    def list_named(self) -> list[str]:
        with self._lock:
            names = [qualified_name(name, ns) for ns, name in self._named]
        return sorted(names + (self._kept.list_named() if self._kept is not None else []))

    def session_token_of(self, session: str) -> str:
        if session == KEEPER_SESSION and self._kept is not None:
            return self._kept.token()
        return super().session_token_of(session)

    def idle(self) -> bool:
        """No instance is pending or alive."""
        with self._lock:
            return all(i.ended for i in self._instances.values())

    def stop_if_idle(self) -> bool:
        """The keeper's end: True, and refusing new instances from now on, if it is idle."""
        with self._lock:
            if not self.idle():
                return False
            self._refusing = "the keeper of detached instances is ending; try again"
            return True

    @property
    def zygote_pid(self) -> int:
        return self._zygote.pid

    def shutdown(self) -> None:
        with self._lock:
            if self._closed:
                return
            for instance in list(self._instances.values()):
                if instance.owner_id is None:
                    self._terminate_locked(instance.instance_id, reason="finalized")
            self._remove_owned_groups(None, why="finalized the session")
            self._closed = True
            self._changed.notify_all()
            self._wait_for_shutdown_hooks_locked()
        if self._published is not None:
            from yr.runtime.local import discovery

            discovery.withdraw(self._published)
        self._zygote.close()
        self._control.stop()
        sharedmem.discard_prefix(self._shm_prefix)
        self._output.stop()
        self._directory.remove()

    def _wait_for_shutdown_hooks_locked(self) -> None:
        """Closing the fork server kills every process: first let the ``__yr_shutdown__``
        hooks already started run out, each within its grace period."""
        while True:
            now = time.monotonic()
            waiting = [
                instance.shutdown_hook_until
                for instance in self._instances.values()
                if instance.shutdown_hook_until > now and instance.process_alive
            ]
            if not waiting:
                return
            self._changed.wait(min(waiting) - now)

    def _check_open(self) -> None:
        if self._closed:
            raise YRError("the local runtime was shut down")
        if self._refusing:
            raise YRError(self._refusing)
        if self._zygote_death:
            raise YRError(
                f"{self._zygote_death}; call yr.finalize() and yr.init() to start a new session"
            )
