"""Follows the status of a session's YRInstances and answers "where" and "how did it die"."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from yr import contract as c
from yr.contract import GROUP, PLURAL, VERSION, LastTermination
from yr.errors import DeathInfo, YRError, YRInstanceDiedError
from yr.runtime.base import Endpoint
from yr.runtime.kubernetes import api
from yr.runtime.kubernetes.diagnosis import schedule_error

# A Running pod's server gets this long to report SERVING before we fall back to waiting for
# the kubelet's readiness probe (status phase Ready).
LISTEN_CHECK_TIMEOUT_S = 30.0
# gRPC's first reconnect backoff is 1 s: while the server starts, try again far sooner.
_FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 250),
]


@dataclass
class _Tracked:
    class_name: str
    created_at: float
    schedule_timeout_s: float
    status: dict[str, Any] = field(default_factory=dict)
    deaths: dict[int, DeathInfo] = field(default_factory=dict)
    waiters: list[tuple[int, concurrent.futures.Future]] = field(default_factory=list)
    error: BaseException | None = None
    deleted: bool = False
    # (podIP, incarnation) whose server answered SERVING / is being checked.
    serving: tuple[str, int] | None = None
    checking: tuple[str, int] | None = None
    exists: bool = False  # created (or seen): absent from a fresh listing means deleted


def death_from_status(
    status: dict[str, Any], incarnation: int, *, will_restart: bool, restarts_left: int
) -> DeathInfo:
    """The operator's structured lastTermination for that incarnation, as a DeathInfo."""
    ended = LastTermination.from_status(status.get("lastTermination"))
    if ended is None or ended.incarnation != incarnation:
        reason = status.get("reason") or "its pod stopped"
        return DeathInfo(reason=reason, will_restart=will_restart, restarts_left=restarts_left)
    return DeathInfo(
        exit_code=ended.exit_code,
        signal=ended.signal,
        reason=_why(ended),
        will_restart=will_restart,
        restarts_left=restarts_left,
    )


def _why(ended: LastTermination) -> str:
    """What to add to the exit code or signal: the container's last words, plus advice."""
    if ended.reason == c.REASON_SIGNAL and ended.signal is not None:
        return ""  # the signal says it all
    words = ended.message.strip()
    if ended.exit_code is None and ended.signal is None:
        return words or ended.reason  # OOMKilled, Evicted, PodDeleted, ...
    last = words.splitlines()[-1] if words else ""
    if ended.reason != c.REASON_ERROR:
        last = f"{ended.reason}: {last}" if last else ended.reason
    if "ModuleNotFoundError" in words:
        last += (
            " (the instance image lacks a module the class needs: build it into the image "
            "the chart's instance.image names, or ship it with "
            "cloudpickle.register_pickle_by_value(module); see docs/quickstart-kubernetes.md)"
        )
    return last


class StatusWatcher:
    """One watch on the session's YRInstances, feeding futures of endpoints and deaths."""

    def __init__(
        self,
        *,
        custom_api: Any,
        namespace: str,
        session: str,
        address_of: Callable[[str, dict[str, Any]], str],
        open_channel: Callable[[str, list[tuple[str, Any]]], grpc.Channel],
        on_pod_running: Callable[[str], None] | None = None,
        other_session: bool = False,
    ) -> None:
        """``other_session``: not the runtime's own session, so its endpoints name it (the
        caller then uses that session's credentials)."""
        self._api = custom_api
        self._endpoint_session = session if other_session else ""
        self._namespace = namespace
        self._selector = f"{c.SESSION_LABEL}={session}"
        self._address_of = address_of
        self._open_channel = open_channel
        self._on_pod_running = on_pod_running
        self._tracked: dict[str, _Tracked] = {}
        # The latest object of every session instance nobody asked about yet: a handle this
        # process was given (not one it created) may name an instance whose last event passed.
        self._untracked: dict[str, dict[str, Any]] = {}
        self._checks: set[grpc.Channel] = set()
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="yr-k8s-watch", daemon=True)
        self._thread.start()
        self._timer = threading.Thread(target=self._expire, name="yr-k8s-timeouts", daemon=True)
        self._timer.start()

    def track(
        self, name: str, *, class_name: str, schedule_timeout_s: float, exists: bool = False
    ) -> None:
        with self._lock:
            tracked = self._tracked.get(name)
            if tracked is None:
                tracked = self._tracked[name] = _Tracked(
                    class_name, time.monotonic(), schedule_timeout_s
                )
                # Listed before anyone asked (a watch that just started): its last word counts.
                seen = self._untracked.pop(name, None)
                if seen is not None:
                    self._observe(seen, deleted=False)
            tracked.exists = tracked.exists or exists

    def created(self, name: str) -> None:
        """The API server has the YRInstance: from now on, missing from a listing is deleted."""
        with self._lock:
            tracked = self._tracked.get(name)
            if tracked is not None:
                tracked.exists = True

    def forget(self, name: str, error: BaseException) -> None:
        with self._lock:
            tracked = self._tracked.get(name)
            if tracked is not None:
                self._fail(tracked, error)

    def endpoint(self, name: str, min_incarnation: int) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            tracked = self._tracked.get(name)
            if tracked is None:
                tracked = self._tracked[name] = _Tracked("instance", time.monotonic(), 1e9)
                seen = self._untracked.pop(name, None)
                if seen is not None:
                    self._observe(seen, deleted=False)
            if tracked.error is not None:
                future.set_exception(tracked.error)
                return future
            tracked.waiters.append((min_incarnation, future))
            self._settle(name, tracked)
        return future

    def await_death(self, name: str, incarnation: int, timeout: float) -> DeathInfo | None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                tracked = self._tracked.get(name)
                if tracked is not None and incarnation in tracked.deaths:
                    return tracked.deaths[incarnation]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._lock.wait(remaining)

    # -- the watch --------------------------------------------------------------------------

    def _run(self) -> None:
        resource_version = ""
        while not self._stopping.is_set():
            stream = watch.Watch()
            try:
                if not resource_version:
                    resource_version = self._relist()
                for event in stream.stream(
                    self._api.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self._namespace,
                    PLURAL,
                    label_selector=self._selector,
                    resource_version=resource_version,
                    timeout_seconds=30,
                ):
                    if self._stopping.is_set():
                        return
                    obj = event["object"]
                    resource_version = obj["metadata"].get("resourceVersion", resource_version)
                    self._observe(obj, deleted=event["type"] == "DELETED")
            except ApiException as error:
                if error.status == 410:
                    resource_version = ""  # too old: list again
                elif self._stopping.wait(0.5):
                    return
            except Exception:
                if self._stopping.wait(0.5):
                    return
            finally:
                stream.stop()

    def _relist(self) -> str:
        """List the session's instances; one that existed but is not listed was deleted while
        nobody watched (a 410 gap). Returns the list's resourceVersion to watch from."""
        with self._lock:
            known = {name for name, tracked in self._tracked.items() if tracked.exists}
        listing = api.call(
            self._api.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self._namespace,
            PLURAL,
            label_selector=self._selector,
        )
        listed = set()
        for item in listing.get("items", []):
            listed.add(item["metadata"]["name"])
            self._observe(item, deleted=False)
        with self._lock:
            for name in set(self._untracked) - listed:
                del self._untracked[name]
        for name in known - listed:
            with self._lock:
                tracked = self._tracked.get(name)
                status = dict(tracked.status) if tracked is not None else {}
            self._observe({"metadata": {"name": name}, "status": status}, deleted=True)
        return listing["metadata"].get("resourceVersion", "")

    def _observe(self, obj: dict[str, Any], *, deleted: bool) -> None:
        name = obj["metadata"]["name"]
        status = obj.get("status") or {}
        if (
            self._on_pod_running is not None
            and status.get("phase") in (c.RUNNING, c.READY)
            and status.get("podName")
        ):
            self._on_pod_running(status["podName"])
        with self._lock:
            tracked = self._tracked.get(name)
            if tracked is None:
                if deleted:
                    self._untracked.pop(name, None)
                else:
                    self._untracked[name] = obj
                return
            tracked.exists = True
            tracked.status = status
            max_restarts = int((obj.get("spec") or {}).get("maxRestarts", 0))
            restarts = int(status.get("restarts") or 0)
            phase = status.get("phase", "")
            # Every incarnation below the current one has died.
            for incarnation in range(restarts):
                tracked.deaths.setdefault(
                    incarnation,
                    DeathInfo(
                        reason="its pod died and was replaced",
                        will_restart=True,
                        restarts_left=max_restarts - incarnation - 1,
                    ),
                )
            if phase == c.RESTARTING and restarts > 0:
                # The operator already counts the incarnation it is about to start.
                tracked.deaths[restarts - 1] = death_from_status(
                    status, restarts - 1, will_restart=True, restarts_left=max_restarts - restarts
                )
            if phase == c.FAILED:
                death = death_from_status(status, restarts, will_restart=False, restarts_left=0)
                tracked.deaths.setdefault(restarts, death)
                self._fail(tracked, YRInstanceDiedError(name, tracked.class_name, death))
            if deleted:
                tracked.deleted = True
                tracked.deaths.setdefault(restarts, DeathInfo(reason="its YRInstance was deleted"))
                self._fail(tracked, YRError(f"instance {name} was deleted"))
            self._settle(name, tracked)
            self._lock.notify_all()

    def _settle(self, name: str, tracked: _Tracked) -> None:
        status = tracked.status
        pod_ip, phase = status.get("podIP"), status.get("phase")
        if phase not in (c.RUNNING, c.READY) or not pod_ip or not tracked.waiters:
            return
        incarnation = int(status.get("restarts") or 0)
        address = self._address_of(name, status)
        # Usable as soon as its server answers, not a readiness period later. Through a
        # gateway only Ready counts: the gateway forwards calls, not health checks.
        if phase == c.RUNNING and tracked.serving != (pod_ip, incarnation):
            if "#" not in address and tracked.checking != (pod_ip, incarnation):
                tracked.checking = (pod_ip, incarnation)
                threading.Thread(
                    target=self._check_serving,
                    args=(name, tracked, address, (pod_ip, incarnation)),
                    name="yr-k8s-listen",
                    daemon=True,
                ).start()
            return
        endpoint = Endpoint(address, incarnation, self._endpoint_session)
        waiting = []
        for minimum, future in tracked.waiters:
            if minimum <= incarnation:
                if not future.done():
                    future.set_result(endpoint)
            else:
                waiting.append((minimum, future))
        tracked.waiters = waiting

    def _check_serving(self, name: str, tracked: _Tracked, address: str, key: tuple) -> None:
        """Watch the pod's gRPC health until SERVING (its object is constructed), then settle."""
        channel = self._open_channel(address, _FAST_RECONNECT)
        with self._lock:
            if self._stopping.is_set():
                channel.close()
                return
            self._checks.add(channel)
        serving = False
        try:
            replies = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(),
                timeout=LISTEN_CHECK_TIMEOUT_S,
                wait_for_ready=True,  # refused connections are retried, not failed
            )
            for reply in replies:
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    serving = True
                    replies.cancel()
                    break
        except grpc.RpcError:
            pass  # deadline, or the pod went away: the status watch says what happened
        finally:
            with self._lock:
                self._checks.discard(channel)
            channel.close()
        with self._lock:
            if tracked.checking == key:
                tracked.checking = None
                if serving:
                    tracked.serving = key
                    self._settle(name, tracked)

    def _fail(self, tracked: _Tracked, error: BaseException) -> None:
        if tracked.error is None:
            tracked.error = error
        for _, future in tracked.waiters:
            if not future.done():
                future.set_exception(tracked.error)
        tracked.waiters = []
        self._lock.notify_all()

    def _expire(self) -> None:
        while not self._stopping.wait(0.2):
            now = time.monotonic()
            with self._lock:
                for name, tracked in self._tracked.items():
                    never_ready = tracked.status.get("phase") in (None, "", c.PENDING)
                    if (
                        tracked.error is None
                        and never_ready
                        and tracked.waiters
                        and now - tracked.created_at > tracked.schedule_timeout_s
                    ):
                        error = schedule_error(
                            name,
                            tracked.class_name,
                            tracked.status,
                            timeout_s=tracked.schedule_timeout_s,
                        )
                        self._fail(tracked, error)

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            for channel in self._checks:
                channel.close()  # ends a pending health watch at once
            for tracked in self._tracked.values():
                self._fail(tracked, YRError("the session was finalized"))
