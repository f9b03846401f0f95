"""Start latency of an instance: YRInstance created -> Pod -> Ready, and -> first call answered.

    python bench/operator_latency.py [--single 10] [--burst 20]                # emulated cluster
    python bench/operator_latency.py --kubeconfig ~/.kube/config [--namespace default]

Without --kubeconfig it starts the emulated cluster (tests/cluster: pods are local processes, no
container runtime, no image) and the real operator (`python -m yr_operator -A`); with it, it uses
that cluster, whose operator (the chart's) must already run. Instances are created through the
SDK (`yr.init(backend="kubernetes")`), and from just before each `.invoke()` it measures:
  - "pod":   a watch on pods sees the instance's Pod (the operator's reaction time);
  - "ready": a watch on YRInstances sees status.phase Ready (the kubelet's readiness probe);
  - "call":  the first method call returns (the SDK calls a Running pod once its server is
             SERVING, without waiting for Ready; see docs/kubernetes-contract.md).
"single" creates instances one at a time (each waits for its first call and Ready); "burst"
creates them back to back and waits for all. It also counts `Unhealthy` (failed probe) Events.
The first line says which cluster it ran on. Prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
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

from _stats import percentile  # noqa: E402
from kubernetes import client as k8s  # noqa: E402
from kubernetes import config as k8s_config  # noqa: E402
from kubernetes import watch as k8s_watch  # noqa: E402

import yr  # noqa: E402
from tests.cluster.chart_rbac import install_chart_rbac  # noqa: E402
from tests.cluster.fixtures import LocalCluster  # noqa: E402
from tests.cluster.operator_process import OperatorProcess  # noqa: E402
from tests.cluster.tools import SETUP  # noqa: E402
from tests.support import wait_for  # noqa: E402

GROUP, VERSION, PLURAL = "yr.dev", "v1alpha1", "yrinstances"


@yr.instance
class Echo:
    """Defined in __main__, so it is pickled by value: any yr image can run it."""

    def ping(self) -> str:
        return "pong"


class Recorder:
    """Two watches (pods, YRInstances) stamping the first sighting of each milestone."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.core, self.custom, self.namespace = (
            k8s.CoreV1Api(api),
            k8s.CustomObjectsApi(api),
            namespace,
        )
        self.pod_seen: dict[str, float] = {}
        self.ready_seen: dict[str, float] = {}
        self._watches: list[k8s_watch.Watch] = []
        for target in (self._pods, self._instances):
            threading.Thread(target=self._quietly, args=(target,), daemon=True).start()

    @staticmethod
    def _quietly(target: Any) -> None:
        with contextlib.suppress(Exception):  # stopping the watch ends the stream
            target()

    def _stream(self, list_fn: Any, *args: Any, **kw: Any) -> Any:
        w = k8s_watch.Watch()
        self._watches.append(w)
        return w.stream(list_fn, *args, timeout_seconds=3600, **kw)

    def _pods(self) -> None:
        selector = "app.kubernetes.io/name=yr-instance"
        stream = self._stream(
            self.core.list_namespaced_pod, self.namespace, label_selector=selector
        )
        for event in stream:
            owners = event["object"].metadata.owner_references or []
            for owner in owners:
                if owner.kind == "YRInstance":
                    self.pod_seen.setdefault(owner.name, time.monotonic())

    def _instances(self) -> None:
        list_fn = self.custom.list_namespaced_custom_object
        for event in self._stream(list_fn, GROUP, VERSION, self.namespace, PLURAL):
            obj = event["object"]
            if (obj.get("status") or {}).get("phase") == "Ready":
                self.ready_seen.setdefault(obj["metadata"]["name"], time.monotonic())

    def probe_warnings(self, since: float) -> int:
        events = self.core.list_namespaced_event(self.namespace).items
        return sum(
            (e.count or 1)
            for e in events
            if e.reason == "Unhealthy"
            and e.last_timestamp is not None
            and e.last_timestamp.timestamp() >= since
        )

    def stop(self) -> None:
        for w in self._watches:
            w.stop()


def run(rec: Recorder, n: int, *, one_by_one: bool) -> dict[str, Any]:
    options = yr.InvokeOptions(cpu=10, memory=64)
    start: dict[str, float] = {}
    answered: dict[str, float] = {}
    handles = []
    wall_start, since = time.monotonic(), time.time()

    def first_call(handle: Any) -> None:
        assert yr.get(handle.ping.invoke(), timeout=120) == "pong"
        answered[handle.instance_id] = time.monotonic()

    waiters = []
    for _ in range(n):
        t0 = time.monotonic()
        handle = Echo.options(options).invoke()
        start[handle.instance_id] = t0
        handles.append(handle)
        waiter = threading.Thread(target=first_call, args=(handle,), daemon=True)
        waiter.start()
        waiters.append(waiter)
        if one_by_one:
            waiter.join(180)
            wait_for(lambda h=handle: h.instance_id in rec.ready_seen, 120, "Ready")
    for waiter in waiters:
        waiter.join(180)
    names = list(start)
    wait_for(lambda: all(name in rec.ready_seen for name in names), 180, "all Ready")
    wall = max(answered[name] for name in names) - wall_start
    for handle in handles:
        handle.terminate()
    return {
        "n": n,
        "pod": [(rec.pod_seen[name] - start[name]) * 1000 for name in names],
        "ready": [(rec.ready_seen[name] - start[name]) * 1000 for name in names],
        "call": [(answered[name] - start[name]) * 1000 for name in names],
        "wall": wall,
        "warnings": rec.probe_warnings(since),
    }


def describe(api: k8s.ApiClient, emulated: bool) -> str:
    if emulated:
        return (
            "the EMULATED cluster (tests/cluster: pods are local processes, no container "
            "runtime, probes run eagerly) - not a figure for a real node"
        )
    version = k8s.VersionApi(api).get_code().git_version
    nodes = k8s.CoreV1Api(api).list_node().items
    kubelets = sorted(
        {
            f"{n.status.node_info.kubelet_version}/{n.status.node_info.container_runtime_version}"
            for n in nodes
        }
    )
    return (
        f"a real cluster at {api.configuration.host} (Kubernetes {version}, {len(nodes)} "
        f"node(s), kubelet/runtime {', '.join(kubelets)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=10, help="instances created one by one")
    parser.add_argument("--burst", type=int, default=20, help="instances created at once")
    parser.add_argument("--kubeconfig", default="", help="a real cluster (default: emulated)")
    parser.add_argument("--namespace", default="default")
    args = parser.parse_args()

    cluster = operator = None
    kubeconfig = args.kubeconfig
    if not kubeconfig:
        helm = shutil.which("helm")
        if helm is None:
            parser.error(f"helm not found on PATH; install it with: {SETUP}")
        cluster = LocalCluster.start(
            cpu="64", memory="256Gi", crds=[REPO / "crds/yrinstances.yaml"]
        )
        # The operator and its pods run as the chart's ServiceAccounts, as in a real install.
        install_chart_rbac(cluster, Path(helm), args.namespace)
        kubeconfig = str(cluster.kubeconfig)
        operator = OperatorProcess(
            cluster.kubeconfig_for(args.namespace, "yr-operator"),
            cluster.workdir / "operator.log",
        ).start()
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    api = k8s.ApiClient(configuration)
    where = describe(api, emulated=cluster is not None)
    rec = Recorder(api, args.namespace)
    yr.init(yr.Config(backend="kubernetes", namespace=args.namespace, kubeconfig=kubeconfig))
    rows = []
    try:
        run(rec, 1, one_by_one=True)  # warm: operator, node, image cache
        rows.append(("1 at a time", run(rec, args.single, one_by_one=True)))
        rows.append((f"{args.burst} at once", run(rec, args.burst, one_by_one=False)))
    finally:
        yr.finalize()
        rec.stop()
        api.close()
        if operator is not None:
            operator.stop()
        if cluster is not None:
            cluster.stop()

    print(f"start latency on {where}; driver on {os.cpu_count()} cores; milliseconds")
    head = f"{'scenario':<14}{'n':>4}{'pod p50':>9}{'ready p50':>11}{'ready p99':>11}"
    print(head + f"{'call p50':>10}{'call p99':>10}{'all answered s':>16}{'probe warnings':>16}")
    for label, r in rows:
        print(
            f"{label:<14}{r['n']:>4}{statistics.median(r['pod']):>9.0f}"
            f"{statistics.median(r['ready']):>11.0f}{percentile(r['ready'], 0.99):>11.0f}"
            f"{statistics.median(r['call']):>10.0f}{percentile(r['call'], 0.99):>10.0f}"
            f"{r['wall']:>16.2f}{r['warnings']:>16}"
        )


if __name__ == "__main__":
    main()
