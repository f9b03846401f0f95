"""KubernetesRuntime: create YRInstances (and their payload Secrets) and follow their status.

A driver holds a Lease that owns its top-level instances and renews it; the operator deletes an
expired Lease, so a crashed driver's tree is garbage-collected. Inside an instance pod, nested
instances are owned by the creator's Pod, so a restart or deletion of the creator collects them.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Sequence
from typing import Any

import grpc
import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.kube_config import KUBE_CONFIG_DEFAULT_LOCATION

from yr import contract as c
from yr import credentials
from yr.console import notice
from yr.contract import GROUP, PLURAL, VERSION
from yr.errors import DeathInfo, YRError, YRSerializationError
from yr.options import Config
from yr.runtime import node_resources
from yr.runtime.base import ClassInfo, InstanceSpec, ResourceGroupSpec, Runtime, qualified_name
from yr.runtime.kubernetes import api, objects
from yr.runtime.kubernetes.groups import ResourceGroups, check_placement
from yr.runtime.kubernetes.logs import PodLogForwarder
from yr.runtime.kubernetes.watcher import StatusWatcher
from yr.tls import PinnedServer, make_key_pair

logger = logging.getLogger("yr")
LEASE_RENEW_S = max(objects.LEASE_DURATION_S / 3, 0.5)


def _kubeconfig_source(kubeconfig: str = "") -> str:
    """Which configuration _load_config reads: a kubeconfig path, or the pod's account."""
    path = kubeconfig or os.environ.get("KUBECONFIG") or ""
    if path or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return path or os.path.expanduser(KUBE_CONFIG_DEFAULT_LOCATION)
    return "the in-cluster service account"


def _load_config(kubeconfig: str = "") -> k8s.ApiClient:
    """An ApiClient from the kubeconfig (or the pod's service account); a clear YRError when
    there is neither."""
    configuration = k8s.Configuration()
    source = _kubeconfig_source(kubeconfig)
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


def _check_api(custom: k8s.CustomObjectsApi, namespace: str, *, source: str) -> None:
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
            f"cannot reach the Kubernetes API server at {host} (from {source}): "
            f"{_root_cause(error)}"
        ) from None


def _root_cause(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    return str(reason or error)


def _gateway_server(core: k8s.CoreV1Api, namespace: str) -> PinnedServer:
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


def _read_file(path: str, *, what: str) -> bytes:
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


class KubernetesRuntime(Runtime):
    """Instances as YRInstance objects in one namespace, reached over gRPC."""

    def __init__(
        self,
        *,
        api_client: k8s.ApiClient,
        namespace: str,
        session: str,
        token: str,
        owner: dict[str, Any],
        session_server: PinnedServer,
        gateway: str = "",
        gateway_server: PinnedServer | None = None,
        lease_name: str = "",
        log_to_driver: bool = False,
    ) -> None:
        self.session_token = token
        self._session_server = session_server
        self._gateway_server = gateway_server
        self._api_client = api_client
        self._custom = k8s.CustomObjectsApi(api_client)
        self._core = k8s.CoreV1Api(api_client)
        self._coordination = k8s.CoordinationV1Api(api_client)
        self._namespace = namespace
        self._session = session
        self._owner = owner
        self._gateway = gateway
        self._lease_name = lease_name
        self._stopping = threading.Event()
        self._logs = (
            PodLogForwarder(core_api=self._core, namespace=namespace) if log_to_driver else None
        )
        self._watcher = StatusWatcher(
            custom_api=self._custom,
            namespace=namespace,
            session=session,
            address_of=self._address_of,
            open_channel=self.open_channel,
            on_pod_running=self._logs.follow if self._logs else None,
        )
        self._groups = ResourceGroups(api_client=api_client, namespace=namespace, session=session)
        self._renewer: threading.Thread | None = None
        if lease_name:
            self._renewer = threading.Thread(target=self._renew, name="yr-lease", daemon=True)
            self._renewer.start()

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def for_driver(cls, config: Config) -> KubernetesRuntime:
        api_client = _load_config(config.kubeconfig)
        namespace = config.namespace or "default"
        try:
            _check_api(
                k8s.CustomObjectsApi(api_client),
                namespace,
                source=_kubeconfig_source(config.kubeconfig),
            )
        except BaseException:
            api_client.close()
            raise
        session = secrets.token_hex(5)
        token = secrets.token_urlsafe(32)
        server_name = c.session_server_name(session)
        certificate, key = make_key_pair(server_name)
        try:
            gateway_server = (
                _gateway_server(k8s.CoreV1Api(api_client), namespace) if config.gateway else None
            )
        except BaseException:
            api_client.close()
            raise
        coordination = k8s.CoordinationV1Api(api_client)
        holder = f"{socket.gethostname()}/{os.getpid()}"
        try:
            lease = api.call(
                coordination.create_namespaced_lease,
                namespace,
                objects.build_lease(session=session, holder=holder),
            )
        except api.KubeApiError as error:
            raise YRError(
                f"cannot start a yr session in namespace {namespace!r}: creating the driver "
                f"Lease failed: {error}"
            ) from None
        lease_owner = objects.owner_reference(
            api_version="coordination.k8s.io/v1",
            kind="Lease",
            name=lease.metadata.name,
            uid=lease.metadata.uid,
        )
        api.call(
            k8s.CoreV1Api(api_client).create_namespaced_secret,
            namespace,
            objects.build_token_secret(
                session=session, token=token, certificate=certificate, key=key, owner=lease_owner
            ),
        )
        notice(f"yr: kubernetes session {session} in namespace {namespace}")
        return cls(
            api_client=api_client,
            namespace=namespace,
            session=session,
            token=token,
            owner=lease_owner,
            session_server=PinnedServer(certificate, server_name),
            gateway=config.gateway,
            gateway_server=gateway_server,
            lease_name=lease.metadata.name,
            log_to_driver=config.log_to_driver,
        )

    @classmethod
    def for_instance(cls) -> KubernetesRuntime:
        env = os.environ
        pod_owner = objects.owner_reference(
            api_version="v1", kind="Pod", name=env[c.ENV_POD_NAME], uid=env[c.ENV_POD_UID]
        )
        return cls(
            api_client=_load_config(),
            namespace=env[c.ENV_NAMESPACE],
            session=env[c.ENV_SESSION],
            token=credentials.session_token(),
            owner=pod_owner,
            session_server=PinnedServer(
                _read_file(env.get(c.ENV_TLS_CERT_FILE, ""), what="the session certificate"),
                c.session_server_name(env[c.ENV_SESSION]),
            ),
        )

    def open_channel(self, address: str, options: Sequence[tuple[str, Any]]) -> grpc.Channel:
        """TLS pinned to the gateway's certificate, or else to the session's: a server at a
        spoofed address fails the handshake before the token is sent."""
        pinned = self._session_server
        if self._gateway_server is not None and address == self._gateway:
            pinned = self._gateway_server
        return pinned.secure_channel(address, list(options))

    # -- the Runtime contract ---------------------------------------------------------------

    def create(self, spec: InstanceSpec, *, owner_id: str | None) -> str:
        if len(spec.payload) > objects.MAX_PAYLOAD_BYTES:
            raise YRSerializationError(
                f"{spec.class_info.short_name}'s class and constructor arguments pickle to "
                f"{len(spec.payload) / 2**20:.1f} MiB, more than the "
                f"{objects.MAX_PAYLOAD_BYTES / 2**20:.2f} MiB a Kubernetes object can hold; "
                "pass large data to a method call instead (calls go over gRPC, not through "
                "the API server)"
            )
        name = f"{objects.dns_label(spec.class_info.short_name)}-{secrets.token_hex(4)}"
        options = spec.options
        if options.resource_group_options.placed:
            group = self._groups.get(options.resource_group_options.resource_group_name)
            check_placement(spec, group)
        if options.name:
            self._check_name_free(options.name, options.namespace)
        self._watcher.track(
            name,
            class_name=spec.class_info.class_name,
            schedule_timeout_s=options.schedule_timeout_ms / 1000,
        )
        body = objects.build_yrinstance(
            name=name,
            session=self._session,
            spec=spec,
            owner=self._owner,
            # In a pod: the tree this pod's instance belongs to; a driver starts new trees.
            root=os.environ.get(c.ENV_ROOT, "") if self._lease_name == "" else "",
        )
        try:
            created = api.call(
                self._custom.create_namespaced_custom_object,
                GROUP,
                VERSION,
                self._namespace,
                PLURAL,
                body,
            )
        except api.KubeApiError as error:
            self._watcher.forget(name, YRError(f"instance {name} was never created"))
            raise YRError(f"the API server refused YRInstance {name}: {error}") from None
        self._watcher.created(name)
        # The payload belongs to its instance, so deleting the instance collects it; its pod
        # waits for the Secret to exist before it starts (as a kubelet waits for a volume).
        instance_owner = objects.owner_reference(
            api_version=c.API_VERSION, kind=c.KIND, name=name, uid=created["metadata"]["uid"]
        )
        secret = objects.build_payload_secret(
            name=name, session=self._session, payload=spec.payload, owner=instance_owner
        )
        try:
            api.call(self._core.create_namespaced_secret, self._namespace, secret)
        except api.KubeApiError as error:
            # An instance without its payload would wait forever: take it back.
            self.terminate(name)
            raise YRError(
                f"the API server refused the payload Secret of instance {name}: {error}"
            ) from None
        return name

    # -- resource groups --------------------------------------------------------------------

    def create_resource_group(self, spec: ResourceGroupSpec, *, owner_id: str | None) -> None:
        # Owned like this process's instances: by the driver's Lease or the creating pod.
        self._groups.create(spec, owner=self._owner)

    def resource_group_admitted(self, name: str) -> concurrent.futures.Future:
        return self._groups.admitted(name)

    def remove_resource_group(self, name: str) -> None:
        self._groups.remove(name)

    def describe_resource_group(self, name: str) -> str:
        return self._groups.describe(name)

    def _named(self, name: str, namespace: str) -> list[dict[str, Any]]:
        """The YRInstances carrying the user's ``InvokeOptions(name=, namespace=)``."""
        selector = f"{c.NAME_LABEL}={objects.name_label(name, namespace)}"
        listing = api.call(
            self._custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self._namespace,
            PLURAL,
            label_selector=selector,
        )
        return list(listing.get("items", []))

    def _check_name_free(self, name: str, namespace: str) -> None:
        if self._named(name, namespace):
            raise ValueError(
                f"an instance named {name!r} already exists in namespace {namespace!r}; "
                f"use yr.get_instance({name!r}) to reach it"
            )

    def _address_of(self, name: str, status: dict[str, Any]) -> str:
        if self._gateway:
            return f"{self._gateway}#{name}"
        return f"{status['podIP']}:{status.get('port') or c.PORT}"

    def endpoint(self, instance_id: str, *, min_incarnation: int = 0) -> concurrent.futures.Future:
        return self._watcher.endpoint(instance_id, min_incarnation)

    def await_death(
        self, instance_id: str, incarnation: int, *, timeout: float
    ) -> DeathInfo | None:
        return self._watcher.await_death(instance_id, incarnation, timeout)

    def terminate(self, instance_id: str, *, wait: bool = False, reason: str = "") -> None:
        try:
            api.call(
                self._custom.delete_namespaced_custom_object,
                GROUP,
                VERSION,
                self._namespace,
                PLURAL,
                instance_id,
                body=k8s.V1DeleteOptions(propagation_policy="Foreground" if wait else "Background"),
            )
        except api.NotFound:
            pass
        except api.KubeApiError as error:
            raise YRError(f"could not delete YRInstance {instance_id}: {error}") from None
        self._watcher.forget(
            instance_id, YRError(f"instance {instance_id} was {reason or 'terminated'}")
        )

    def get_named(self, name: str, namespace: str) -> tuple[str, ClassInfo]:
        found = self._named(name, namespace)
        if not found:
            raise ValueError(f"no instance named {name!r} in namespace {namespace!r}")
        obj = found[0]
        meta = json.loads(obj["metadata"].get("annotations", {}).get(c.METHODS_ANNOTATION, "{}"))
        instance_id = obj["metadata"]["name"]
        self._watcher.track(
            instance_id, class_name=obj["spec"]["className"], schedule_timeout_s=1e9, exists=True
        )
        return instance_id, ClassInfo(obj["spec"]["className"], meta)

    def list_named(self) -> list[str]:
        found = api.call(
            self._custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self._namespace,
            PLURAL,
            label_selector=c.NAME_LABEL,
        ).get("items", [])
        return sorted(
            qualified_name(obj["spec"]["instanceName"], obj["spec"].get("instanceNamespace", ""))
            for obj in found
            if obj["spec"].get("instanceName") and not obj["metadata"].get("deletionTimestamp")
        )

    def resources(self) -> list[dict[str, Any]]:
        nodes = api.call(self._core.list_node).items
        requested = node_resources.pod_requests(self._pods_for_resources())
        return [
            {
                **node_resources.kubernetes_node(node, requested.get(node.metadata.name, {})),
                "node": node.metadata.name,
                "cpu_allocatable": (node.status.allocatable or {}).get("cpu"),
                "memory_allocatable": (node.status.allocatable or {}).get("memory"),
            }
            for node in nodes
        ]

    def _pods_for_resources(self) -> list[Any]:
        """Every pod when the driver may list them; else this namespace's (what yr placed)."""
        try:
            return api.call(self._core.list_pod_for_all_namespaces).items
        except api.Forbidden:
            return api.call(self._core.list_namespaced_pod, self._namespace).items

    def _renew(self) -> None:
        while not self._stopping.wait(LEASE_RENEW_S):
            try:
                api.call(
                    self._coordination.patch_namespaced_lease,
                    self._lease_name,
                    self._namespace,
                    {"spec": {"renewTime": objects.now_microtime()}},
                    budget_s=LEASE_RENEW_S,
                )
            except Exception as error:
                logger.warning("yr: renewing the session lease failed: %s", error)

    def shutdown(self) -> None:
        self._stopping.set()
        self._groups.stop()
        self._watcher.stop()
        if self._logs is not None:
            self._logs.stop()
        if self._lease_name:
            try:  # the garbage collector takes the whole tree with the Lease
                api.call(
                    self._coordination.delete_namespaced_lease,
                    self._lease_name,
                    self._namespace,
                    body=k8s.V1DeleteOptions(propagation_policy="Background"),
                )
            except api.NotFound:
                pass
            except api.KubeApiError as error:
                logger.warning("yr: deleting the session lease failed: %s", error)
        self._api_client.close()
