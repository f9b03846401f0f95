"""Reaching a cluster as its admin or as a ServiceAccount — the emulated one or a real one.

`YR_TEST_KUBECONFIG=<path>` points the API-semantics tests (test_cluster_api, test_cluster_auth)
at a real cluster instead of the emulation: what fails there is drift between the emulation
and Kubernetes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes import config as kube_config
from kubernetes.client import ApiClient, ApiextensionsV1Api, CoreV1Api
from kubernetes.client.exceptions import ApiException

REAL_CLUSTER_ENV = "YR_TEST_KUBECONFIG"


class ClusterAccess:
    """Clients for a cluster given by an admin kubeconfig."""

    def __init__(self, kubeconfig: Path, workdir: Path) -> None:
        self.kubeconfig = kubeconfig
        self.workdir = workdir

    def api_client(self) -> ApiClient:
        """A fresh official-client ApiClient for this cluster (close it, or use `with`)."""
        return kube_config.new_client_from_config(config_file=str(self.kubeconfig))

    def service_account_token(self, namespace: str, account: str) -> str:
        """A bearer token for `namespace/account` (TokenRequest, as a kubelet asks for one)."""
        with self.api_client() as client:
            granted = CoreV1Api(client).create_namespaced_service_account_token(
                account, namespace, {"spec": {"expirationSeconds": 3600}}
            )
        return granted.status.token

    def kubeconfig_for(self, namespace: str, account: str) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount `namespace/account`."""
        config = yaml.safe_load(self.kubeconfig.read_text())
        context = next(
            c["context"] for c in config["contexts"] if c["name"] == config["current-context"]
        )
        user = next(u for u in config["users"] if u["name"] == context["user"])
        user["user"] = {"token": self.service_account_token(namespace, account)}
        context["namespace"] = namespace
        path = self.workdir / "kubeconfigs" / f"{namespace}_{account}"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def api_client_as(self, namespace: str, account: str) -> ApiClient:
        """An ApiClient acting as the ServiceAccount `namespace/account` (close it after)."""
        return kube_config.new_client_from_config(
            config_file=str(self.kubeconfig_for(namespace, account))
        )


class ExternalCluster(ClusterAccess):
    """A real cluster from YR_TEST_KUBECONFIG; tests must clean up after themselves there."""

    def __init__(self, kubeconfig: Path) -> None:
        super().__init__(kubeconfig, Path(tempfile.mkdtemp(prefix="yr-real-cluster-")))

    def install_crds(self, paths: Sequence[str | Path]) -> None:
        with self.api_client() as client:
            api = ApiextensionsV1Api(client)
            for path in paths:
                for doc in yaml.safe_load_all(Path(path).read_text()):
                    if doc and doc.get("kind") == "CustomResourceDefinition":
                        try:
                            api.create_custom_resource_definition(doc)
                        except ApiException as error:
                            if error.status != 409:
                                raise


def cluster_for_api_tests(start_local: Callable[..., Any], **local_options: Any) -> Any:
    """The real cluster named by YR_TEST_KUBECONFIG, else a local one from `start_local`."""
    real = os.environ.get(REAL_CLUSTER_ENV)
    if not real:
        return start_local(**local_options)
    cluster = ExternalCluster(Path(real))
    cluster.install_crds(local_options.get("crds", ()))
    return cluster
