"""The local cluster's garbage collector cascades deletions by ownerReferences, as the real one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psutil
import pytest
from kubernetes.client import CoreV1Api, CustomObjectsApi, V1ConfigMap
from kubernetes.client.exceptions import ApiException

from tests.cluster.fixtures import TEST_CRD, LocalCluster
from tests.cluster.testkit import container_pid, pod_manifest, wait_pod, wait_pod_gone
from tests.support import wait_for

HOLD = "test.yr.dev/hold"


@pytest.fixture(scope="module")
def cluster(module_local_cluster) -> LocalCluster:
    return module_local_cluster(crds=[TEST_CRD])


@pytest.fixture
def core(cluster: LocalCluster) -> Iterator[CoreV1Api]:
    with cluster.api_client() as client:
        yield CoreV1Api(client)


def _ref(owner: V1ConfigMap, block: bool = True) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": owner.metadata.name,
        "uid": owner.metadata.uid,
        "blockOwnerDeletion": block,
    }


def _cm(core: CoreV1Api, ns: str, name: str, *owners: dict, finalizers=()) -> V1ConfigMap:
    meta = {"name": name, "ownerReferences": list(owners), "finalizers": list(finalizers)}
    return core.create_namespaced_config_map(ns, {"metadata": meta})


def _exists(core: CoreV1Api, ns: str, name: str) -> V1ConfigMap | None:
    try:
        return core.read_namespaced_config_map(name, ns)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def _chain(core: CoreV1Api, ns: str, hold_grandchild: bool = False) -> None:
    parent = _cm(core, ns, "parent")
    child = _cm(core, ns, "child", _ref(parent))
    _cm(core, ns, "grandchild", _ref(child), finalizers=[HOLD] if hold_grandchild else [])


def _all_gone(core: CoreV1Api, ns: str, *names: str) -> bool:
    return all(_exists(core, ns, name) is None for name in names)


def test_background_deletion_collects_the_whole_chain(core: CoreV1Api, namespace: str):
    _chain(core, namespace)

    core.delete_namespaced_config_map("parent", namespace, propagation_policy="Background")

    wait_for(
        lambda: _all_gone(core, namespace, "parent", "child", "grandchild"),
        timeout=10,
        what="chain gone",
    )


def test_foreground_deletion_keeps_owners_until_their_dependents_are_gone(core, namespace):
    _chain(core, namespace, hold_grandchild=True)

    core.delete_namespaced_config_map("parent", namespace, propagation_policy="Foreground")

    grandchild = wait_for(
        lambda: (g := _exists(core, namespace, "grandchild")).metadata.deletion_timestamp and g,
        timeout=10,
        what="the grandchild to be deleting",
    )
    assert grandchild.metadata.finalizers == [HOLD]
    for owner in ("parent", "child"):
        meta = _exists(core, namespace, owner).metadata
        assert meta.deletion_timestamp is not None
        assert "foregroundDeletion" in meta.finalizers

    core.patch_namespaced_config_map("grandchild", namespace, {"metadata": {"finalizers": None}})

    wait_for(
        lambda: _all_gone(core, namespace, "parent", "child", "grandchild"),
        timeout=10,
        what="chain gone",
    )


def test_an_owner_reference_with_a_wrong_uid_gets_the_dependent_collected(core, namespace):
    parent = _cm(core, namespace, "parent")
    impostor = {**_ref(parent), "uid": str(uuid.uuid4())}

    _cm(core, namespace, "stray", impostor)

    wait_for(
        lambda: _exists(core, namespace, "stray") is None,
        timeout=10,
        what="the dependent collected",
    )
    assert _exists(core, namespace, "parent") is not None


def test_an_owner_in_another_namespace_counts_as_absent(core, namespace):
    core.create_namespace({"metadata": {"name": f"{namespace}-other"}})
    elsewhere = _cm(core, f"{namespace}-other", "parent")

    _cm(core, namespace, "stray", _ref(elsewhere))

    wait_for(
        lambda: _exists(core, namespace, "stray") is None,
        timeout=10,
        what="the dependent collected",
    )
    assert _exists(core, f"{namespace}-other", "parent") is not None


def test_orphan_deletion_keeps_dependents_without_the_reference(core, namespace):
    _chain(core, namespace)

    core.delete_namespaced_config_map("parent", namespace, propagation_policy="Orphan")

    wait_for(lambda: _exists(core, namespace, "parent") is None, timeout=10, what="parent gone")
    assert _exists(core, namespace, "child").metadata.owner_references in (None, [])
    assert _exists(core, namespace, "grandchild") is not None


def test_a_dependent_with_a_live_second_owner_survives_and_drops_the_dead_reference(
    core, namespace
):
    first, second = _cm(core, namespace, "first"), _cm(core, namespace, "second")
    _cm(core, namespace, "shared", _ref(first), _ref(second))

    core.delete_namespaced_config_map("first", namespace)

    wait_for(
        lambda: len(_exists(core, namespace, "shared").metadata.owner_references) == 1,
        timeout=10,
        what="the dead owner's reference removed",
    )
    assert _exists(core, namespace, "shared").metadata.owner_references[0].name == "second"


def test_deleting_a_namespace_deletes_what_is_in_it(core, namespace):
    _chain(core, namespace)

    core.delete_namespace(namespace)

    wait_for(
        lambda: not core.list_namespace(field_selector=f"metadata.name={namespace}").items,
        timeout=10,
        what="namespace gone",
    )
    assert core.list_namespaced_config_map(namespace).items == []


def test_deleting_a_custom_owner_terminates_its_pod(cluster: LocalCluster, core, namespace):
    with cluster.api_client() as client:
        custom = CustomObjectsApi(client)
        widget = custom.create_namespaced_custom_object(
            "test.yr.dev",
            "v1",
            namespace,
            "widgets",
            {
                "apiVersion": "test.yr.dev/v1",
                "kind": "Widget",
                "metadata": {"name": "owner"},
                "spec": {"size": 1, "color": "red"},
            },
        )
        body = pod_manifest("owned", ["sleep", "600"])
        body["metadata"]["ownerReferences"] = [
            {
                "apiVersion": "test.yr.dev/v1",
                "kind": "Widget",
                "name": "owner",
                "controller": True,
                "uid": widget["metadata"]["uid"],
                "blockOwnerDeletion": True,
            }
        ]
        core.create_namespaced_pod(namespace, body)
        pod = wait_pod(core, namespace, "owned", lambda p: p.status.phase == "Running", "Running")

        custom.delete_namespaced_custom_object("test.yr.dev", "v1", namespace, "widgets", "owner")

    wait_pod_gone(core, namespace, "owned")
    wait_for(lambda: not _pid_alive(container_pid(pod)), timeout=5, what="the pod's process gone")


def _pid_alive(pid: int) -> bool:
    return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
