"""Resource groups on Kubernetes: group created -> Admitted, and -> every member's first result.

    python bench/resource_groups_cluster.py [--rounds 5]                      # emulated cluster
    python bench/resource_groups_cluster.py --kubeconfig ~/.kube/config [--namespace default]

A group of 1 + 3 bundles (a supervisor's and three workers', 1 CPU and 128 MB each) is created
through the SDK, then four instances are placed in it, one per bundle, and each answers one call.
From just before `yr.create_resource_group` it measures:
  - "admitted": `ResourceGroup.wait()` returns (every placeholder pod bound by the scheduler);
  - "results":  the four first calls have returned (placeholders released, pods bound to their
                nodes, servers up).
The baseline row places the same four instances without a group. Each round removes what it
made. Without --kubeconfig it starts the EMULATED cluster (tests/cluster: pods are local
processes) and the real operator; with it, the chart's operator must already run. Prints a
table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _stats import median_min_max  # noqa: E402

import yr  # noqa: E402
from tests.cluster.chart_rbac import install_chart_rbac  # noqa: E402
from tests.cluster.fixtures import LocalCluster  # noqa: E402
from tests.cluster.operator_process import OperatorProcess  # noqa: E402
from tests.cluster.tools import SETUP  # noqa: E402
from tests.support import wait_for  # noqa: E402

BUNDLE = {"CPU": 1000, "Memory": 128}
MEMBERS = 4  # 1 supervisor + 3 workers


@yr.instance
class Member:
    """Defined in __main__, so it is pickled by value: any yr image can run it."""

    def ping(self) -> str:
        return "pong"


def one_round(index: int, *, grouped: bool) -> tuple[float, float]:
    """Seconds to Admitted (0 without a group) and to all members' first results."""
    name = f"bench-{index}-{time.monotonic_ns() % 10**6}"
    start = time.monotonic()
    admitted = 0.0
    if grouped:
        group = yr.create_resource_group([BUNDLE] * MEMBERS, name=name, strategy="PACK")
        group.wait(120)
        admitted = time.monotonic() - start
    members = []
    for bundle in range(MEMBERS):
        placement = yr.ResourceGroupOptions(name if grouped else "", bundle_index=bundle)
        options = yr.InvokeOptions(cpu=1000, memory=128, resource_group_options=placement)
        members.append(Member.options(options).invoke())
    assert yr.get([m.ping.invoke() for m in members], timeout=180) == ["pong"] * MEMBERS
    results = time.monotonic() - start
    if grouped:
        yr.remove_resource_group(name)
    else:
        for member in members:
            member.terminate()
    return admitted, results


def wait_idle() -> None:
    """Let the previous round's pods go before the next takes their CPUs."""
    wait_for(
        lambda: all(n["allocatable"]["CPU"] >= n["capacity"]["CPU"] for n in yr.resources()),
        timeout=120,
        what="the previous round's pods gone",
    )


def summary(values: list[float]) -> str:
    return "".join(f"{value:>8.2f}" for value in median_min_max(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kubeconfig", default="", help="a real cluster (default: emulated)")
    parser.add_argument("--namespace", default="default")
    args = parser.parse_args()

    cluster: Any = None
    operator = None
    kubeconfig = args.kubeconfig
    if not kubeconfig:
        helm = shutil.which("helm")
        if helm is None:
            parser.error(f"helm not found on PATH; install it with: {SETUP}")
        crds = [REPO / "crds/yrinstances.yaml", REPO / "crds/yrresourcegroups.yaml"]
        cluster = LocalCluster.start(cpu="4", memory="8Gi", crds=crds)
        install_chart_rbac(cluster, Path(helm), args.namespace)
        kubeconfig = str(cluster.kubeconfig)
        operator = OperatorProcess(
            cluster.kubeconfig_for(args.namespace, "yr-operator"),
            cluster.workdir / "operator.log",
        ).start()
    yr.init(yr.Config(backend="kubernetes", namespace=args.namespace, kubeconfig=kubeconfig))
    rows: dict[str, list[tuple[float, float]]] = {"group 1+3": [], "no group": []}
    try:
        one_round(-1, grouped=False)  # warm: operator, node, image cache
        for index in range(args.rounds):
            for label, grouped in (("group 1+3", True), ("no group", False)):
                wait_idle()
                rows[label].append(one_round(index, grouped=grouped))
    finally:
        yr.finalize()
        if operator is not None:
            operator.stop()
        if cluster is not None:
            cluster.stop()

    where = "the EMULATED cluster (one 4-CPU node)" if cluster is not None else kubeconfig
    print(f"resource group of {MEMBERS} bundles on {where}; {args.rounds} rounds; seconds")
    print(f"{'scenario':<12}{'admitted p50/min/max':>24}{'results p50/min/max':>24}")
    for label, values in rows.items():
        admitted = summary([a for a, _ in values]) if label != "no group" else f"{'-':>24}"
        print(f"{label:<12}{admitted:>24}{summary([r for _, r in values]):>24}")


if __name__ == "__main__":
    main()
