"""Operator latency on the local cluster: YRInstance created -> Pod created -> Ready.

    python bench/operator_latency.py [--single 20] [--burst 100]

Starts the emulated cluster (tests/cluster) and the real operator (`python -m yr_operator -A`),
then measures, from just before the client's create call:
  - "pod": until a watch on pods sees the instance's Pod (the operator's reaction time);
  - "ready": until a watch on YRInstances sees status.phase Ready (pod start, the real
    `python -m yr.server`, its gRPC health, the node's probe, the operator's status write).
"single" creates instances one at a time (each waits for the previous to be Ready);
"burst" creates them back to back and waits for all. The operator's CPU time and peak RSS
(psutil) are taken over each scenario. Prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import os
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cloudpickle  # noqa: E402
import psutil  # noqa: E402
from kubernetes import client as k8s  # noqa: E402
from kubernetes import watch as k8s_watch  # noqa: E402

from tests.cluster.chart_rbac import install_chart_rbac  # noqa: E402
from tests.cluster.fixtures import LocalCluster  # noqa: E402
from tests.cluster.operator_process import OperatorProcess  # noqa: E402
from tests.cluster.tools import SETUP  # noqa: E402
from tests.support import wait_for  # noqa: E402

GROUP, VERSION, PLURAL, NS = "yr.dev", "v1alpha1", "yrinstances", "default"


class Recorder:
    """Two watches (pods, YRInstances) stamping the first sighting of each milestone."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.pod_seen: dict[str, float] = {}
        self.ready_seen: dict[str, float] = {}
        self._watches: list[k8s_watch.Watch] = []
        for target in (self._pods, self._instances):
            threading.Thread(target=self._quietly, args=(target,), daemon=True).start()

    @staticmethod
    def _quietly(target: Any) -> None:
        with contextlib.suppress(Exception):  # the cluster stopping ends an open watch
            target()

    def _stream(self, list_fn: Any, *args: Any, **kw: Any) -> Any:
        w = k8s_watch.Watch()
        self._watches.append(w)
        return w.stream(list_fn, *args, timeout_seconds=3600, **kw)

    def _pods(self) -> None:
        core = k8s.CoreV1Api(self.cluster.api_client())
        selector = "app.kubernetes.io/name=yr-instance"
        for event in self._stream(core.list_namespaced_pod, NS, label_selector=selector):
            name = (event["object"].metadata.labels or {}).get("yr.dev/instance")
            if name:
                self.pod_seen.setdefault(name, time.monotonic())

    def _instances(self) -> None:
        custom = k8s.CustomObjectsApi(self.cluster.api_client())
        for event in self._stream(custom.list_namespaced_custom_object, GROUP, VERSION, NS, PLURAL):
            obj = event["object"]
            if (obj.get("status") or {}).get("phase") == "Ready":
                self.ready_seen.setdefault(obj["metadata"]["name"], time.monotonic())

    def stop(self) -> None:
        for w in self._watches:
            w.stop()


class Sampler:
    """The operator's CPU seconds over a window, and its peak RSS (sampled every 50 ms)."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak_rss = 0
        self._cpu0 = self._cpu()
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _cpu(self) -> float:
        t = self.proc.cpu_times()
        return t.user + t.system

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)

    def finish(self) -> tuple[float, float]:
        self._stop.set()
        self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)
        return self._cpu() - self._cpu0, self.peak_rss / 2**20


def yrinstance(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "YRInstance",
        "metadata": {"name": name},
        "spec": {
            "className": "collections.Counter",
            "cpu": 10,
            "memory": 16,
            "payloadSecret": "counter-payload",
            "session": "bench",
        },
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(
    custom: k8s.CustomObjectsApi,
    rec: Recorder,
    op_pid: int,
    names: list[str],
    *,
    one_by_one: bool,
    apiserver_pid: int,
) -> dict[str, Any]:
    sampler = Sampler(op_pid)
    api_sampler = Sampler(apiserver_pid)
    start: dict[str, float] = {}
    t_begin = time.monotonic()
    for name in names:
        start[name] = time.monotonic()
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, yrinstance(name))
        if one_by_one:
            wait_for(lambda n=name: n in rec.ready_seen, timeout=60, what=f"{name} Ready")
    wait_for(lambda: all(n in rec.ready_seen for n in names), timeout=180, what="all Ready")
    wall = max(rec.ready_seen[n] for n in names) - t_begin
    cpu, rss = sampler.finish()
    api_cpu, _ = api_sampler.finish()
    to_pod = [(rec.pod_seen[n] - start[n]) * 1000 for n in names]
    to_ready = [(rec.ready_seen[n] - start[n]) * 1000 for n in names]
    return {
        "n": len(names),
        "pod": to_pod,
        "ready": to_ready,
        "wall": wall,
        "cpu": cpu,
        "rss": rss,
        "api_cpu": api_cpu,
    }


def cleanup(custom: k8s.CustomObjectsApi, core: k8s.CoreV1Api, names: list[str]) -> None:
    for name in names:
        custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
    selector = "app.kubernetes.io/name=yr-instance"
    wait_for(
        lambda: not core.list_namespaced_pod(NS, label_selector=selector).items,
        timeout=60,
        what="gc",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=20, help="instances created one by one")
    parser.add_argument("--burst", type=int, default=100, help="instances created at once")
    args = parser.parse_args()

    helm = shutil.which("helm")
    if helm is None:
        parser.error(f"helm not found on PATH; install it with: {SETUP}")
    cluster = LocalCluster.start(cpu="64", memory="256Gi", crds=[REPO / "crds/yrinstances.yaml"])
    # The operator and its pods run as the chart's ServiceAccounts, as in a real install.
    install_chart_rbac(cluster, Path(helm), NS)
    operator = OperatorProcess(
        cluster.kubeconfig_for(NS, "yr-operator"), cluster.workdir / "operator.log"
    ).start()
    assert operator.proc is not None
    rec = Recorder(cluster)
    assert cluster.apiserver is not None
    apiserver = cluster.apiserver.pid
    api = cluster.api_client()
    core, custom = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
    try:
        payload = base64.b64encode(cloudpickle.dumps((collections.Counter, (), {}))).decode()
        core.create_namespaced_secret(
            NS, {"metadata": {"name": "counter-payload"}, "data": {"payload": payload}}
        )
        core.create_namespaced_secret(
            NS, {"metadata": {"name": "yr-session-bench"}, "stringData": {"token": "t"}}
        )
        warm = ["warmup"]
        run(
            custom, rec, operator.proc.pid, warm, one_by_one=True, apiserver_pid=apiserver
        )  # operator and node warm
        cleanup(custom, core, warm)
        rows = []
        single = [f"single-{i}" for i in range(args.single)]
        rows.append(
            (
                "1 at a time",
                run(
                    custom, rec, operator.proc.pid, single, one_by_one=True, apiserver_pid=apiserver
                ),
            )
        )
        cleanup(custom, core, single)
        burst = [f"burst-{i}" for i in range(args.burst)]
        rows.append(
            (
                f"{args.burst} at once",
                run(
                    custom, rec, operator.proc.pid, burst, one_by_one=False, apiserver_pid=apiserver
                ),
            )
        )
        cleanup(custom, core, burst)
    finally:
        rec.stop()
        operator.stop()
        api.close()
        cluster.stop()

    print(f"operator latency on the local cluster ({os.cpu_count()} cores), milliseconds")
    head = f"{'scenario':<14}{'n':>5}{'pod p50':>9}{'pod p99':>9}{'ready p50':>11}{'ready p99':>11}"
    print(head + f"{'all ready s':>13}{'op cpu s':>10}{'op rss MB':>11}{'apiserver cpu s':>17}")
    for label, r in rows:
        print(
            f"{label:<14}{r['n']:>5}{statistics.median(r['pod']):>9.1f}{pct(r['pod'], 0.99):>9.1f}"
            f"{statistics.median(r['ready']):>11.0f}{pct(r['ready'], 0.99):>11.0f}"
            f"{r['wall']:>13.2f}{r['cpu']:>10.2f}{r['rss']:>11.1f}{r['api_cpu']:>17.2f}"
        )


if __name__ == "__main__":
    main()
