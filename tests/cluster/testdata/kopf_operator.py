"""A tiny kopf operator for the cluster tests: widgets get a status, deletions leave a ConfigMap."""

import kopf
from kubernetes import client, config

WIDGETS = ("test.yr.dev", "v1", "widgets")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_) -> None:
    settings.watching.server_timeout = 30


@kopf.on.create(*WIDGETS)
def created(spec, patch, **_) -> None:
    patch.status["phase"] = "Seen"
    patch.status["size"] = spec["size"]


@kopf.on.update(*WIDGETS, field="spec.size")
def resized(new, patch, **_) -> None:
    patch.status["size"] = new


@kopf.on.delete(*WIDGETS)
def deleted(name, namespace, **_) -> None:
    config.load_kube_config()
    with client.ApiClient() as api:
        body = {"metadata": {"name": f"deleted-{name}"}}
        client.CoreV1Api(api).create_namespaced_config_map(namespace, body)
