"""The local cluster's inter-pod (anti-)affinity on kubernetes.io/hostname and the kubelet's
admission of pods bound by nodeName, as the real scheduler and kubelet behave."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import CoreV1Api

from tests.cluster.fixtures import LocalCluster
from tests.cluster.testkit import pod_manifest, wait_pod
from tests.support import wait_for

SLEEP = ["sleep", "600"]
HOST = "kubernetes.io/hostname"


@pytest.fixture(scope="module")
def cluster(module_local_cluster) -> LocalCluster:
    cluster = module_local_cluster(cpu="4", memory="8Gi", node_name="node-1")
    cluster.add_node("node-2", cpu="4", memory="8Gi")
    return cluster


@pytest.fixture
def core(cluster: LocalCluster) -> Iterator[CoreV1Api]:
    with cluster.api_client() as client:
        core = CoreV1Api(client)
        wait_for(lambda: len(core.list_node().items) == 2, timeout=30, what="two nodes")
        yield core


def term(team: str) -> dict[str, Any]:
    return {"labelSelector": {"matchLabels": {"team": team}}, "topologyKey": HOST}


def team_pod(name: str, team: str, affinity: dict[str, Any], cpu: str = "500m") -> dict:
    pod = pod_manifest(name, SLEEP, cpu=cpu)
    pod["metadata"]["labels"] = {"team": team}
    pod["spec"]["affinity"] = affinity
    return pod


def node_of(core: CoreV1Api, namespace: str, name: str) -> str:
    pod = wait_pod(core, namespace, name, lambda p: p.spec.node_name, "bound")
    return pod.spec.node_name


def unschedulable_message(core: CoreV1Api, namespace: str, name: str) -> str:
    def message(pod):
        for condition in pod.status.conditions or []:
            if condition.type == "PodScheduled" and condition.reason == "Unschedulable":
                return condition.message
        return None

    return message(wait_pod(core, namespace, name, message, "Unschedulable"))


def test_required_anti_affinity_puts_each_pod_on_its_own_node_and_refuses_a_third(
    core: CoreV1Api, namespace: str
):
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("a")]}}
    for name in ("a0", "a1", "a2"):
        core.create_namespaced_pod(namespace, team_pod(name, "a", anti))
    assert node_of(core, namespace, "a0") != node_of(core, namespace, "a1")
    assert unschedulable_message(core, namespace, "a2").startswith(
        "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules."
    )


def test_required_affinity_keeps_a_group_on_the_first_members_node(core: CoreV1Api, namespace: str):
    together = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("p")]}}
    for name in ("p0", "p1", "p2"):
        core.create_namespaced_pod(namespace, team_pod(name, "p", together, cpu="1"))
    nodes = {node_of(core, namespace, name) for name in ("p0", "p1", "p2")}
    assert len(nodes) == 1  # least-allocated alone would have spread them


def test_preferred_affinity_co_locates_and_preferred_anti_affinity_spreads(
    core: CoreV1Api, namespace: str
):
    near = {
        "podAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": term("near")}
            ]
        }
    }
    far = {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": term("far")}
            ]
        }
    }
    core.create_namespaced_pod(namespace, team_pod("n0", "near", near))
    first = node_of(core, namespace, "n0")
    core.create_namespaced_pod(namespace, team_pod("n1", "near", near))
    assert node_of(core, namespace, "n1") == first
    core.create_namespaced_pod(namespace, team_pod("f0", "far", far))
    core.create_namespaced_pod(namespace, team_pod("f1", "far", far))
    assert node_of(core, namespace, "f0") != node_of(core, namespace, "f1")


def test_a_pod_bound_by_node_name_to_a_full_node_is_rejected_out_of_cpu(
    core: CoreV1Api, namespace: str
):
    core.create_namespaced_pod(
        namespace, pod_manifest("hog", SLEEP, cpu="3500m", nodeName="node-2")
    )
    wait_pod(core, namespace, "hog", lambda p: p.status.phase == "Running", "Running")
    core.create_namespaced_pod(namespace, pod_manifest("late", SLEEP, cpu="1", nodeName="node-2"))
    pod = wait_pod(core, namespace, "late", lambda p: p.status.phase == "Failed", "Failed")
    assert pod.status.reason == "OutOfcpu"
    assert pod.status.message == (
        "Pod was rejected: Node didn't have enough resource: cpu, requested: 1000, "
        "used: 3500, capacity: 4000"
    )


def test_a_pod_bound_by_node_name_where_it_fits_runs_without_the_scheduler(
    core: CoreV1Api, namespace: str
):
    core.create_namespaced_pod(namespace, pod_manifest("direct", SLEEP, cpu="1", nodeName="node-2"))
    pod = wait_pod(core, namespace, "direct", lambda p: p.status.phase == "Running", "Running")
    assert pod.spec.node_name == "node-2"
