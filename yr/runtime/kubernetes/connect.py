"""How a process reaches its cluster: the API client from a kubeconfig or the pod's account,
a check that the API server and the YRInstance resource answer, and the certificates it pins."""

from __future__ import annotations

import base64
import os

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.kube_config import KUBE_CONFIG_DEFAULT_LOCATION

from yr import contract as c
from yr.contract import GROUP, PLURAL, VERSION
from yr.errors import YRError
from yr.runtime.kubernetes import api
from yr.tls import PinnedServer


def kubeconfig_source(kubeconfig: str = "") -> str:
    """Which configuration load_config reads: a kubeconfig path, or the pod's account."""
    path = kubeconfig or os.environ.get("KUBECONFIG") or ""
    if path or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return path or os.path.expanduser(KUBE_CONFIG_DEFAULT_LOCATION)
    return "the in-cluster service account"


def load_config(kubeconfig: str = "") -> k8s.ApiClient:
    """An ApiClient from the kubeconfig (or the pod's service account); a clear YRError when
    there is neither."""
    configuration = k8s.Configuration()
    source = kubeconfig_source(kubeconfig)
    if source != "the in-cluster service account":
        try:
            k8s_config.load_kube_config(
                config_file=kubeconfig or None, client_configuration=configuration
            )
        except (ConfigException, OSError, TypeError, ValueError) as error:
            raise YRError(
                f"cannot load the Kubernetes configuration from {source}: {error}. Point "
                "yr.Config(kubeconfig=...) or $KUBECONFIG at a valid kubeconfig"
            ) from None
    else:
        k8s_config.load_incluster_config(client_configuration=configuration)
    return k8s.ApiClient(configuration)


def check_api(custom: k8s.CustomObjectsApi, namespace: str, *, source: str) -> None:
    """Reach the API server and the YRInstance resource before creating anything."""
    host = custom.api_client.configuration.host
    try:
        api.call(
            custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            limit=1,
            budget_s=10.0,
            _request_timeout=10,
        )
    except api.NotFound:
        raise YRError(
            "the YRInstance CRD is not installed in this cluster: helm install yr charts/yr "
            f"(docs/quickstart-kubernetes.md); API server {host} from {source}"
        ) from None
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise YRError(
            f"cannot reach the Kubernetes API server at {host} (from {source}): {root_cause(error)}"
        ) from None


def root_cause(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    return str(reason or error)


def gateway_server(core: k8s.CoreV1Api, namespace: str) -> PinnedServer:
    """The gateway's certificate, from the Secret the chart made for it (the driver's own
    kubeconfig reads it), so the driver pins the gateway as instances pin the session."""
    try:
        secret = api.call(
            core.read_namespaced_secret, c.GATEWAY_TLS_SECRET, namespace, budget_s=10.0
        )
        certificate = base64.b64decode((secret.data or {})[c.TLS_CERT_KEY])
    except (api.KubeApiError, KeyError) as error:
        raise YRError(
            f"cannot read the gateway's certificate (Secret {c.GATEWAY_TLS_SECRET!r}, key "
            f"{c.TLS_CERT_KEY!r}, namespace {namespace!r}): {error}. The chart creates it with "
            "the gateway (helm install yr charts/yr)"
        ) from None
    return PinnedServer(certificate, c.GATEWAY_SERVER_NAME)


def read_file(path: str, *, what: str) -> bytes:
    if not path:
        raise YRError(
            f"{c.ENV_TLS_CERT_FILE} is not set, so this pod cannot pin {what}: its operator "
            "predates session TLS; upgrade the chart to this yr version"
        )
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise YRError(f"cannot read {what} at {path}: {error}") from None
