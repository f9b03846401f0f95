"""kopf operators run against the local cluster: cluster-wide (-A) and on a namespace pattern."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes.client import CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from tests.cluster.fixtures import TEST_CRD, LocalCluster
from tests.cluster.testkit import TESTDATA
from tests.support import wait_for

OPERATOR = TESTDATA / "kopf_operator.py"
KOPF_TIMEOUT = 30.0


def widget(name: str, size: int = 3) -> dict:
    return {"apiVersion": "test.yr.dev/v1", "kind": "Widget", "metadata": {"name": name},
            "spec": {"size": size, "color": "blue"}}  # fmt: skip


class Kopf:
    """A kopf subprocess (`python -m kopf run --standalone ...`) and its log for failures."""

    def __init__(self, cluster: LocalCluster, log: Path, *args: str) -> None:
        self.log = log
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kopf", "run", "--standalone", *args, str(OPERATOR)],
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip

    def wait(self, predicate: Callable[[], object], what: str) -> object:
        try:
            return wait_for(predicate, timeout=KOPF_TIMEOUT, what=what)
        except AssertionError as error:
            raise AssertionError(
                f"{error}\n--- kopf log ---\n{self.log.read_text()[-4000:]}"
            ) from None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def cluster(module_local_cluster) -> LocalCluster:
    return module_local_cluster(crds=[TEST_CRD], node_name=None)


@pytest.fixture
def apis(cluster: LocalCluster) -> Iterator[tuple[CoreV1Api, CustomObjectsApi]]:
    with cluster.api_client() as client:
        yield CoreV1Api(client), CustomObjectsApi(client)


@pytest.fixture
def run_kopf(cluster: LocalCluster, tmp_path: Path) -> Iterator[Callable[..., Kopf]]:
    started: list[Kopf] = []

    def start(*args: str) -> Kopf:
        started.append(Kopf(cluster, tmp_path / f"kopf-{len(started)}.log", *args))
        return started[-1]

    yield start
    for kopf in started:
        kopf.stop()


def _status(custom: CustomObjectsApi, ns: str, name: str) -> dict:
    return custom.get_namespaced_custom_object("test.yr.dev", "v1", ns, "widgets", name).get(
        "status", {}
    )


def _exists(read: Callable[[], object]) -> bool:
    try:
        read()
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def test_a_cluster_wide_operator_handles_create_update_and_delete(apis, run_kopf):
    core, custom = apis
    kopf = run_kopf("-A")
    custom.create_namespaced_custom_object("test.yr.dev", "v1", "default", "widgets", widget("w"))

    kopf.wait(lambda: _status(custom, "default", "w").get("phase") == "Seen", "status by create")
    custom.patch_namespaced_custom_object(
        "test.yr.dev", "v1", "default", "widgets", "w", {"spec": {"size": 5}}
    )
    kopf.wait(lambda: _status(custom, "default", "w").get("size") == 5, "status by update")
    obj = custom.get_namespaced_custom_object("test.yr.dev", "v1", "default", "widgets", "w")
    assert "kopf.zalando.org/last-handled-configuration" in obj["metadata"]["annotations"]
    assert obj["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]

    custom.delete_namespaced_custom_object("test.yr.dev", "v1", "default", "widgets", "w")

    read = lambda: custom.get_namespaced_custom_object(  # noqa: E731
        "test.yr.dev", "v1", "default", "widgets", "w"
    )
    kopf.wait(lambda: not _exists(read), "the widget released by kopf's finalizer")
    assert core.read_namespaced_config_map("deleted-w", "default")


def test_an_operator_on_a_namespace_pattern_follows_new_namespaces(apis, run_kopf):
    core, custom = apis
    core.create_namespace({"metadata": {"name": "kopf-one"}})
    kopf = run_kopf("--namespace", "kopf-*")
    custom.create_namespaced_custom_object("test.yr.dev", "v1", "kopf-one", "widgets", widget("a"))
    kopf.wait(lambda: _status(custom, "kopf-one", "a").get("phase") == "Seen", "widget in kopf-one")

    core.create_namespace({"metadata": {"name": "kopf-two"}})
    custom.create_namespaced_custom_object("test.yr.dev", "v1", "kopf-two", "widgets", widget("b"))
    custom.create_namespaced_custom_object("test.yr.dev", "v1", "default", "widgets", widget("c"))

    kopf.wait(lambda: _status(custom, "kopf-two", "b").get("phase") == "Seen", "widget in kopf-two")
    assert _status(custom, "default", "c") == {}
