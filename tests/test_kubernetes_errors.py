"""A driver that cannot start a Kubernetes session says why in one line, creating nothing."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from kubernetes import client as k8s

import yr
from tests.cluster.auth import kubeconfig_text
from tests.cluster.tls import self_signed


def _init(kubeconfig: str) -> None:
    yr.init(yr.Config(backend="kubernetes", namespace="default", kubeconfig=kubeconfig))
    yr.finalize()  # only reached when the test is about to fail


def test_a_missing_kubeconfig_is_named(tmp_path) -> None:
    missing = tmp_path / "no-such-kubeconfig"
    with pytest.raises(
        yr.YRError, match=f"cannot load the Kubernetes configuration from {missing}"
    ):
        _init(str(missing))


def test_an_api_server_that_is_down_is_named_with_the_kubeconfig(tmp_path) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    authority, _ = self_signed("127.0.0.1")
    kubeconfig.write_text(kubeconfig_text(f"https://127.0.0.1:{port}", authority, "a-token"))
    with pytest.raises(yr.YRError) as caught:
        _init(str(kubeconfig))
    message = str(caught.value)
    assert f"cannot reach the Kubernetes API server at https://127.0.0.1:{port}" in message
    assert str(kubeconfig) in message and "\n" not in message


def test_a_cluster_without_the_crd_says_to_install_the_chart(local_cluster) -> None:
    cluster = local_cluster(node_name=None)  # no CRDs
    with pytest.raises(yr.YRError, match="the YRInstance CRD is not installed in this cluster"):
        _init(str(cluster.kubeconfig))
    with cluster.api_client() as client:
        assert not k8s.CoordinationV1Api(client).list_namespaced_lease("default").items


def test_without_an_operator_the_driver_says_no_operator_acted(local_cluster) -> None:
    from tests.k8s_instances import Worker

    crd = Path(__file__).resolve().parents[1] / "crds" / "yrinstances.yaml"
    cluster = local_cluster(crds=[crd], node_name=None)  # and no operator
    yr.init(
        yr.Config(backend="kubernetes", namespace="default", kubeconfig=str(cluster.kubeconfig))
    )
    try:
        options = yr.InvokeOptions(cpu=100, memory=64, schedule_timeout_ms=1500)
        with pytest.raises(yr.YRSchedulingError) as caught:
            yr.get(Worker.options(options).invoke().pid.invoke(), timeout=60)
    finally:
        yr.finalize()
    message = str(caught.value)
    assert "no operator has acted on YRInstance" in message and "helm install" in message
    assert "Lower its cpu" not in message


@pytest.mark.parametrize("bad", ["soon", "0", "2.5"])
def test_a_bad_lease_duration_is_named_before_anything_is_created(
    tmp_path, monkeypatch, bad
) -> None:
    monkeypatch.setenv("YR_LEASE_DURATION_SECONDS", bad)
    # Refused before the kubeconfig is even read: nothing can have been created.
    with pytest.raises(
        ValueError, match=f"YR_LEASE_DURATION_SECONDS must be a whole number >= 1, got {bad!r}"
    ):
        _init(str(tmp_path / "no-such-kubeconfig"))
