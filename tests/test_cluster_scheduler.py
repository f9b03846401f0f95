"""The local cluster's scheduler binds pods that fit and explains those that do not, as real."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes.client import CoreV1Api, V1Pod

from tests.cluster.fixtures import LocalCluster
from tests.cluster.testkit import pod_manifest, wait_pod
from tests.support import wait_for

SLEEP = ["sleep", "600"]


@pytest.fixture(scope="module")
def cluster(module_local_cluster) -> LocalCluster:
    return module_local_cluster(cpu="4", memory="8Gi")


@pytest.fixture
def core(cluster: LocalCluster) -> Iterator[CoreV1Api]:
    """A client. Each test's namespace is gone, pods included, before the next test starts,
    so each test gets the whole node."""
    with cluster.api_client() as client:
        yield CoreV1Api(client)


def _unschedulable(pod: V1Pod) -> str | None:
    for condition in pod.status.conditions or []:
        if condition.type == "PodScheduled" and condition.reason == "Unschedulable":
            return condition.message
    return None


def _bound(core: CoreV1Api, namespace: str) -> set[str]:
    return {p.metadata.name for p in core.list_namespaced_pod(namespace).items if p.spec.node_name}


def _events(core: CoreV1Api, pod: str, reason: str, namespace: str) -> list:
    selector = f"involvedObject.name={pod},reason={reason}"
    return core.list_namespaced_event(namespace, field_selector=selector).items


def test_pods_beyond_the_node_cpu_wait_unschedulable_with_the_real_message(
    core: CoreV1Api, namespace: str
):
    names = [f"cpu-{i}" for i in range(6)]
    for name in names:
        core.create_namespaced_pod(namespace, pod_manifest(name, SLEEP, cpu="1"))

    wait_for(lambda: len(_bound(core, namespace)) == 4, timeout=10, what="four pods bound")
    pending = sorted(set(names) - _bound(core, namespace))
    for name in pending:
        pod = wait_pod(core, namespace, name, _unschedulable, "Unschedulable")
        assert _unschedulable(pod).startswith("0/1 nodes are available: 1 Insufficient cpu.")
        assert pod.status.phase == "Pending"
        assert _events(core, name, "FailedScheduling", namespace)[0].type == "Warning"
    assert len(pending) == 2


def test_unschedulable_pods_bind_when_capacity_is_freed(core: CoreV1Api, namespace: str):
    for i in range(6):
        core.create_namespaced_pod(namespace, pod_manifest(f"cpu-{i}", SLEEP, cpu="1"))
    wait_for(lambda: len(_bound(core, namespace)) == 4, timeout=10, what="four pods bound")
    victims = sorted(_bound(core, namespace))[:2]

    for name in victims:
        core.delete_namespaced_pod(name, namespace)

    wait_for(
        lambda: len(_bound(core, namespace)) == 4 and not set(victims) & _bound(core, namespace),
        timeout=15,
        what="the two waiting pods bound in place of the deleted ones",
    )


def test_memory_that_does_not_fit_is_reported_as_insufficient_memory(
    core: CoreV1Api, namespace: str
):
    core.create_namespaced_pod(namespace, pod_manifest("hungry", SLEEP, memory="9Gi"))

    pod = wait_pod(core, namespace, "hungry", _unschedulable, "Unschedulable")

    assert _unschedulable(pod).startswith("0/1 nodes are available: 1 Insufficient memory.")


def test_a_terminated_pod_frees_its_cpu(core: CoreV1Api, tmp_path, namespace: str):
    flag = tmp_path / "finish"
    wait_then_exit = ["sh", "-c", f"while [ ! -f {flag} ]; do sleep 0.05; done"]
    core.create_namespaced_pod(namespace, pod_manifest("big-runner", wait_then_exit, cpu="3"))
    core.create_namespaced_pod(namespace, pod_manifest("big-waiter", SLEEP, cpu="3"))
    wait_pod(core, namespace, "big-waiter", _unschedulable, "Unschedulable")

    flag.touch()

    wait_pod(core, namespace, "big-runner", lambda p: p.status.phase == "Succeeded", "Succeeded")
    pod = wait_pod(core, namespace, "big-waiter", lambda p: p.spec.node_name, "bound")
    assert pod.spec.node_name == "node-1"
    assert _events(core, "big-waiter", "Scheduled", namespace)
