"""`python -m tests.cluster.node`: our kubelet — runs the pods bound to a Node as local processes.

It talks to the cluster only through the Kubernetes API (a kubeconfig and the official client),
registers its Node with capacity through nodes/status, gives each pod its own 127.x.y.z
address, adds KUBECONFIG to every pod's env and stops everything it started when it stops.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import random
import signal
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")  # we only fork to exec

import psutil
from kubernetes import config as kube_config
from kubernetes import watch
from kubernetes.client import ApiClient, CoreV1Api

from tests.cluster import cli, podenv
from tests.cluster.nodeapi import NodeApi
from tests.cluster.pods import PodWorker
from tests.cluster.scheduler import allocatable, pod_requests

log = logging.getLogger("node")
Obj = dict[str, Any]
PR_SET_CHILD_SUBREAPER = 36


def _raw(response: Any) -> Any:
    return json.loads(response.data)


class NodeAgent:
    def __init__(
        self,
        name: str,
        cpu: str,
        memory: str,
        kubeconfig: str,
        workdir: Path,
        pods: int = 110,
        labels: dict[str, str] | None = None,
        stop_grace: float = 2.0,
    ) -> None:
        self.name = name
        self.capacity = {"cpu": cpu, "memory": memory, "pods": str(pods)}
        self.labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            **(labels or {}),
        }
        self.kubeconfig = str(Path(kubeconfig).resolve())
        self.pods_dir = workdir / "pods"
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.stop_grace = stop_grace
        self.host_ip = "127.0.0.1"
        self.api: ApiClient = kube_config.new_client_from_config(config_file=self.kubeconfig)
        self.core = CoreV1Api(self.api)
        self.kube = NodeApi(
            self.core, name, self.host_ip, self.capacity, self.labels, str(self.pods_dir)
        )
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        # The image's environment is ours, minus the contract's YR_* variables (spec-only).
        self.base_env = {k: v for k, v in os.environ.items() if not k.startswith("YR_")}
        self.base_env["KUBECONFIG"] = self.kubeconfig
        self.default_cwd = os.getcwd()
        self._ip_block = (random.randint(2, 254), random.randint(0, 255))
        self._ip_next = 2

    # ---- addresses
    def allocate_ip(self) -> str:
        """A fresh 127.a.b.c nobody on this machine uses (other clusters may run beside us)."""
        in_use = {c.laddr.ip for c in psutil.net_connections(kind="inet") if c.laddr}
        while True:
            if self._ip_next > 254:
                self._ip_block = (self._ip_block[0], (self._ip_block[1] + 1) % 256)
                self._ip_next = 2
            ip = f"127.{self._ip_block[0]}.{self._ip_block[1]}.{self._ip_next}"
            self._ip_next += 1
            if ip not in in_use:
                return ip

    # ---- API calls used by the pod workers
    def materialize_volumes(self, pod: Obj, volumes_dir: Path) -> dict[str, Path]:
        volumes = podenv.materialize_volumes(self.core, pod, volumes_dir)
        server, ca_file = self.api.configuration.host, self.api.configuration.ssl_ca_cert
        volumes[podenv.API_ACCESS_VOLUME] = podenv.mount_service_account(
            self.core, pod, volumes_dir, server, Path(ca_file).read_bytes()
        )
        return volumes

    def launch_for(self, pod: Obj, container: Obj, volumes: dict[str, Path], pod_ip: str):
        return podenv.build_launch(
            self.core,
            pod,
            container,
            volumes,
            pod_ip,
            self.host_ip,
            self.base_env,
            self.default_cwd,
        )

    # ---- pods
    def _observe(self, kind: str, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            worker = self.workers.get(uid)
            if kind == "DELETED":
                if worker:
                    worker.gone()
                return
            if worker:
                worker.update(pod)
            elif not self.stopping.is_set() and pod.get("status", {}).get("phase") not in (
                "Succeeded",
                "Failed",
            ):
                if self._reject_if_full(pod):
                    return
                worker = PodWorker(self, pod, self.allocate_ip())
                self.workers[uid] = worker
                worker.start()

    def _reject_if_full(self, pod: Obj) -> bool:
        """The kubelet's admission: a pod bound here (e.g. by nodeName, past the scheduler)
        that does not fit beside the pods it runs fails at once with OutOf<resource>."""
        if pod["metadata"].get("deletionTimestamp"):
            return False
        used: Counter[str] = Counter()
        for worker in self.workers.values():
            phase = (worker.reported or {}).get("phase")
            if not worker.removed and phase not in ("Succeeded", "Failed"):
                used += pod_requests(worker.pod)
        request, capacity = pod_requests(pod), allocatable({"status": {"capacity": self.capacity}})
        for resource in ("cpu", "memory", *sorted(r for r in request if "/" in r)):
            if request[resource] and used[resource] + request[resource] > capacity[resource]:
                # cpu in millicores, memory in bytes, as the kubelet words it
                message = (
                    f"Pod was rejected: Node didn't have enough resource: {resource}, "
                    f"requested: {request[resource]}, used: {used[resource]}, "
                    f"capacity: {capacity[resource]}"
                )
                reason = f"OutOf{resource}"
                if not self.kube.is_current(pod):
                    return True  # a stale event: that pod was deleted (maybe recreated) meanwhile
                self.kube.patch_status(
                    pod, {"phase": "Failed", "reason": reason, "message": message}
                )
                self.kube.event(pod, "Warning", reason, message)
                return True
        return False

    def worker_done(self, worker: PodWorker) -> None:
        with self.lock:
            self.workers.pop(worker.uid, None)

    def _sync(self) -> str:
        """List our pods, reconcile workers with them, return the list's resourceVersion."""
        listing = _raw(
            self.core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={self.name}",
                _preload_content=False,
                _request_timeout=10,
            )
        )
        present = {p["metadata"]["uid"] for p in listing["items"]}
        with self.lock:
            missing = [w for uid, w in self.workers.items() if uid not in present]
        for worker in missing:
            worker.gone()
        for pod in listing["items"]:
            self._observe("MODIFIED", pod)
        return listing["metadata"]["resourceVersion"]

    def watch_pods(self) -> None:
        while not self.stopping.is_set():
            try:
                version = self._sync()
                stream = watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces,
                    field_selector=f"spec.nodeName={self.name}",
                    resource_version=version,
                    timeout_seconds=30,
                    _request_timeout=60,
                )
                for event in stream:
                    if self.stopping.is_set():
                        return
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self._observe(event["type"], event["raw_object"])
            except Exception as error:  # API restarts, 410 Gone, ...: relist and carry on
                if self.stopping.is_set():
                    return
                log.info("pod watch interrupted (%s); relisting", error)
                self.stopping.wait(0.5)

    def run(self) -> None:
        self.kube.register()
        threading.Thread(target=self.watch_pods, name="pod-watch", daemon=True).start()
        self.stopping.wait()

    def stop(self) -> None:
        """Stop every pod process we started (SIGTERM, grace, SIGKILL), then anything left."""
        self.stopping.set()
        with self.lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.shutdown()
        for worker in workers:
            worker.join(self.stop_grace + 5)
        try:
            self.kube.set_ready(False)
        except Exception as error:  # the API server may already be gone
            log.info("could not mark the node NotReady: %s", error)
        _kill_descendants()


def _become_subreaper() -> None:
    """Orphaned grandchildren of pods re-parent to us, so stop() can still find them."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _stop_at_stdin_eof(agent: NodeAgent) -> None:
    # os.read, not sys.stdin: a daemon thread blocked in a buffered read aborts the interpreter
    # at exit ("could not acquire lock ... at interpreter shutdown").
    while os.read(sys.stdin.fileno(), 4096):
        pass
    agent.stopping.set()


def _kill_descendants() -> None:
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child.kill()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.node", description=__doc__)
    parser.add_argument("--name", default="node-1")
    parser.add_argument("--cpu", default="4", help="CPU capacity (quantity, e.g. 4 or 3500m)")
    parser.add_argument("--memory", default="8Gi", help="memory capacity (quantity)")
    parser.add_argument("--pods", type=int, default=110, help="maximum number of pods")
    parser.add_argument("--label", action="append", default=[], help="node label key=value")
    parser.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG"),
        help="cluster kubeconfig (default: $KUBECONFIG)",
    )
    parser.add_argument("--workdir", help="pod logs and volumes (default: a temp dir)")
    parser.add_argument(
        "--stop-grace",
        type=float,
        default=2.0,
        help="seconds pods get between SIGTERM and SIGKILL when the agent stops",
    )
    cli.add_process_arguments(parser)
    args = parser.parse_args(argv)
    cli.configure_logging(args)
    if not args.kubeconfig:
        parser.error("no kubeconfig: pass --kubeconfig or set KUBECONFIG")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix=f"yr-node-{args.name}-"))
    labels = dict(item.split("=", 1) for item in args.label)
    _become_subreaper()
    agent = NodeAgent(
        args.name,
        args.cpu,
        args.memory,
        args.kubeconfig,
        workdir,
        args.pods,
        labels,
        args.stop_grace,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stopping.set())
    if args.exit_with_stdin:  # the fixture holds our stdin: its death closes the pipe
        threading.Thread(target=_stop_at_stdin_eof, args=(agent,), daemon=True).start()
    print(f"node {args.name} running pods under {agent.pods_dir}", flush=True)
    try:
        agent.run()
    finally:
        agent.stop()
        logging.info("node %s stopped", args.name)


if __name__ == "__main__":
    main()
