"""Run an example program from `examples/` as a yr driver against an emulated cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.cluster.access import ClusterAccess
from tests.cluster.chart_rbac import NAMESPACED_RBAC, install_chart_rbac
from tests.cluster.operator_process import REPO, operator_env


def run_example_on_cluster(
    cluster: ClusterAccess,
    helm: Path,
    example: str,
    *args: str,
    namespace: str,
    timeout: float = 300,
    **extra_env: str,
) -> subprocess.CompletedProcess[str]:
    """`python examples/<example> args` (or an absolute path) with YR_BACKEND=kubernetes in
    `namespace`, given the chart's instance account and Role first; the operator must already
    watch it (e.g. the chart's accounts via install_chart_rbac and OperatorProcess -A, as in
    tests/test_resource_groups_cluster.py). The driver is killed at `timeout` (its Lease then
    expires and takes its instances). `extra_env` is added to the driver's environment."""
    install_chart_rbac(cluster, helm, namespace, kinds=NAMESPACED_RBAC)
    env = dict(
        operator_env(Path(cluster.kubeconfig)),
        YR_BACKEND="kubernetes",
        YR_NAMESPACE=namespace,
        **extra_env,
    )
    return subprocess.run(
        [sys.executable, str(REPO / "examples" / example), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
