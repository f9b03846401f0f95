"""What LocalRuntime does with its fork server's events: a process spawned, ready or failed
to start, an ``__init__`` that raised, an exit (on purpose, or a crash that restarts the
instance after a backoff or fails it for good), and the fork server's own death."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from yr.errors import DeathInfo, YRError, YRInstanceDiedError
from yr.runtime.base import Endpoint
from yr.runtime.local.instances import (
    LocalInstance,
    drop_payload,
    record_crash,
    restart_delay,
    spawn_failed_error,
)
from yr.runtime.local.process import init_failure_error, read_init_failure, sweep_process_group

if TYPE_CHECKING:
    from yr.runtime.local.process import ZygoteProcess
    from yr.runtime.local.waits import WaitGraph

logger = logging.getLogger("yr")


class ForkServerEvents:
    """A part of ``LocalRuntime`` (a mixin), fed by its fork server's reader thread: it uses the
    runtime's lock and state below, and its ``_spawn``, ``_fail``, ``_release_waiters``,
    ``_terminate_locked`` and ``_remove_owned_groups``."""

    waits: WaitGraph
    _lock: threading.RLock
    _changed: threading.Condition
    _closed: bool
    _instances: dict[str, LocalInstance]
    _spawned_pids: set[int]
    _zygote: ZygoteProcess
    _zygote_death: str

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
                    completions.extend(drop_payload(instance))
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
        if instance.ended:
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
            if instance.ended:
                continue
            death = DeathInfo(reason=self._zygote_death)
            if instance.state in ("starting", "ready"):
                instance.deaths.setdefault(instance.incarnation, death)
                if instance.pid is not None:  # PDEATHSIG ends it, but not what it started
                    sweep_process_group(instance.pid)
            error = YRInstanceDiedError(
                instance.instance_id, instance.spec.class_info.class_name, death
            )
            completions.extend(self._fail(instance, error))
