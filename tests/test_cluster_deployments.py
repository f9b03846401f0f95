"""The emulated Deployment controller: a Deployment's pods, as the real controller keeps them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes.client import AppsV1Api, CoreV1Api, V1Pod

from tests.cluster.fixtures import LocalCluster
from tests.support import wait_for


@pytest.fixture(scope="module")
def cluster(module_local_cluster) -> LocalCluster:
    return module_local_cluster(node_name=None)  # pods stay Pending: their count is the point


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator:
    with cluster.api_client() as api:
        yield api


def deployment(name: str, replicas: int, account: str = "default", image: str = "v1") -> dict:
    labels = {"app": name}
    container = {"name": "main", "image": image, "command": ["sleep", "600"]}
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"serviceAccountName": account, "containers": [container]},
            },
        },
    }


def pods_of(core: CoreV1Api, namespace: str, name: str) -> list[V1Pod]:
    pods = core.list_namespaced_pod(namespace, label_selector=f"app={name}").items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def test_a_deployment_gets_its_replicas_as_pods_it_controls(client, namespace: str):
    AppsV1Api(client).create_namespaced_deployment(namespace, deployment("web", 3))
    core = CoreV1Api(client)

    pods = wait_for(
        lambda: len(found := pods_of(core, namespace, "web")) == 3 and found,
        timeout=10,
        what="three pods",
    )

    for pod in pods:
        (owner,) = pod.metadata.owner_references
        assert (owner.kind, owner.name, owner.controller) == ("Deployment", "web", True)
        assert pod.metadata.name.startswith("web-")
        assert "pod-template-hash" in pod.metadata.labels


def test_a_deleted_pod_is_replaced(client, namespace: str):
    AppsV1Api(client).create_namespaced_deployment(namespace, deployment("kept", 1))
    core = CoreV1Api(client)
    (first,) = wait_for(lambda: pods_of(core, namespace, "kept"), timeout=10, what="a pod")

    core.delete_namespaced_pod(first.metadata.name, namespace)

    wait_for(
        lambda: (
            [p.metadata.name for p in pods_of(core, namespace, "kept")]
            not in ([], [first.metadata.name])
        ),
        timeout=10,
        what="a replacement pod",
    )


def test_a_changed_template_replaces_the_pods(client, namespace: str):
    apps, core = AppsV1Api(client), CoreV1Api(client)
    apps.create_namespaced_deployment(namespace, deployment("rolled", 2))
    before = wait_for(
        lambda: len(p := pods_of(core, namespace, "rolled")) == 2 and p, timeout=10, what="pods"
    )

    apps.replace_namespaced_deployment("rolled", namespace, deployment("rolled", 2, image="v2"))

    old = {p.metadata.name for p in before}
    after = wait_for(
        lambda: (
            len(p := pods_of(core, namespace, "rolled")) == 2
            and not old & {x.metadata.name for x in p}
            and p
        ),
        timeout=10,
        what="two pods of the new template",
    )
    assert {p.spec.containers[0].image for p in after} == {"v2"}


def test_a_missing_service_account_is_a_failed_create_until_it_exists(client, namespace: str):
    core = CoreV1Api(client)
    AppsV1Api(client).create_namespaced_deployment(namespace, deployment("late", 1, "late-sa"))

    event = wait_for(
        lambda: core.list_namespaced_event(namespace, field_selector="reason=FailedCreate").items,
        timeout=10,
        what="a FailedCreate event",
    )[0]
    assert 'serviceaccount "late-sa" not found' in event.message
    assert not pods_of(core, namespace, "late")

    core.create_namespaced_service_account(namespace, {"metadata": {"name": "late-sa"}})

    wait_for(lambda: pods_of(core, namespace, "late"), timeout=10, what="the pod, at last")
