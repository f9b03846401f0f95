"""A pod worker: one thread that runs one pod's containers as processes and reports its status.

Lifecycle as the kubelet's: prepare (volumes, env; retried while a Secret is missing), start,
probe readiness, report Running/Ready/terminated through pods/status, and on deletionTimestamp
SIGTERM -> grace period -> SIGKILL -> final status -> delete with grace period 0.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from kubernetes.client.exceptions import ApiException

from tests.cluster.meta import now_rfc3339
from tests.cluster.podenv import ConfigError, Launch, resolve_argv0
from tests.cluster.probes import Prober

if TYPE_CHECKING:
    from tests.cluster.node import NodeAgent

log = logging.getLogger("node.pods")
Obj = dict[str, Any]
PREPARE_RETRY = 1.0  # seconds between attempts while a Secret/ConfigMap is missing


@dataclass
class Container:
    spec: Obj
    proc: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    prober: Prober | None = None
    exited: threading.Event = field(default_factory=threading.Event)

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def running(self) -> bool:
        return self.proc is not None and not self.exited.is_set()

    @property
    def ready(self) -> bool:
        return self.running and (self.prober is None or self.prober.ready)


def termination(returncode: int) -> Obj:
    """What containerd/kubelet report: signals become 128+N with reason Error and no message
    (a real kubelet has one only when the container wrote a termination message)."""
    if returncode < 0:
        return {"exitCode": 128 - returncode, "reason": "Error"}
    return {"exitCode": returncode, "reason": "Completed" if returncode == 0 else "Error"}


class PodWorker(threading.Thread):
    def __init__(self, agent: NodeAgent, pod: Obj, pod_ip: str) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.agent = agent
        self.pod = pod
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.pod_ip = pod_ip
        self.dir: Path = agent.pods_dir / f"{self.namespace}_{self.pod_name}_{self.uid}"
        self.containers = [Container(spec=c) for c in pod["spec"].get("containers", [])]
        self.wake = threading.Event()
        self.removed = False  # the object is gone from the API
        self.shutting_down = False  # the agent is stopping
        self.start_time = now_rfc3339()
        self._mount_warned = ""  # the FailedMount message last posted (post each once)
        self._conditions: dict[str, Obj] = {}
        self.reported: Obj | None = None

    # ---- called from the agent's watch thread
    def update(self, pod: Obj) -> None:
        self.pod = pod
        self.wake.set()

    def gone(self) -> None:
        self.removed = True
        self.wake.set()

    def shutdown(self) -> None:
        self.shutting_down = True
        self.wake.set()

    # ---- the worker thread
    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod worker %s failed", self.name)
        finally:
            self._kill(grace=0)
            for container in self.containers:
                if container.prober:
                    container.prober.close()
            self.agent.worker_done(self)

    def _deleting(self) -> bool:
        return bool(self.pod["metadata"].get("deletionTimestamp"))

    def _run(self) -> None:
        launches = self._prepare()
        if launches is None:
            return self._finish()
        for container, launch in zip(self.containers, launches, strict=True):
            self._start(container, launch)
        self._report()
        while True:
            self.wake.clear()
            if self.removed or self.shutting_down or self._deleting():
                return self._finish()
            changed = False
            for container in self.containers:
                if container.prober and container.running:
                    changed |= container.prober.run_if_due()
            for container in self.containers:
                if (
                    container.proc is not None
                    and container.exited.is_set()
                    and "running" in container.state
                ):
                    self._record_exit(container)
                    changed = True
            if changed:
                self._report()
            self.wake.wait(self._next_wait())

    def _next_wait(self) -> float:
        waits = [c.prober.due_in() for c in self.containers if c.prober and c.running]
        return min([*waits, 5.0])

    def _prepare(self) -> list[Launch] | None:
        """Volumes and env for every container; retried while something is missing."""
        while True:
            self.wake.clear()
            if self.removed or self.shutting_down or self._deleting():
                return None
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                volumes = self.agent.materialize_volumes(self.pod, self.dir / "volumes")
                return [
                    self.agent.launch_for(self.pod, c.spec, volumes, self.pod_ip)
                    for c in self.containers
                ]
            except ConfigError as error:
                self._config_error(error)
            except ApiException as error:
                log.warning("preparing %s: %s", self.name, error.reason)
            self.wake.wait(PREPARE_RETRY)

    def _config_error(self, error: ConfigError) -> None:
        """As a kubelet: a volume that cannot be mounted leaves the container plainly
        ContainerCreating and says why in a FailedMount Event; an env problem is in the
        waiting state itself (CreateContainerConfigError)."""
        if error.reason == "ContainerCreating":
            waiting: Obj = {"reason": "ContainerCreating"}
            if error.message != self._mount_warned:
                self._mount_warned = error.message
                self.agent.kube.event(self.pod, "Warning", "FailedMount", error.message)
        else:
            waiting = {"reason": error.reason, "message": error.message}
        for container in self.containers:
            container.state = {"waiting": dict(waiting)}
        self._report()

    def _start(self, container: Container, launch: Launch) -> None:
        log_path = self.dir / f"{container.name}.log"
        try:
            argv = [resolve_argv0(launch.argv[0], launch.env.get("PATH")), *launch.argv[1:]]
            with open(log_path, "ab") as log_file:
                container.proc = subprocess.Popen(
                    argv,
                    env=launch.env,
                    cwd=launch.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as error:
            message = str(error) if isinstance(error, FileNotFoundError) else repr(error)
            container.state = {
                "terminated": {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": message,
                    "startedAt": None,
                    "finishedAt": now_rfc3339(),
                }
            }
            return
        pid = container.proc.pid
        created = psutil.Process(pid).create_time()
        # The fixture's last-resort cleanup reads these if the agent itself dies.
        (self.dir / f"{container.name}.pid").write_text(json.dumps([pid, created]))
        container.started_at = now_rfc3339()
        container.state = {"running": {"startedAt": container.started_at}}
        probe = container.spec.get("readinessProbe")
        if probe:
            container.prober = Prober(probe, container.spec, self.pod_ip, launch, time.monotonic())
        threading.Thread(target=self._await_exit, args=(container,), daemon=True).start()
        self.agent.kube.event(self.pod, "Normal", "Started", f"Started container {container.name}")

    def _await_exit(self, container: Container) -> None:
        assert container.proc is not None
        container.proc.wait()
        container.exited.set()
        self.wake.set()

    def _record_exit(self, container: Container) -> None:
        assert container.proc is not None
        with_signal = termination(container.proc.returncode)
        if (
            container.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError"
            and with_signal["exitCode"] != 0
            and not with_signal.get("message")
        ):
            with_signal["message"] = self._log_tail(container)
        container.state = {
            "terminated": {
                **with_signal,
                "startedAt": container.started_at,
                "finishedAt": now_rfc3339(),
                "containerID": f"emulated://{container.proc.pid}",
            }
        }
        # The container is gone: whatever it left in its process group goes with it.
        self._signal_group(container, signal.SIGKILL)

    def _log_tail(self, container: Container) -> str:
        """A kubelet's FallbackToLogsOnError message: the log's last 80 lines, at most 2 KiB."""
        path = self.dir / f"{container.name}.log"
        try:
            lines = path.read_bytes().splitlines()[-80:]
        except OSError:
            return ""
        return b"\n".join(lines)[-2048:].decode(errors="replace")

    def _signal_group(self, container: Container, sig: signal.Signals) -> None:
        if container.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(container.proc.pid, sig)

    def _kill(self, grace: float) -> None:
        """SIGTERM every running container, wait up to `grace`, then SIGKILL what is left."""
        running = [c for c in self.containers if c.running]
        for container in running:
            self._signal_group(container, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for container in running:
            container.exited.wait(max(0.0, deadline - time.monotonic()))
        for container in self.containers:
            self._signal_group(container, signal.SIGKILL)
            if container.proc is not None:
                container.proc.wait()
                container.exited.set()
                if "running" in container.state:
                    self._record_exit(container)

    def _finish(self) -> None:
        """Stop the containers; if the pod is being deleted, report and release it."""
        if self.removed:
            self._kill(grace=1.0)
            return
        if self.shutting_down:
            self._kill(grace=self.agent.stop_grace)
            return
        grace = float(self.pod["metadata"].get("deletionGracePeriodSeconds") or 0)
        if any(c.running for c in self.containers):
            self.agent.kube.event(
                self.pod, "Normal", "Killing", f"Stopping container {self.containers[0].name}"
            )
        self._kill(grace=grace)
        self._report()
        self.agent.kube.delete_pod(self.pod)

    # ---- status
    def _condition(self, kind: str, ok: bool, reason: str = "", message: str = "") -> Obj:
        status = "True" if ok else "False"
        previous = self._conditions.get(kind)
        since = (
            previous["lastTransitionTime"]
            if previous and previous["status"] == status
            else now_rfc3339()
        )
        condition = {
            "type": kind,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": since,
        }
        if not ok and reason:
            condition.update(reason=reason, message=message)
        self._conditions[kind] = condition
        return condition

    def status(self) -> Obj:
        states = [c.state for c in self.containers]
        terminated = [s["terminated"] for s in states if "terminated" in s]
        if self.containers and len(terminated) == len(self.containers):
            phase = "Succeeded" if all(t["exitCode"] == 0 for t in terminated) else "Failed"
        elif any("running" in s for s in states) or terminated:
            phase = "Running"
        else:
            phase = "Pending"
        unready = [c.name for c in self.containers if not c.ready]
        if phase in ("Succeeded", "Failed"):
            why = ("PodCompleted", "")
        else:
            why = ("ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]")
        started = any(c.proc is not None for c in self.containers)
        conditions = [
            self._condition("PodReadyToStartContainers", True),
            self._condition("Initialized", True),
            self._condition("Ready", not unready, *why),
            self._condition("ContainersReady", not unready, *why),
        ]
        statuses = [
            {
                "name": c.name,
                "state": c.state,
                "ready": c.ready,
                "restartCount": 0,
                "image": c.spec.get("image", ""),
                "imageID": "",
                "started": c.running,
                **({"containerID": f"emulated://{c.proc.pid}"} if c.proc else {}),
            }
            for c in self.containers
        ]
        status: Obj = {
            "phase": phase,
            "conditions": conditions,
            "hostIP": self.agent.host_ip,
            "hostIPs": [{"ip": self.agent.host_ip}],
            "startTime": self.start_time,
            "containerStatuses": statuses,
        }
        if started:
            status.update(podIP=self.pod_ip, podIPs=[{"ip": self.pod_ip}])
        return status

    def _report(self) -> None:
        status = self.status()
        if status == self.reported:
            return
        if self.agent.kube.patch_status(self.pod, status):
            self.reported = status
