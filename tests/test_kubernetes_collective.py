"""yr.collective on the local cluster emulation through the operator: pods talk over gRPC."""

from __future__ import annotations

import re
import subprocess
import sys

import grpc
import pytest

import yr
from tests.cluster.fixtures import REPO
from tests.k8s_instances import Worker
from tests.test_data_parallel_example import EXAMPLE, REPORT
from yr.collective.link import SERVICE
from yr.collective.mesh import frame
from yr.protocol import TOKEN_METADATA_KEY

DRIVER_TIMEOUT_S = 240  # below pytest-timeout's 300 s, so a stuck driver's output is reported


@pytest.fixture
def driver_env(cluster, instance_namespace) -> dict[str, str]:
    """What a driver program needs to run on the cluster, in this test's namespace."""
    return dict(cluster.env, YR_BACKEND="kubernetes", YR_NAMESPACE=instance_namespace)


def run_driver(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a driver program, failing with what it printed if it outlives the deadline."""
    try:
        return subprocess.run(command, timeout=DRIVER_TIMEOUT_S, **kwargs)
    except subprocess.TimeoutExpired as expired:  # the child is killed; say where it was
        pytest.fail(
            f"{command[1:]} did not finish within {DRIVER_TIMEOUT_S} s; "
            f"stdout: {expired.stdout!r:.2000}; stderr: {expired.stderr!r:.4000}"
        )


def run_on_cluster(env: dict[str, str], *args: str) -> dict[str, dict]:
    finished = run_driver(
        [sys.executable, str(EXAMPLE), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    reports = {m["lr"]: m.groupdict() for m in REPORT.finditer(finished.stdout)}
    assert set(reports) == {"0.5", "0.05"}, finished.stdout
    return reports


def test_data_parallel_example_on_the_cluster_equals_single_process(driver_env):
    for report in run_on_cluster(driver_env).values():
        assert float(report["difference"]) < 1e-6
        assert report["replaced"] == "0"


def test_data_parallel_example_on_the_cluster_heals_a_killed_worker_pod(driver_env):
    for report in run_on_cluster(driver_env, "--kill-a-worker").values():
        assert report["replaced"] == "1"
        assert float(report["difference"]) < 1e-6


def test_parameter_server_example_on_the_cluster_applies_every_push(driver_env):
    # Its workers call a parameter server they were handed, not one they created.
    finished = run_driver(
        [sys.executable, str(REPO / "examples" / "parameter_server.py"), "--steps", "20"],
        env=driver_env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    reports = re.findall(r"(\d+) asynchronous updates, accuracy ([\d.]+)", finished.stdout)
    assert [int(updates) for updates, _ in reports] == [2 * 20, 2 * 20], finished.stdout


def test_large_allreduce_between_pods_matches_numpy(driver_env):
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
    finished = run_driver(
        [sys.executable, "-c", program],
        env=driver_env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert re.search(r"RESULTS \[('ok', ){8}'ok'\]", finished.stdout), finished.stdout


def test_a_pods_collective_link_refuses_a_stream_without_the_session_token(session):
    worker = Worker.invoke()
    yr.get(worker.pid.invoke(), timeout=60)
    address = yr.session.current().runtime.endpoint(worker.instance_id).result(10).address
    hello = frame({"group": "0123456789abcdef", "from": 1, "to": 0})
    runtime = yr.session.current().runtime  # TLS pinned to the session, as a peer dials
    with runtime.open_channel(address, []) as channel, pytest.raises(grpc.RpcError) as caught:
        send = channel.stream_unary(f"/{SERVICE}/Send")
        send(iter([hello]), metadata=((TOKEN_METADATA_KEY, "a guess"),), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
