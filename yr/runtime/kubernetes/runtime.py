"""KubernetesRuntime: create YRInstances (and their payload Secrets) and follow their status.

A driver holds a Lease that owns its top-level instances and renews it; the operator deletes an
expired Lease, so a crashed driver's tree is garbage-collected. Inside an instance pod, nested
instances are owned by the creator's Pod, so a restart or deletion of the creator collects them.
A detached instance is owned by nothing and runs in a session of its own (see sessions.py).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import os
import secrets
import socket
import sys
from collections.abc import Sequence
from typing import Any

import grpc
from kubernetes import client as k8s

from yr import contract as c
from yr import credentials
from yr.console import notice
from yr.contract import GROUP, PLURAL, VERSION
from yr.errors import DeathInfo, YRError, YRSerializationError
from yr.options import Config
from yr.runtime import node_resources
from yr.runtime.base import ClassInfo, InstanceSpec, ResourceGroupSpec, Runtime, qualified_name
from yr.runtime.kubernetes import api, connect, objects
from yr.runtime.kubernetes.connect import load_config as _load_config  # noqa: F401 (yr.cli, yr.gateway)
from yr.runtime.kubernetes.groups import ResourceGroups, check_placement
from yr.runtime.kubernetes.lease import LeaseRenewer
from yr.runtime.kubernetes.logs import PodLogForwarder
from yr.runtime.kubernetes.sessions import (
    OtherSessions,
    SessionKeys,
    new_session_keys,
    read_session_keys,
)
from yr.runtime.kubernetes.watcher import StatusWatcher
from yr.tls import PinnedServer, make_key_pair

logger = logging.getLogger("yr")


def _session_secret(keys: SessionKeys, *, owner: dict[str, Any]) -> dict[str, Any]:
    return objects.build_token_secret(
        session=keys.session,
        token=keys.token,
        certificate=keys.server.certificate,
        key=keys.key,
        owner=owner,
    )


class KubernetesRuntime(Runtime):
    """Instances as YRInstance objects in one namespace, reached over gRPC."""

    supports_detached = True

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
        lease_duration_s: int = 0,
        log_to_driver: bool = False,
    ) -> None:
        self.session_token = token
        self._session_server = session_server
        self.gateway_server = gateway_server
        self._api_client = api_client
        self._custom = k8s.CustomObjectsApi(api_client)
        self._core = k8s.CoreV1Api(api_client)
        self._coordination = k8s.CoordinationV1Api(api_client)
        self._namespace = namespace
        self._session = session
        self._owner = owner
        self._gateway = gateway
        self._lease_name = lease_name
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
        # Detached instances (and those another driver left) live in sessions of their own.
        self._others = OtherSessions(self._watch_other_session)
        self._session_of: dict[str, str] = {}  # instance -> its session, when not ours
        self._groups = ResourceGroups(api_client=api_client, namespace=namespace, session=session)
        self._renewer = (
            LeaseRenewer(
                api_client=api_client,
                namespace=namespace,
                name=lease_name,
                duration_s=lease_duration_s,
            ).start()
            if lease_name
            else None
        )

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def for_driver(cls, config: Config) -> KubernetesRuntime:
        lease_duration_s = objects.lease_duration_seconds()
        api_client = connect.load_config(config.kubeconfig)
        namespace = config.namespace or "default"
        try:
            connect.check_api(
                k8s.CustomObjectsApi(api_client),
                namespace,
                source=connect.kubeconfig_source(config.kubeconfig),
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
                connect.gateway_server(k8s.CoreV1Api(api_client), namespace)
                if config.gateway
                else None
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
                objects.build_lease(session=session, holder=holder, duration_s=lease_duration_s),
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
            lease_duration_s=lease_duration_s,
            log_to_driver=config.log_to_driver,
        )

    @classmethod
    def for_instance(cls) -> KubernetesRuntime:
        env = os.environ
        pod_owner = objects.owner_reference(
            api_version="v1", kind="Pod", name=env[c.ENV_POD_NAME], uid=env[c.ENV_POD_UID]
        )
        return cls(
            api_client=connect.load_config(),
            namespace=env[c.ENV_NAMESPACE],
            session=env[c.ENV_SESSION],
            token=credentials.session_token(),
            owner=pod_owner,
            session_server=PinnedServer(
                connect.read_file(env.get(c.ENV_TLS_CERT_FILE, ""), what="the session certificate"),
                c.session_server_name(env[c.ENV_SESSION]),
            ),
        )

    def open_channel(
        self, address: str, options: Sequence[tuple[str, Any]], *, session: str = ""
    ) -> grpc.Channel:
        """TLS pinned to the gateway's certificate, or else to the session's: a server at a
        spoofed address fails the handshake before the token is sent."""
        pinned = self._others.keys(session).server if session else self._session_server
        if self.gateway_server is not None and address == self._gateway:
            pinned = self.gateway_server
        return pinned.secure_channel(address, list(options))

    def session_token_of(self, session: str) -> str:
        return self._others.keys(session).token if session else self.session_token

    def _watch_other_session(self, session: str) -> StatusWatcher:
        return StatusWatcher(
            custom_api=self._custom,
            namespace=self._namespace,
            session=session,
            address_of=self._address_of,
            open_channel=lambda address, options: self.open_channel(
                address, options, session=session
            ),
            on_pod_running=self._logs.follow if self._logs else None,
            other_session=True,
        )

    def _watcher_of(self, instance_id: str) -> StatusWatcher:
        session = self._session_of.get(instance_id)
        watcher = self._others.watcher(session) if session else None
        return watcher or self._watcher

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
        keys = new_session_keys() if options.is_detached else None
        watcher = self._watcher
        if keys is not None:
            watcher = self._others.add(keys)
            self._session_of[name] = keys.session
        watcher.track(
            name,
            class_name=spec.class_info.class_name,
            schedule_timeout_s=options.schedule_timeout_ms / 1000,
        )
        body = objects.build_yrinstance(
            name=name,
            session=keys.session if keys else self._session,
            spec=spec,
            owner=None if keys else self._owner,
            # In a pod: the tree this pod's instance belongs to; a driver starts new trees.
            root=os.environ.get(c.ENV_ROOT, "") if self._lease_name == "" and not keys else "",
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
            watcher.forget(name, YRError(f"instance {name} was never created"))
            raise YRError(f"the API server refused YRInstance {name}: {error}") from None
        watcher.created(name)
        # The payload belongs to its instance, so deleting the instance collects it; its pod
        # waits for the Secret to exist before it starts (as a kubelet waits for a volume).
        instance_owner = objects.owner_reference(
            api_version=c.API_VERSION, kind=c.KIND, name=name, uid=created["metadata"]["uid"]
        )
        secrets_to_create = [
            objects.build_payload_secret(
                name=name,
                session=body["spec"]["session"],
                payload=spec.payload,
                owner=instance_owner,
            )
        ]
        if (
            keys is not None
        ):  # a detached instance's session Secret is its own, so is killed with it
            secrets_to_create.insert(0, _session_secret(keys, owner=instance_owner))
        try:
            for secret in secrets_to_create:
                api.call(self._core.create_namespaced_secret, self._namespace, secret)
        except api.KubeApiError as error:
            # An instance without its payload would wait forever: take it back.
            self.terminate(name)
            raise YRError(f"the API server refused a Secret of instance {name}: {error}") from None
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
        return self._watcher_of(instance_id).endpoint(instance_id, min_incarnation)

    def await_death(
        self, instance_id: str, incarnation: int, *, timeout: float
    ) -> DeathInfo | None:
        return self._watcher_of(instance_id).await_death(instance_id, incarnation, timeout)

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
        self._watcher_of(instance_id).forget(
            instance_id, YRError(f"instance {instance_id} was {reason or 'terminated'}")
        )

    def end_self(self, instance_id: str, *, reason: str) -> None:
        """``yr.exit()`` in a pod: exit with the contract's code; the operator records why
        (this pod may not write its own YRInstance) and deletes the YRInstance."""
        try:  # for kubectl describe pod; the exit code is what the operator reads
            with open(c.TERMINATION_LOG, "w") as log:
                log.write(reason)
        except OSError:
            pass
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(c.EXIT_CODE_SELF)

    def get_named(self, name: str, namespace: str) -> tuple[str, ClassInfo]:
        found = self._named(name, namespace)
        if not found:
            raise ValueError(f"no instance named {name!r} in namespace {namespace!r}")
        obj = found[0]
        meta = json.loads(obj["metadata"].get("annotations", {}).get(c.METHODS_ANNOTATION, "{}"))
        instance_id = obj["metadata"]["name"]
        watcher = self._watcher
        session = obj["spec"].get("session") or self._session
        if session != self._session:  # detached, or another driver's: its own credentials
            watcher = self._others.watcher(session) or self._others.add(
                read_session_keys(self._core, self._namespace, session, instance=instance_id)
            )
            self._session_of[instance_id] = session
        watcher.track(
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

    def shutdown(self) -> None:
        if self._renewer is not None:
            self._renewer.stop()
        self._groups.stop()
        self._watcher.stop()
        self._others.stop()
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
