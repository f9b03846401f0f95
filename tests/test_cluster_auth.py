"""The emulated API server authenticates bearer tokens and authorizes with RBAC, as a real one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import config as kube_config
from kubernetes.client import (
    ApiClient,
    CoreV1Api,
    CustomObjectsApi,
    RbacAuthorizationV1Api,
)
from kubernetes.client.exceptions import ApiException

from tests.cluster.access import cluster_for_api_tests
from tests.cluster.chart_rbac import install_chart_rbac
from tests.cluster.fixtures import REPO, LocalCluster
from tests.cluster.testkit import python_pod, wait_pod
from tests.cluster.tools import K8sTools

YRINSTANCES = ("yr.dev", "v1alpha1")
RBAC_GROUP = "rbac.authorization.k8s.io"


@pytest.fixture(scope="module")
def cluster(module_local_cluster) -> LocalCluster:
    return cluster_for_api_tests(module_local_cluster, crds=[REPO / "crds" / "yrinstances.yaml"])


@pytest.fixture
def core(cluster: LocalCluster) -> Iterator[CoreV1Api]:
    with cluster.api_client() as client:
        yield CoreV1Api(client)


def _account(client: ApiClient, namespace: str, name: str, *rules: dict) -> None:
    """A ServiceAccount bound (RoleBinding in `namespace`) to a Role with `rules`."""
    CoreV1Api(client).create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    rbac = RbacAuthorizationV1Api(client)
    rbac.create_namespaced_role(namespace, {"metadata": {"name": name}, "rules": list(rules)})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    )


def _status(call, *args, **kwargs) -> tuple[int, dict]:
    with pytest.raises(ApiException) as raised:
        call(*args, **kwargs)
    return raised.value.status, json.loads(raised.value.body or "{}")


def _rule(resources: list[str], verbs: list[str], **extra) -> dict:
    return {"apiGroups": [""], "resources": resources, "verbs": verbs, **extra}


def test_a_service_account_does_what_its_role_grants_and_gets_403_for_the_rest(
    cluster: LocalCluster, core: CoreV1Api, namespace: str
):
    _account(core.api_client, namespace, "reader", _rule(["configmaps"], ["get", "list"]))
    with cluster.api_client_as(namespace, "reader") as client:
        as_reader = CoreV1Api(client)
        as_reader.list_namespaced_config_map(namespace)

        code, status = _status(
            as_reader.create_namespaced_config_map, namespace, {"metadata": {"name": "no"}}
        )

    assert (code, status["reason"]) == (403, "Forbidden")
    assert status["message"] == (
        f'configmaps is forbidden: User "system:serviceaccount:{namespace}:reader" cannot '
        f'create resource "configmaps" in API group "" in the namespace "{namespace}"'
    )


def test_a_role_binding_grants_nothing_outside_its_namespace(
    cluster: LocalCluster, core: CoreV1Api, namespace: str
):
    _account(core.api_client, namespace, "local", _rule(["configmaps"], ["list"]))
    with cluster.api_client_as(namespace, "local") as client:
        code, status = _status(CoreV1Api(client).list_namespaced_config_map, "kube-public")

    assert code == 403 and 'in the namespace "kube-public"' in status["message"]


def test_resource_names_limit_a_rule_to_the_named_objects(
    cluster: LocalCluster, core: CoreV1Api, namespace: str
):
    for name in ("mine", "theirs"):
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name}})
    _account(
        core.api_client, namespace, "picky", _rule(["configmaps"], ["get"], resourceNames=["mine"])
    )
    with cluster.api_client_as(namespace, "picky") as client:
        as_picky = CoreV1Api(client)
        as_picky.read_namespaced_config_map("mine", namespace)

        assert _status(as_picky.read_namespaced_config_map, "theirs", namespace)[0] == 403
        assert _status(as_picky.list_namespaced_config_map, namespace)[0] == 403


def test_a_subresource_needs_its_own_rule(cluster: LocalCluster, core: CoreV1Api, namespace: str):
    core.create_namespaced_pod(namespace, python_pod("subject", "pass", nodeName="nowhere"))
    _account(core.api_client, namespace, "statusless", _rule(["pods"], ["get", "patch"]))
    with cluster.api_client_as(namespace, "statusless") as client:
        as_account = CoreV1Api(client)
        as_account.patch_namespaced_pod("subject", namespace, {"metadata": {"labels": {"a": "b"}}})

        code, status = _status(
            as_account.patch_namespaced_pod_status, "subject", namespace, {"status": {}}
        )

    assert code == 403 and 'resource "pods/status"' in status["message"]
    core.delete_namespaced_pod("subject", namespace, grace_period_seconds=0)  # no node runs it


def test_a_cluster_role_binding_grants_in_every_namespace(
    cluster: LocalCluster, core: CoreV1Api, namespace: str
):
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "watcher"}})
    rbac = RbacAuthorizationV1Api(core.api_client)
    name = f"{namespace}-watcher"
    rbac.create_cluster_role(
        {"metadata": {"name": name}, "rules": [_rule(["namespaces", "configmaps"], ["list"])]}
    )
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": "watcher", "namespace": namespace}],
        }
    )
    try:
        with cluster.api_client_as(namespace, "watcher") as client:
            as_watcher = CoreV1Api(client)
            as_watcher.list_namespace()
            as_watcher.list_namespaced_config_map("kube-public")
            as_watcher.list_config_map_for_all_namespaces()
    finally:
        rbac.delete_cluster_role_binding(name)
        rbac.delete_cluster_role(name)


def _client_with_user(cluster: LocalCluster, path: Path, user: dict) -> ApiClient:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["users"][0]["user"] = user
    path.write_text(yaml.safe_dump(config))
    return kube_config.new_client_from_config(config_file=str(path))


def test_an_unknown_token_is_401_unauthorized(cluster: LocalCluster, tmp_path: Path):
    with _client_with_user(cluster, tmp_path / "forged", {"token": "forged"}) as client:
        code, status = _status(CoreV1Api(client).list_namespace)

    assert (code, status["reason"]) == (401, "Unauthorized")


def test_a_request_without_a_token_is_the_anonymous_user(cluster: LocalCluster, tmp_path: Path):
    with _client_with_user(cluster, tmp_path / "anonymous", {}) as client:
        code, status = _status(CoreV1Api(client).list_namespace)

    assert code == 403 and 'User "system:anonymous"' in status["message"]


def test_a_deleted_service_accounts_tokens_stop_working(
    cluster: LocalCluster, core: CoreV1Api, namespace: str
):
    _account(core.api_client, namespace, "fleeting", _rule(["configmaps"], ["list"]))
    with cluster.api_client_as(namespace, "fleeting") as client:
        core.delete_namespaced_service_account("fleeting", namespace)

        assert _status(CoreV1Api(client).list_namespaced_config_map, namespace)[0] == 401


def test_every_namespace_gets_a_default_service_account(core: CoreV1Api, namespace: str):
    assert core.read_namespaced_service_account("default", namespace).metadata.name == "default"


def test_a_pod_naming_a_missing_service_account_is_refused(core: CoreV1Api, namespace: str):
    body = python_pod("orphan", "pass", serviceAccountName="nobody")

    code, status = _status(core.create_namespaced_pod, namespace, body)

    assert code == 403
    assert status["message"] == (
        f'pods "orphan" is forbidden: error looking up service account {namespace}/nobody: '
        f'serviceaccount "nobody" not found'
    )


WHOAMI = """
import json, os
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
config.load_kube_config()
api = client.CoreV1Api()
names = [c.metadata.name for c in api.list_namespaced_config_map(os.environ["NS"]).items]
try:
    api.list_namespaced_pod(os.environ["NS"])
    pods = 200
except ApiException as error:
    pods = error.status
token = open("/var/run/secrets/kubernetes.io/serviceaccount/token".replace(
    "/var/run/secrets/kubernetes.io/serviceaccount", os.environ["SA_DIR"])).read()
print(json.dumps({"configmaps": names, "pods": pods, "token": bool(token)}))
"""


def test_a_pod_talks_to_the_api_as_its_service_account(
    cluster: LocalCluster, core: CoreV1Api, namespace: str
):
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "visible"}})
    _account(core.api_client, namespace, "app", _rule(["configmaps"], ["list"]))
    env = [
        {"name": "NS", "value": namespace},
        {"name": "SA_DIR", "value": "/var/run/secrets/kubernetes.io/serviceaccount"},
    ]
    core.create_namespaced_pod(
        namespace, python_pod("whoami", WHOAMI, env=env, serviceAccountName="app")
    )

    wait_pod(core, namespace, "whoami", lambda p: p.status.phase == "Succeeded", "Succeeded", 60)

    seen = json.loads(cluster.pod_log(namespace, "whoami"))
    assert seen == {"configmaps": ["visible"], "pods": 403, "token": True}


def test_the_charts_instance_account_gets_403_for_what_the_chart_does_not_grant(
    cluster: LocalCluster, k8s_tools: K8sTools, namespace: str
):
    install_chart_rbac(cluster, k8s_tools / "helm", namespace)
    instance = {
        "apiVersion": "yr.dev/v1alpha1",
        "kind": "YRInstance",
        "metadata": {"name": "child"},
        "spec": {
            "className": "C",
            "session": "s",
            "cpu": 1000,
            "memory": 128,
            "payloadSecret": "p",
        },
    }
    instance["spec"]["payloadSecret"] = "p"
    with cluster.api_client_as(namespace, "yr-instance") as client:
        custom = CustomObjectsApi(client)
        custom.create_namespaced_custom_object(*YRINSTANCES, namespace, "yrinstances", instance)

        code, status = _status(
            custom.patch_namespaced_custom_object_status,
            *YRINSTANCES,
            namespace,
            "yrinstances",
            "child",
            {"status": {"phase": "Ready"}},
        )

    assert code == 403
    assert 'cannot patch resource "yrinstances/status" in API group "yr.dev"' in status["message"]
