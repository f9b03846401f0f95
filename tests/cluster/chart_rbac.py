"""The chart's own identities in the emulated cluster: its rendered ServiceAccounts and RBAC.

Tests run the operator, the gateway and instance pods as the chart's ServiceAccounts, so a
verb the chart does not grant is a 403 in tests, as on a real cluster.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import create_from_dict

from tests.cluster.access import ClusterAccess
from tests.cluster.fixtures import REPO

CHART = REPO / "charts" / "yr"
RELEASE = "yr"
RBAC_KINDS = ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
# What a further namespace needs when the cluster-wide part is installed already.
NAMESPACED_RBAC = ("ServiceAccount", "Role", "RoleBinding")
STAND_IN_NAMESPACE = "yr-stand-in-namespace-7f3a9c"


def render_chart(helm: Path, namespace: str, *helm_args: str) -> list[dict[str, Any]]:
    """`helm template` of charts/yr for a release in `namespace`.

    Every test namespace gets the chart's RBAC: helm renders once per `helm_args` for a
    stand-in namespace, whose name is then replaced (rendering does nothing else with it)."""
    text = _rendered(str(helm), helm_args).replace(STAND_IN_NAMESPACE, namespace)
    return [doc for doc in yaml.safe_load_all(text) if doc]


@functools.lru_cache(maxsize=8)
def _rendered(helm: str, helm_args: tuple[str, ...]) -> str:
    done = subprocess.run(
        [helm, "template", RELEASE, str(CHART), "--namespace", STAND_IN_NAMESPACE, *helm_args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"helm template failed:\n{done.stderr}")
    return done.stdout


def install_chart_rbac(
    cluster: ClusterAccess,
    helm: Path,
    namespace: str,
    *helm_args: str,
    kinds: tuple[str, ...] = RBAC_KINDS,
) -> list[dict[str, Any]]:
    """Create the chart's ServiceAccounts, Roles, ClusterRoles and bindings (those of `kinds`)
    for a release in `namespace`; return them."""
    docs = [d for d in render_chart(helm, namespace, *helm_args) if d["kind"] in kinds]
    with cluster.api_client() as client:
        try:
            CoreV1Api(client).create_namespace({"metadata": {"name": namespace}})
        except ApiException as error:
            if error.status != 409:
                raise
        for doc in docs:
            create_from_dict(client, doc, namespace=namespace)
    return docs
