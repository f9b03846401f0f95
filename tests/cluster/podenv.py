"""How a container becomes a local process: argv, env (fieldRef, secretKeyRef, ...) and volumes.

Volumes that carry files (secret, configMap) are written under the pod's directory; every env
value, command and arg that starts with a volume's mountPath is rewritten to that directory, so
`YR_PAYLOAD_FILE=/var/run/yr/payload/payload` points at a real file. emptyDir volumes are
created but not remapped (the process sees the real path, e.g. /tmp).
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from tests.cluster.auth import kubeconfig_text

Obj = dict[str, Any]
_PYTHONS = re.compile(r"^python(3(\.\d+)?)?$")
# Where a real kubelet mounts the pod's ServiceAccount token, namespace and CA.
SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
API_ACCESS_VOLUME = "kube-api-access"
PODNET = Path(__file__).resolve().parent / "podnet"
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class ConfigError(Exception):
    """The container cannot be created yet (missing Secret, ...); the kubelet keeps retrying."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str]
    cwd: str


def _read(core: CoreV1Api, kind: str, namespace: str, name: str) -> Obj | None:
    reader = core.read_namespaced_secret if kind == "secret" else core.read_namespaced_config_map
    try:
        response = reader(name, namespace, _preload_content=False, _request_timeout=10)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return json.loads(response.data)


def _data(obj: Obj, kind: str) -> dict[str, bytes]:
    if kind == "secret":
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return data


def materialize_volumes(core: CoreV1Api, pod: Obj, volumes_dir: Path) -> dict[str, Path]:
    """Write the pod's secret/configMap volumes; return volume name -> host directory."""
    namespace = pod["metadata"]["namespace"]
    result: dict[str, Path] = {}
    for volume in pod["spec"].get("volumes") or []:
        target = volumes_dir / volume["name"]
        for kind, field, name_key in (
            ("secret", "secret", "secretName"),
            ("configmap", "configMap", "name"),
        ):
            source = volume.get(field)
            if source is None:
                continue
            obj = _read(core, kind, namespace, source.get(name_key, ""))
            if obj is None:
                if source.get("optional"):
                    obj = {}
                else:
                    label = "secret" if kind == "secret" else "configmap"
                    raise ConfigError(
                        "ContainerCreating",
                        f"MountVolume.SetUp failed for volume "
                        f'"{volume["name"]}" : {label} "{source.get(name_key)}" not found',
                    )
            data = _data(obj, kind)
            items = source.get("items") or [{"key": k, "path": k} for k in data]
            target.mkdir(parents=True, exist_ok=True)
            for item in items:
                if item["key"] in data:
                    path = target / item["path"]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.unlink(missing_ok=True)  # a retry may meet a read-only file of ours
                    path.write_bytes(data[item["key"]])
                    path.chmod(item.get("mode", source.get("defaultMode", 0o644)))
            result[volume["name"]] = target
        if "emptyDir" in volume:
            target.mkdir(parents=True, exist_ok=True)
    return result


def mount_service_account(
    core: CoreV1Api, pod: Obj, volumes_dir: Path, server: str, ca_pem: bytes
) -> Path:
    """The pod's API credentials: a token of its ServiceAccount (TokenRequest) as files, and a
    kubeconfig using it; without automount, a kubeconfig with no credentials at all."""
    spec, namespace = pod["spec"], pod["metadata"]["namespace"]
    account = spec.get("serviceAccountName") or "default"
    target = volumes_dir / API_ACCESS_VOLUME
    target.mkdir(parents=True, exist_ok=True)
    token = None
    if spec.get("automountServiceAccountToken", True):
        try:
            granted = core.create_namespaced_service_account_token(
                account, namespace, {"spec": {"expirationSeconds": 3607}}
            )
        except ApiException as error:
            if error.status != 404:
                raise
            raise ConfigError(
                "ContainerCreating",
                f'MountVolume.SetUp failed for volume "{API_ACCESS_VOLUME}" : failed to fetch '
                f'token: serviceaccounts "{account}" not found',
            ) from None
        token = granted.status.token
        (target / "token").write_text(token)
    (target / "namespace").write_text(namespace)
    (target / "ca.crt").write_bytes(ca_pem)
    (target / "kubeconfig").write_text(kubeconfig_text(server, ca_pem, token, namespace))
    return target


def _field_ref(pod: Obj, path: str, pod_ip: str, host_ip: str) -> str:
    meta = pod["metadata"]
    simple = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"],
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return simple[path]
    match = re.match(r"^metadata\.(labels|annotations)\['(.+)'\]$", path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    raise ConfigError("CreateContainerConfigError", f"unsupported fieldRef {path!r}")


def _resource_ref(container: Obj, ref: Obj) -> str:
    kind, _, name = ref["resource"].partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name) or (resources.get("requests") or {}).get(name)
    if value is None:
        return "0"
    divisor = parse_quantity(ref.get("divisor", "1"))
    return str(math.ceil(parse_quantity(value) / divisor))


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined variables expand, $$ escapes, others stay."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(sub, text)


def _key_ref(core: CoreV1Api, namespace: str, ref: Obj, kind: str) -> str | None:
    obj = _read(core, kind, namespace, ref["name"])
    data = _data(obj, kind) if obj is not None else {}
    if ref["key"] not in data:
        if ref.get("optional"):
            return None
        what = "secret" if kind == "secret" else "configmap"
        problem = (
            f'{what} "{ref["name"]}" not found'
            if obj is None
            else (
                f"couldn't find key {ref['key']} in {'Secret' if kind == 'secret' else 'ConfigMap'}"
                f" {namespace}/{ref['name']}"
            )
        )
        raise ConfigError("CreateContainerConfigError", problem)
    return data[ref["key"]].decode()


def container_env(core: CoreV1Api, pod: Obj, container: Obj, pod_ip: str, host_ip: str):
    """The variables the pod spec defines for a container, in Kubernetes' order."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        kind = "secret" if "secretRef" in source else "configmap"
        ref = source.get("secretRef") or source.get("configMapRef") or {}
        obj = _read(core, kind, namespace, ref.get("name", ""))
        if obj is None and not ref.get("optional"):
            raise ConfigError("CreateContainerConfigError", f'{kind} "{ref.get("name")}" not found')
        for key, value in (_data(obj, kind) if obj else {}).items():
            env[source.get("prefix", "") + key] = value.decode()
    for var in container.get("env") or []:
        source = var.get("valueFrom")
        if source is None:
            env[var["name"]] = expand(var.get("value", ""), env)
        elif "fieldRef" in source:
            env[var["name"]] = _field_ref(pod, source["fieldRef"]["fieldPath"], pod_ip, host_ip)
        elif "resourceFieldRef" in source:
            env[var["name"]] = _resource_ref(container, source["resourceFieldRef"])
        else:
            kind = "secret" if "secretKeyRef" in source else "configmap"
            value = _key_ref(
                core, namespace, source.get("secretKeyRef") or source.get("configMapKeyRef"), kind
            )
            if value is not None:
                env[var["name"]] = value
    return env


def remap(text: str, mounts: list[tuple[str, Path]]) -> str:
    """Rewrite a path under a file volume's mountPath to the host directory holding it."""
    for mount_path, host in mounts:
        if text == mount_path or text.startswith(mount_path.rstrip("/") + "/"):
            return str(host) + text[len(mount_path.rstrip("/")) :]
    return text


def resolve_argv0(argv0: str, path: str | None) -> str:
    if _PYTHONS.match(argv0):
        return sys.executable  # the pod runs the interpreter the tests run
    if "/" in argv0:
        return argv0
    found = shutil.which(argv0, path=path)
    if found is None:
        raise FileNotFoundError(f'exec: "{argv0}": executable file not found in $PATH')
    return found


def build_launch(
    core: CoreV1Api,
    pod: Obj,
    container: Obj,
    volumes: dict[str, Path],
    pod_ip: str,
    host_ip: str,
    base_env: dict[str, str],
    default_cwd: str,
) -> Launch:
    """Everything needed to start the container's process (raises ConfigError to retry later)."""
    mounts = sorted(
        (
            (m["mountPath"], volumes[m["name"]] / m.get("subPath", ""))
            for m in container.get("volumeMounts") or []
            if m["name"] in volumes
        ),
        key=lambda m: -len(m[0]),
    )
    if API_ACCESS_VOLUME in volumes:  # every container gets it, as the kubelet mounts it
        mounts.append((SERVICE_ACCOUNT_MOUNT, volumes[API_ACCESS_VOLUME]))
        mounts.sort(key=lambda m: -len(m[0]))
        base_env = {**base_env, "KUBECONFIG": str(volumes[API_ACCESS_VOLUME] / "kubeconfig")}
    spec_env = container_env(core, pod, container, pod_ip, host_ip)
    env = {**base_env, **{k: remap(v, mounts) for k, v in spec_env.items()}}
    words = [
        expand(w, spec_env)
        for w in (container.get("command") or []) + (container.get("args") or [])
    ]
    if not container.get("command"):
        raise ConfigError(
            "CreateContainerError",
            "emulated node: the container has no command (image entrypoints are unknown here)",
        )
    # The pod's own network, as far as Python processes go (see podnet/sitecustomize.py).
    env["EMULATED_POD_IP"] = pod_ip
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PODNET), env.get("PYTHONPATH")) if p)
    argv = [remap(w, mounts) for w in words]
    cwd = remap(container.get("workingDir") or default_cwd, mounts)
    return Launch(argv=argv, env=env, cwd=cwd if os.path.isdir(cwd) else default_cwd)
