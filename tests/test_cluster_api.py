"""The local cluster's API server answers the official client as a real API server would."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections.abc import Iterator

import pytest
from kubernetes import watch
from kubernetes.client import (
    ApiClient,
    ApisApi,
    AppsV1Api,
    CoordinationV1Api,
    CoreV1Api,
    CustomObjectsApi,
)
from kubernetes.client.exceptions import ApiException

from tests.cluster.access import cluster_for_api_tests
from tests.cluster.fixtures import TEST_CRD, LocalCluster
from tests.cluster.testkit import pod_manifest
from tests.cluster.tools import K8sTools


def widgets(namespace: str) -> tuple[str, str, str, str]:
    """group, version, namespace, plural of the test CRD's objects in `namespace`."""
    return ("test.yr.dev", "v1", namespace, "widgets")


@pytest.fixture(scope="module")
def cluster(module_local_cluster) -> LocalCluster:
    return cluster_for_api_tests(module_local_cluster, crds=[TEST_CRD], node_name=None)


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[ApiClient]:
    with cluster.api_client() as api_client:
        yield api_client


@pytest.fixture
def core(client: ApiClient) -> CoreV1Api:
    return CoreV1Api(client)


@pytest.fixture
def custom(client: ApiClient) -> CustomObjectsApi:
    return CustomObjectsApi(client)


def widget(name: str, size: int = 3, **spec) -> dict:
    return {
        "apiVersion": "test.yr.dev/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": size, "color": "red", **spec},
    }


def _error(call, *args, **kwargs) -> tuple[int, dict]:
    with pytest.raises(ApiException) as caught:
        call(*args, **kwargs)
    return caught.value.status, json.loads(caught.value.body)


def test_the_server_stamps_uid_resource_version_timestamp_and_generated_names(
    core: CoreV1Api, namespace: str
):
    made = core.create_namespaced_config_map(namespace, {"metadata": {"generateName": "stamped-"}})

    assert made.metadata.name.startswith("stamped-") and len(made.metadata.name) == 13
    assert made.metadata.uid and made.metadata.resource_version
    assert made.metadata.creation_timestamp is not None


def test_a_name_clash_is_409_already_exists(core: CoreV1Api, namespace: str):
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "twice"}})

    code, status = _error(
        core.create_namespaced_config_map, namespace, {"metadata": {"name": "twice"}}
    )

    assert (code, status["reason"]) == (409, "AlreadyExists")
    assert status["message"] == 'configmaps "twice" already exists'


def test_a_missing_object_is_a_404_status(core: CoreV1Api, namespace: str):
    code, status = _error(core.read_namespaced_pod, "nobody", namespace)

    assert code == 404
    assert status["kind"] == "Status" and status["reason"] == "NotFound"
    assert status["message"] == 'pods "nobody" not found'


def test_a_custom_object_violating_the_schema_is_422_naming_the_fields(custom, namespace: str):
    bad = widget("bad", size=0, color="pink", label="Not-A-Label")

    code, status = _error(custom.create_namespaced_custom_object, *widgets(namespace), bad)

    assert (code, status["reason"]) == (422, "Invalid")
    fields = {cause["field"] for cause in status["details"]["causes"]}
    assert fields == {"spec.size", "spec.color", "spec.label"}
    assert (
        "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1"
        in (status["message"])
    )


def test_a_required_field_missing_is_422_required_value(custom, namespace: str):
    body = widget("incomplete")
    del body["spec"]["color"]

    code, status = _error(custom.create_namespaced_custom_object, *widgets(namespace), body)

    assert code == 422
    expected = 'Widget.test.yr.dev "incomplete" is invalid: spec.color: Required value'
    assert status["message"] == expected


def test_unknown_fields_are_pruned_and_defaults_applied(custom, namespace: str):
    made = custom.create_namespaced_custom_object(
        *widgets(namespace), widget("pruned", junk=1, weight="2")
    )

    assert made["spec"] == {"size": 3, "color": "red", "weight": "2", "replicas": 1}


def test_a_status_patch_changes_only_the_status(custom, namespace: str):
    custom.create_namespaced_custom_object(*widgets(namespace), widget("statusful"))

    patched = custom.patch_namespaced_custom_object_status(
        *widgets(namespace), "statusful", {"status": {"phase": "Ready"}, "spec": {"size": 9}}
    )

    assert patched["status"] == {"phase": "Ready"}
    assert patched["spec"]["size"] == 3 and patched["metadata"]["generation"] == 1


def test_a_main_resource_write_ignores_status_and_bumps_generation(custom, namespace: str):
    custom.create_namespaced_custom_object(*widgets(namespace), widget("specful"))
    custom.patch_namespaced_custom_object_status(
        *widgets(namespace), "specful", {"status": {"phase": "A"}}
    )

    patched = custom.patch_namespaced_custom_object(
        *widgets(namespace), "specful", {"spec": {"size": 5}, "status": {"phase": "B"}}
    )

    assert patched["spec"]["size"] == 5 and patched["status"] == {"phase": "A"}
    assert patched["metadata"]["generation"] == 2


def test_metadata_changes_do_not_bump_generation(custom, namespace: str):
    custom.create_namespaced_custom_object(*widgets(namespace), widget("labelled"))

    patched = custom.patch_namespaced_custom_object(
        *widgets(namespace), "labelled", {"metadata": {"labels": {"a": "b"}}}
    )

    assert patched["metadata"]["generation"] == 1


def test_a_stale_resource_version_is_a_409_conflict(core: CoreV1Api, namespace: str):
    made = core.create_namespaced_config_map(namespace, {"metadata": {"name": "raced"}})
    core.patch_namespaced_config_map("raced", namespace, {"data": {"a": "1"}})
    stale = {"metadata": {"resourceVersion": made.metadata.resource_version}, "data": {"b": "2"}}

    code, status = _error(core.patch_namespaced_config_map, "raced", namespace, stale)

    assert (code, status["reason"]) == (409, "Conflict")


def test_a_failed_json_patch_test_is_422_as_kopf_expects(core: CoreV1Api, namespace: str):
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "tested"}})
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "0"},
        {"op": "add", "path": "/data", "value": {"x": "y"}},
    ]

    code, _ = _error(core.patch_namespaced_config_map, "tested", namespace, ops)

    assert code == 422


def test_strategic_merge_patch_merges_containers_by_name(client: ApiClient, namespace: str):
    apps = AppsV1Api(client)
    template = {
        "spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}
    }
    selector = {"matchLabels": {"app": "merged"}}
    template["metadata"] = {"labels": {"app": "merged"}}
    spec = {"selector": selector, "template": template}
    apps.create_namespaced_deployment(namespace, {"metadata": {"name": "merged"}, "spec": spec})

    patch = {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}}}
    patched = apps.patch_namespaced_deployment("merged", namespace, patch)

    images = [(c.name, c.image) for c in patched.spec.template.spec.containers]
    assert images == [("a", "a:1"), ("b", "b:2")]


def test_pod_status_conditions_merge_by_type(core: CoreV1Api, namespace: str):
    core.create_namespaced_pod(namespace, pod_manifest("conditioned", ["true"]))
    ready = {"type": "Ready", "status": "False"}
    core.patch_namespaced_pod_status("conditioned", namespace, {"status": {"conditions": [ready]}})

    scheduled = {"type": "PodScheduled", "status": "True"}
    pod = core.patch_namespaced_pod_status(
        "conditioned", namespace, {"status": {"conditions": [scheduled]}}
    )

    assert sorted(c.type for c in pod.status.conditions) == ["PodScheduled", "Ready"]


def test_label_selectors_equality_and_set_based(core: CoreV1Api, namespace: str):
    for name, tier in (("sel-a", "web"), ("sel-b", "db"), ("sel-c", "cache")):
        core.create_namespaced_config_map(
            namespace, {"metadata": {"name": name, "labels": {"tier": tier, "sel": "yes"}}}
        )

    def names(selector: str) -> list[str]:
        items = core.list_namespaced_config_map(namespace, label_selector=selector).items
        return sorted(i.metadata.name for i in items)

    assert names("sel=yes,tier=web") == ["sel-a"]
    assert names("sel=yes,tier!=web") == ["sel-b", "sel-c"]
    assert names("sel,tier in (db, cache)") == ["sel-b", "sel-c"]
    assert names("sel,tier notin (db)") == ["sel-a", "sel-c"]
    assert names("sel,!tier") == []


def test_field_selectors_on_name_and_node_name(core: CoreV1Api, namespace: str):
    body = pod_manifest("placed", ["true"], nodeName="far-away")
    core.create_namespaced_pod(namespace, body)

    by_node = core.list_namespaced_pod(namespace, field_selector="spec.nodeName=far-away").items
    by_name = core.list_namespaced_pod(namespace, field_selector="metadata.name=placed").items

    assert [p.metadata.name for p in by_node] == ["placed"] == [p.metadata.name for p in by_name]
    # Bound to a node that never runs it: nothing would ever finish its graceful deletion.
    core.delete_namespaced_pod("placed", namespace, grace_period_seconds=0)


def test_a_watch_sees_added_modified_and_deleted(core: CoreV1Api, namespace: str):
    version = core.list_namespaced_config_map(namespace).metadata.resource_version
    seen: queue.Queue = queue.Queue()
    stream = watch.Watch()

    def follow() -> None:
        for event in stream.stream(
            core.list_namespaced_config_map,
            namespace,
            resource_version=version,
            field_selector="metadata.name=watched",
            timeout_seconds=10,
        ):
            seen.put(event["type"])
            if event["type"] == "DELETED":
                stream.stop()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "watched"}})
    core.patch_namespaced_config_map("watched", namespace, {"data": {"k": "v"}})
    core.delete_namespaced_config_map("watched", namespace)
    thread.join(10)

    assert [seen.get_nowait() for _ in range(seen.qsize())] == ["ADDED", "MODIFIED", "DELETED"]


def test_binding_a_pod_makes_a_node_watch_see_it_added(core: CoreV1Api, namespace: str):
    version = core.list_pod_for_all_namespaces().metadata.resource_version
    core.create_namespaced_pod(namespace, pod_manifest("to-bind", ["true"]))

    core.create_namespaced_pod_binding(
        "to-bind",
        namespace,
        {"metadata": {"name": "to-bind"}, "target": {"kind": "Node", "name": "n9"}},
        _preload_content=False,
    )

    events = list(
        watch.Watch().stream(
            core.list_pod_for_all_namespaces,
            timeout_seconds=1,
            field_selector="spec.nodeName=n9",
            resource_version=version,
        )
    )
    assert [e["type"] for e in events] == ["ADDED"]
    assert events[0]["object"].spec.node_name == "n9"
    core.delete_namespaced_pod("to-bind", namespace, grace_period_seconds=0)  # n9 never runs it


def test_deleting_an_unbound_pod_removes_it_at_once(core: CoreV1Api, namespace: str):
    core.create_namespaced_pod(namespace, pod_manifest("unbound", ["true"]))

    core.delete_namespaced_pod("unbound", namespace)

    assert _error(core.read_namespaced_pod, "unbound", namespace)[0] == 404


def test_deleting_a_bound_pod_waits_for_its_node(core: CoreV1Api, namespace: str):
    core.create_namespaced_pod(namespace, pod_manifest("bound", ["true"], nodeName="absent-node"))

    core.delete_namespaced_pod("bound", namespace)
    assert core.read_namespaced_pod("bound", namespace).metadata.deletion_timestamp is not None

    core.delete_namespaced_pod("bound", namespace, grace_period_seconds=0)
    assert _error(core.read_namespaced_pod, "bound", namespace)[0] == 404


def test_namespaces_list_and_objects_need_an_existing_namespace(core: CoreV1Api):
    names = {n.metadata.name for n in core.list_namespace().items}

    code, status = _error(core.create_namespaced_config_map, "nowhere", {"metadata": {"name": "x"}})

    assert {"default", "kube-system"} <= names
    assert (code, status["message"]) == (404, 'namespaces "nowhere" not found')


def test_discovery_lists_core_coordination_events_and_crd_groups(client: ApiClient):
    groups = {g.name for g in ApisApi(client).get_api_versions().groups}
    core_resources = {r.name for r in CoreV1Api(client).get_api_resources().resources}

    assert {"coordination.k8s.io", "events.k8s.io", "test.yr.dev"} <= groups
    assert {"pods", "pods/status", "pods/binding", "nodes/status", "events"} <= core_resources


def test_leases_can_be_created_and_renewed(client: ApiClient, namespace: str):
    leases = CoordinationV1Api(client)
    leases.create_namespaced_lease(
        namespace, {"metadata": {"name": "driver"}, "spec": {"leaseDurationSeconds": 15}}
    )

    renewed = leases.patch_namespaced_lease(
        "driver", namespace, {"spec": {"renewTime": "2030-01-01T00:00:00.000000Z"}}
    )

    assert renewed.spec.lease_duration_seconds == 15 and renewed.spec.renew_time.year == 2030


def test_kubectl_shows_crd_printer_columns(
    cluster: LocalCluster, custom, namespace: str, k8s_tools: K8sTools
):
    custom.create_namespaced_custom_object(*widgets(namespace), widget("shown", size=7))

    out = subprocess.run(
        [
            k8s_tools / "kubectl",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--namespace",
            namespace,
            "get",
            "widgets",
            "shown",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout

    header, row = out.splitlines()[:2]
    assert header.split() == ["NAME", "SIZE", "PHASE", "AGE"]
    assert row.split()[:2] == ["shown", "7"]
