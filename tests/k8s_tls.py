"""Session TLS in tests: the gateway's key pair as the chart makes it, and pinned raw channels."""

from __future__ import annotations

import base64
import pathlib
from typing import Any

import grpc
from kubernetes import client as k8s

from yr import contract as c
from yr.protocol import CHANNEL_OPTIONS
from yr.tls import PinnedServer, make_key_pair


def install_gateway_key_pair(
    api_client: Any, namespace: str, directory: pathlib.Path
) -> dict[str, str]:
    """Create (or replace) the gateway's TLS Secret, as the chart does, and write the files a
    gateway process reads; returns the env naming them."""
    certificate, key = make_key_pair(c.GATEWAY_SERVER_NAME)
    core = k8s.CoreV1Api(api_client)
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": c.GATEWAY_TLS_SECRET},
        "type": "kubernetes.io/tls",
        "data": {
            c.TLS_CERT_KEY: base64.b64encode(certificate).decode(),
            c.TLS_PRIVATE_KEY_KEY: base64.b64encode(key).decode(),
        },
    }
    try:
        core.delete_namespaced_secret(c.GATEWAY_TLS_SECRET, namespace)
    except k8s.ApiException as error:
        if error.status != 404:
            raise
    core.create_namespaced_secret(namespace, body)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "gateway.crt").write_bytes(certificate)
    (directory / "gateway.key").write_bytes(key)
    return {
        c.ENV_GATEWAY_TLS_CERT_FILE: str(directory / "gateway.crt"),
        c.ENV_GATEWAY_TLS_KEY_FILE: str(directory / "gateway.key"),
    }


def gateway_channel(api_client: Any, namespace: str, address: str) -> grpc.Channel:
    """A channel to the gateway that pins its certificate, as a driver's does."""
    secret = k8s.CoreV1Api(api_client).read_namespaced_secret(c.GATEWAY_TLS_SECRET, namespace)
    certificate = base64.b64decode(secret.data[c.TLS_CERT_KEY])
    return PinnedServer(certificate, c.GATEWAY_SERVER_NAME).secure_channel(address, CHANNEL_OPTIONS)
