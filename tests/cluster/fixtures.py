"""pytest fixtures that start a local cluster (API server + GC + scheduler, and a node) per test.

    def test_something(local_cluster):
        cluster = local_cluster(cpu="4", memory="8Gi", crds=[REPO_CRD])
        core = kubernetes.client.CoreV1Api(cluster.api_client())

Each piece runs in its own subprocess and is stopped by PID at teardown, pods included.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psutil
import pytest
from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from tests.cluster.access import ClusterAccess
from tests.support import wait_for

REPO = Path(__file__).resolve().parents[2]
TEST_CRD = Path(__file__).resolve().parent / "testdata" / "widgets-crd.yaml"
START_TIMEOUT = 20.0
# Long enough for pods that ignore SIGTERM to use their grace period and be killed.
NAMESPACE_DELETE_TIMEOUT = 60.0


class LocalCluster(ClusterAccess):
    """A running emulated cluster: `.kubeconfig`, `.base_url`, `.api_client()`, `.stop()`."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir / "kubeconfig", workdir)
        self.base_url = ""
        self.apiserver: subprocess.Popen[bytes] | None = None
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}

    @classmethod
    def start(
        cls,
        workdir: Path | None = None,
        cpu: str = "4",
        memory: str = "8Gi",
        crds: Sequence[str | Path] = (),
        node_name: str | None = "node-1",
        apiserver_args: Sequence[str] = (),
    ) -> LocalCluster:
        """API server (with GC and scheduler) and, unless node_name is None, one node.

        `apiserver_args` are extra `python -m tests.cluster.apiserver` options, e.g.
        `("--watch-history", "10")`."""
        cluster = cls(Path(workdir or tempfile.mkdtemp(prefix="yr-cluster-")))
        try:
            cluster._start_apiserver([str(c) for c in crds], list(apiserver_args))
            if node_name is not None:
                cluster.add_node(node_name, cpu=cpu, memory=memory)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        with open(self.workdir / log_name, "ab") as log:
            # stdin stays a pipe we hold: if this process dies, the child sees EOF and stops.
            return subprocess.Popen(
                [sys.executable, *args, "--exit-with-stdin"],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _log_tail(self, log_name: str) -> str:
        path = self.workdir / log_name
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def _start_apiserver(self, crds: list[str], extra: list[str]) -> None:
        args = ["-m", "tests.cluster.apiserver", "--kubeconfig", str(self.kubeconfig), *extra]
        for crd in crds:
            args += ["--crd", crd]
        self.apiserver = proc = self._spawn(args, "apiserver.log")

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"API server exited:\n{self._log_tail('apiserver.log')}")
            return self.kubeconfig.exists()

        wait_for(up, timeout=START_TIMEOUT, what="the API server to write its kubeconfig")
        with self.api_client() as client:
            self.base_url = client.configuration.host

    def add_node(
        self, name: str, cpu: str = "4", memory: str = "8Gi", stop_grace: float = 2.0
    ) -> subprocess.Popen[bytes]:
        """Start a node agent and wait until its Node is Ready."""
        log_name = f"node-{name}.log"
        proc = self._spawn(
            [
                "-m",
                "tests.cluster.node",
                "--name",
                name,
                "--cpu",
                cpu,
                "--memory",
                memory,
                "--kubeconfig",
                str(self.kubeconfig),
                "--workdir",
                str(self.workdir / f"node-{name}"),
                "--stop-grace",
                str(stop_grace),
            ],
            log_name,
        )
        self.nodes[name] = proc
        with self.api_client() as client:
            core = CoreV1Api(client)

            def ready() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(f"node {name} exited:\n{self._log_tail(log_name)}")
                try:
                    node = core.read_node(name)
                except ApiException:
                    return False
                return any(
                    c.type == "Ready" and c.status == "True"
                    for c in ((node.status and node.status.conditions) or [])
                )

            wait_for(ready, timeout=START_TIMEOUT, what=f"node {name} to be Ready")
        return proc

    def pod_log(self, namespace: str, name: str, container: str | None = None) -> str:
        with self.api_client() as client:
            return CoreV1Api(client).read_namespaced_pod_log(name, namespace, container=container)

    def stop_node(self, name: str, timeout: float = 15.0) -> None:
        proc = self.nodes.pop(name, None)
        if proc is not None:
            _terminate(proc, timeout)
        self._kill_leftover_pods()

    def stop(self) -> None:
        """Stop nodes (their pods first), then the API server; kill anything that resists."""
        for name in list(self.nodes):
            self.stop_node(name)
        if self.apiserver is not None:
            _terminate(self.apiserver, 5.0)
            self.apiserver = None

    def _kill_leftover_pods(self) -> None:
        """Last resort if a node agent died hard: pod process groups it recorded."""
        for pid_file in self.workdir.glob("node-*/pods/*/*.pid"):
            pid, created = json.loads(pid_file.read_text())
            try:
                if psutil.Process(pid).create_time() == created:
                    os.killpg(pid, signal.SIGKILL)
            except (psutil.Error, ProcessLookupError, PermissionError):
                pass


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdin:
        proc.stdin.close()


ClusterFactory = Callable[..., LocalCluster]


def _factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterFactory]:
    started: list[LocalCluster] = []

    def start(
        cpu: str = "4",
        memory: str = "8Gi",
        crds: Sequence[str | Path] = (),
        node_name: str | None = "node-1",
        apiserver_args: Sequence[str] = (),
    ) -> LocalCluster:
        cluster = LocalCluster.start(
            tmp_path_factory.mktemp("cluster"),
            cpu=cpu,
            memory=memory,
            crds=crds,
            node_name=node_name,
            apiserver_args=apiserver_args,
        )
        started.append(cluster)
        return cluster

    yield start
    for cluster in reversed(started):
        cluster.stop()


@pytest.fixture
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterFactory]:
    """Factory: `local_cluster(cpu="4", memory="8Gi", crds=[...], node_name="node-1")`."""
    yield from _factory(tmp_path_factory)


@pytest.fixture(scope="module")
def module_local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterFactory]:
    """The same factory, but the clusters live for the whole test module (faster suites)."""
    yield from _factory(tmp_path_factory)


@pytest.fixture(scope="session")
def session_local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterFactory]:
    """The same factory, but the clusters live for the whole run (shared by test modules)."""
    yield from _factory(tmp_path_factory)


@contextlib.contextmanager
def fresh_namespace(cluster: ClusterAccess) -> Iterator[str]:
    """A new namespace on `cluster`, deleted (and gone) at the end: whatever was made in it
    is collected by the namespace controller, so users of it share nothing but the cluster."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    with cluster.api_client() as client:
        core = CoreV1Api(client)
        core.create_namespace({"metadata": {"name": name, "labels": {"yr.dev/test": "true"}}})
        # Pods are refused until the ServiceAccount controller has made "default" (real
        # clusters make it shortly after the namespace).
        wait_for(
            lambda: (
                core.list_namespaced_service_account(
                    name, field_selector="metadata.name=default"
                ).items
            ),
            timeout=START_TIMEOUT,
            what=f"the default ServiceAccount of {name}",
        )
        yield name
        try:
            core.delete_namespace(name)
        except ApiException as error:
            if error.status != 404:  # the user may have deleted it itself
                raise

        def gone() -> bool:
            try:
                core.read_namespace(name)
            except ApiException as error:
                return error.status == 404
            return False

        wait_for(gone, timeout=NAMESPACE_DELETE_TIMEOUT, what=f"namespace {name} to be deleted")


@pytest.fixture
def namespace(cluster: ClusterAccess) -> Iterator[str]:
    """A fresh namespace on the module's `cluster` for one test; deleted (and gone) after it.

    Tests on a module-scoped cluster share nothing but the cluster: names can repeat across
    tests, and the namespace controller collects whatever a test leaves behind."""
    with fresh_namespace(cluster) as name:
        yield name
