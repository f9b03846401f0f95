"""LocalRuntime: schedules instances on a logical CPU capacity and runs each as a process.

It keeps the ownership tree (who created whom) so that terminating, crashing for good or
restarting an instance destroys everything it created; the fork server's death-by-EOF covers
the case where the driver itself is killed.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from yr import segment_pool, sharedmem
from yr.console import notice
from yr.errors import DeathInfo, YRError, YRInstanceDiedError
from yr.futures import settle
from yr.localcall.wire import transport
from yr.options import Config
from yr.runtime import node_resources
from yr.runtime.base import (
    ClassInfo,
    Endpoint,
    InstanceSpec,
    ResourceGroupSpec,
    Runtime,
    qualified_name,
)
from yr.runtime.local.control import ControlServer
from yr.runtime.local.groups import ResourceGroups
from yr.runtime.local.instances import (
    LocalInstance,
    check_creatable,
    default_num_cpus,
    kill_grace_s,
    record_crash,
    restart_delay,
    schedule_timeout_error,
    spawn_command,
    spawn_failed_error,
    walk_subtree,
)
from yr.runtime.local.kept import KEEPER_SESSION, Connect, KeptInstances
from yr.runtime.local.ledger import CpuLedger
from yr.runtime.local.output import OutputForwarder
from yr.runtime.local.process import (
    ZygoteProcess,
    init_failure_error,
    read_init_failure,
    sweep_process_group,
)
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


def _drop_payload(instance: LocalInstance) -> list[Callable[[], None]]:
    """Forget the payload no incarnation will read again; what removes its segments (outside
    the lock). A process that mapped them keeps its mapping: only the names go."""
    segments = list(instance.spec.payload_buffers)
    instance.spec = dataclasses.replace(instance.spec, payload=b"", payload_buffers=())
    return [lambda: sharedmem.discard(segments)] if segments else []


class LocalRuntime(Runtime):
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
        self._graceful_until: dict[str, float] = {}  # instance -> end of its shutdown hook
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

    def _schedule(self) -> None:
        self._groups.admit_what_fits()  # whole groups first: they never hold a part
        for instance_id in list(self._pending):
            instance = self._instances[instance_id]
            options = instance.spec.options
            if options.resource_group_options.placed:
                # its bundle's reservation, never the free pool
                if not self._groups.place(instance_id, options):
                    continue
            elif self._ledger.fits(options.cpu, options.custom_resources):
                self._ledger.allocate(instance_id, options.cpu, options.custom_resources)
            else:
                continue
            self._pending.remove(instance_id)
            self._spawn(instance)

    def _spawn(self, instance: LocalInstance) -> None:
        instance.state = "starting"
        self._zygote.send(
            spawn_command(
                instance,
                control_address=self._control.address,
                session_token=self.session_token,
                log_socket=self._output.path,
                socket_dir=self._socket_dir,
            )
        )

    def _expire_pending(self) -> None:
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                next_deadline = None
                for instance_id in list(self._pending):
                    instance = self._instances[instance_id]
                    deadline = (
                        instance.requested_at + instance.spec.options.schedule_timeout_ms / 1e3
                    )
                    if deadline <= now:
                        self._pending.remove(instance_id)
                        failing = self._fail(instance, self._schedule_timeout_error(instance))
                        # Safe under our lock: the client's callbacks never wait for it
                        # while holding a lock of their own.
                        for notify in failing:
                            notify()
                    elif next_deadline is None or deadline < next_deadline:
                        next_deadline = deadline
                wait = None if next_deadline is None else max(next_deadline - now, 0.01)
                self._changed.wait(wait)

    def _schedule_timeout_error(self, instance: LocalInstance) -> YRError:
        options = instance.spec.options
        if options.resource_group_options.placed:
            return self._groups.placement_timeout_error(instance.label, options)
        return schedule_timeout_error(instance, self._ledger, len(self._pending))

    # -- events from the fork server --------------------------------------------------------

    def _on_event(self, event: dict[str, Any]) -> None:
        completions: list[Callable[[], None]] = []
        if event["event"] == "init-failed":  # read it before taking the lock
            event["remote_error"] = read_init_failure(event["segment"])
        with self._lock:
            kind = event["event"]
            instance = self._instances.get(event.get("instance_id", ""))
            if kind == "zygote-exited":
                self._on_zygote_exit(event, completions)
            elif instance is None or event["incarnation"] != instance.incarnation:
                pass  # a stale incarnation; its replacement is already on its way
            elif kind == "spawned":
                instance.pid = event["pid"]
                self._spawned_pids.add(event["pid"])
            elif kind == "ready" and instance.state == "starting":
                instance.state = "ready"
                instance.endpoint = Endpoint(
                    f"127.0.0.1:{event['port']}",
                    instance.incarnation,
                    local_socket=event.get("socket", ""),
                )
                completions.extend(self._release_waiters(instance))
                if instance.restarts_left == 0:  # no incarnation will read the payload again
                    completions.extend(_drop_payload(instance))
            elif kind == "init-failed":
                instance.init_failure = event["remote_error"]
            elif kind == "spawn-failed" and instance.state == "starting":
                completions.extend(self._fail(instance, spawn_failed_error(instance, event)))
            elif kind == "exited":
                self._on_exit(instance, event, completions)
            self._changed.notify_all()
        for complete in completions:
            complete()

    def _on_exit(self, instance: LocalInstance, event: dict[str, Any], completions: list) -> None:
        self.waits.forget(instance.instance_id)  # a process that exited waits on nothing
        if instance.state in ("terminated", "dead"):
            # Killed on purpose: the reason is the truth, the SIGKILL only the means.
            instance.deaths.setdefault(
                instance.incarnation, DeathInfo(reason=instance.end_reason or "terminated")
            )
            return
        # A crash: whatever it created goes with it, restart or not.
        for child_id in list(instance.children):
            self._terminate_locked(
                child_id, reason=f"terminated because its owner {instance.instance_id} died"
            )
        instance.children.clear()
        self._remove_owned_groups(instance.instance_id, why="died")
        init_failure = instance.init_failure
        death = record_crash(instance, exit_code=event["exit_code"], signal=event["signal"])
        if death.will_restart:
            done = instance.spec.options.recover_retry_times - instance.restarts_left
            delay = restart_delay(done)
            logger.warning(
                "yr: instance %s %s; restarting it%s",
                instance.label,
                death.describe(),
                f" in {delay:g} s" if delay else "",
            )
            instance.incarnation += 1
            instance.state = "restarting"
            if delay:  # a crash loop backs off instead of forking as fast as it can
                timer = threading.Timer(
                    delay, self._respawn, args=(instance.instance_id, instance.incarnation)
                )
                timer.daemon = True
                timer.start()
            else:
                self._spawn(instance)
            return
        error: YRError = YRInstanceDiedError(
            instance.instance_id, instance.spec.class_info.class_name, death
        )
        if init_failure is not None:  # a failed constructor is a failed instance
            error = init_failure_error(
                init_failure, label=instance.label, attempts=instance.incarnation + 1
            )
        completions.extend(self._fail(instance, error, state="dead"))

    def _respawn(self, instance_id: str, incarnation: int) -> None:
        with self._lock:
            instance = self._instances.get(instance_id)
            if (
                not self._closed
                and instance is not None
                and instance.state == "restarting"
                and instance.incarnation == incarnation
            ):
                self._spawn(instance)

    def _on_zygote_exit(self, event: dict[str, Any], completions: list) -> None:
        if self._closed:
            return  # it exited because we closed it
        self._zygote_death = (
            f"the local runtime's fork server (pid {self._zygote.pid}) died "
            f"(exit status {event['exit_code']}), taking every instance with it"
        )
        logger.error("yr: %s; yr.finalize() and yr.init() start a new one", self._zygote_death)
        for instance in self._instances.values():
            if instance.error is not None:
                continue
            death = DeathInfo(reason=self._zygote_death)
            if instance.state in ("starting", "ready"):
                instance.deaths.setdefault(instance.incarnation, death)
                if instance.pid is not None:  # PDEATHSIG ends it, but not what it started
                    sweep_process_group(instance.pid)
            if instance.instance_id in self._pending:
                self._pending.remove(instance.instance_id)
            error = YRInstanceDiedError(
                instance.instance_id, instance.spec.class_info.class_name, death
            )
            completions.extend(self._fail(instance, error))

    # -- state changes ----------------------------------------------------------------------

    def _release_waiters(self, instance: LocalInstance) -> list[Callable[[], None]]:
        ready, waiting = [], []
        for minimum, future in instance.waiters:
            (ready if minimum <= instance.incarnation else waiting).append(future)
        instance.waiters = waiting
        endpoint = instance.endpoint
        return [lambda f=future: settle(f, result=endpoint) for future in ready]

    def _fail(
        self, instance: LocalInstance, error: BaseException, *, state: str = "dead"
    ) -> list[Callable[[], None]]:
        instance.state = state
        instance.error = error
        instance.endpoint = None
        # It will never start again: keep the record (callers may still ask), not the payload.
        release = _drop_payload(instance)
        self._ledger.release(instance.instance_id)
        options = instance.spec.options
        if options.resource_group_options.placed:
            self._groups.leave(instance.instance_id, options)
        if (
            options.name
            and self._named.get((options.namespace, options.name)) == instance.instance_id
        ):
            del self._named[(options.namespace, options.name)]
        waiters, instance.waiters = instance.waiters, []
        self._schedule()
        self._changed.notify_all()
        return release + [lambda f=future: settle(f, error=error) for _, future in waiters]

    def _terminate_locked(self, instance_id: str, *, reason: str) -> None:
        """Stop an instance and its subtree; ``reason`` completes "instance X was ..."."""
        instance = self._instances.get(instance_id)
        if instance is None or instance.state in ("terminated", "dead"):
            return
        for child_id in list(instance.children):
            self._terminate_locked(child_id, reason=f"terminated with its owner {instance_id}")
        self._remove_owned_groups(instance_id, why="ended")
        if instance_id in self._pending:
            self._pending.remove(instance_id)
        was_running = instance.state in ("starting", "ready")  # "restarting" has no process
        instance.end_reason = reason
        error: YRError = YRError(f"instance {instance.label} was {reason}")
        if "owner" in reason:  # the same words whichever way a caller learns of it
            error = YRInstanceDiedError(
                instance_id, instance.spec.class_info.class_name, DeathInfo(reason=reason)
            )
        for notify in self._fail(instance, error, state="terminated"):
            notify()
        if was_running:
            grace_s = kill_grace_s(instance)
            self._zygote.send({"op": "kill", "instance_id": instance_id, "grace_s": grace_s})
            if grace_s:
                self._graceful_until[instance_id] = time.monotonic() + grace_s
        owner = self._instances.get(instance.owner_id or "")
        if owner is not None:
            owner.children.discard(instance_id)

    def _remove_owned_groups(self, owner_id: str | None, *, why: str) -> None:
        for name in self._groups.owned_by(owner_id):
            self._remove_group_locked(name, reason=f"its owner {owner_id or 'the driver'} {why}")

    def _remove_group_locked(self, name: str, *, reason: str) -> None:
        group = self._groups.pop(name)
        for member in sorted(group.members):
            self._terminate_locked(
                member, reason=f"terminated because its resource group {name!r} was {reason}"
            )
        self._schedule()
        self._changed.notify_all()

    # -- resource groups --------------------------------------------------------------------

    def create_resource_group(self, spec: ResourceGroupSpec, *, owner_id: str | None) -> None:
        with self._lock:
            self._check_open()
            self._groups.check_creatable(spec)
            if owner_id is not None:
                owner = self._instances.get(owner_id)
                if owner is None or owner.error is not None:
                    raise YRError(f"the creating instance {owner_id} is no longer alive")
            self._groups.add(spec, owner_id)
            self._schedule()
            self._changed.notify_all()

    def resource_group_admitted(self, name: str) -> concurrent.futures.Future:
        # A future of the caller's own: cancelling it (a client that gave up) leaves the group be.
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            try:
                admitted = self._groups.get(name).admitted
            except ValueError as error:
                future.set_exception(YRError(str(error)))
                return future
        admitted.add_done_callback(lambda done: settle(future, result=None, error=done.exception()))
        return future

    def remove_resource_group(self, name: str) -> None:
        with self._lock:
            self._groups.get(name)
            self._remove_group_locked(name, reason="removed")

    def describe_resource_group(self, name: str) -> str:
        with self._lock:
            return self._groups.describe(name)

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
            while any(self._alive_process(i) for i in subtree):
                if not self._changed.wait(max(deadline - time.monotonic(), 0)):
                    break

    def _alive_process(self, instance: LocalInstance) -> bool:
        return instance.pid is not None and instance.incarnation not in instance.deaths

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
            return all(i.state in ("dead", "terminated") for i in self._instances.values())

    def stop_if_idle(self) -> bool:
        """The keeper's end: True, and refusing new instances from now on, if it is idle."""
        with self._lock:
            if not self.idle():
                return False
            self._refusing = "the keeper of detached instances is ending; try again"
            return True

    def resources(self) -> list[dict[str, Any]]:
        with self._lock:
            memory_held = self._groups.memory_reserved() + sum(
                self._instances[holder].spec.options.memory
                for holder in self._ledger.holders()
                if holder in self._instances
            )
            capacity = {"CPU": self._ledger.total, "Memory": node_resources.physical_memory_mb()}
            allocatable = {"CPU": self._ledger.free, "Memory": capacity["Memory"] - memory_held}
            return [
                {
                    **node_resources.entry(
                        "local", ready=True, capacity=capacity, allocatable=allocatable
                    ),
                    "node": "local",
                    "cpu_total": self._ledger.total,
                    "cpu_used": self._ledger.used,
                    "cpu_free": self._ledger.free,
                    "instances": sum(1 for i in self._instances.values() if i.error is None),
                    "pending": len(self._pending),
                    "holders": self._ledger.holders(),
                    "custom_resources": self._ledger.custom_resources(),
                    "resource_groups": self._groups.rows(),
                }
            ]

    def inspect(self) -> dict[str, Any]:
        """Every instance of the session as plain data, for the ``yr`` command."""
        from yr.runtime.local.snapshot import session_view

        with self._lock:
            return session_view(
                self._instances.values(),
                self._ledger,
                self.waits,
                now=time.monotonic(),
                resource_groups=self._groups.rows(),
            )

    def log_lines(self, instance_id: str, *, after: int = 0) -> tuple[list, bool]:
        """What ``instance_id`` printed (numbered above ``after``) and whether it has ended."""
        with self._lock:
            instance = self._instances.get(instance_id)
            if instance is None:
                raise YRError(f"no instance {instance_id} in this session")
            ended = instance.state in ("dead", "terminated")
        return self._output.book.lines(instance_id, after=after), ended

    def pids(self) -> dict[str, int]:
        """Process ids of the live instances (for tests and tooling)."""
        with self._lock:
            return {
                i.instance_id: i.pid
                for i in self._instances.values()
                if i.pid is not None and i.error is None
            }

    def spawned_pids(self) -> set[int]:
        """Every instance process this runtime ever started, dead or alive."""
        with self._lock:
            return set(self._spawned_pids)

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
                deadline
                for instance_id, deadline in self._graceful_until.items()
                if deadline > now and self._alive_process(self._instances[instance_id])
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
