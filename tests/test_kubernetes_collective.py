"""yr.collective on the local cluster emulation through the operator: pods talk over gRPC."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.test_data_parallel_example import EXAMPLE, REPORT
from tests.test_kubernetes_backend import REPO, cluster  # noqa: F401


def run_on_cluster(cluster, *args: str) -> dict[str, dict]:  # noqa: F811
    env = dict(cluster.env, YR_BACKEND="kubernetes", YR_NAMESPACE="default")
    finished = subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    reports = {m["lr"]: m.groupdict() for m in REPORT.finditer(finished.stdout)}
    assert set(reports) == {"0.5", "0.05"}, finished.stdout
    return reports


def test_data_parallel_example_on_the_cluster_equals_single_process(cluster):  # noqa: F811
    for report in run_on_cluster(cluster).values():
        assert float(report["difference"]) < 1e-6
        assert report["replaced"] == "0"


def test_data_parallel_example_on_the_cluster_heals_a_killed_worker_pod(cluster):  # noqa: F811
    for report in run_on_cluster(cluster, "--kill-a-worker").values():
        assert report["replaced"] == "1"
        assert float(report["difference"]) < 1e-6


def test_large_allreduce_between_pods_matches_numpy(cluster):  # noqa: F811
    env = dict(cluster.env, YR_BACKEND="kubernetes", YR_NAMESPACE="default")
    program = (
        "import yr\n"
        "from yr import collective\n"
        "from tests.collective_members import Member\n"
        "yr.init()\n"
        "members = [Member.invoke() for _ in range(3)]\n"
        "collective.create_group(members, name='pods', timeout=60)\n"
        "checks = [m.check_allreduce.invoke((300_000,), 'float64', 'sum', 'pods')\n"
        "          for m in members]\n"
        "checks += [m.check_allgather.invoke((30_000,), 'int64', 'pods') for m in members]\n"
        "checks += [m.check_broadcast.invoke((100_000,), 'float32', 2, 'pods') for m in members]\n"
        "print('RESULTS', yr.get(checks, timeout=120))\n"
        "yr.finalize()\n"
    )
    finished = subprocess.run(
        [sys.executable, "-c", program],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert re.search(r"RESULTS \[('ok', ){8}'ok'\]", finished.stdout), finished.stdout


def test_parameter_server_example_runs_on_the_cluster(cluster):  # noqa: F811
    env = dict(cluster.env, YR_BACKEND="kubernetes", YR_NAMESPACE="default")
    finished = subprocess.run(
        [sys.executable, str(REPO / "examples" / "parameter_server.py"), "--steps", "20"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert len(re.findall(r"40 asynchronous updates, accuracy 0\.9", finished.stdout)) == 2
