"""openYuanrong's documented options that mean nothing in yr: accepted, each warned about once.

Code ported from openYuanrong sets them; a ``TypeError`` on otherwise good code would stop the
port at its first line, so yr keeps the value, says once why it has no effect, and goes on.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any


class IgnoredOptionWarning(UserWarning):
    """An openYuanrong option was set that yr accepts but does not act on."""


_CLUSTER = "yr reaches its cluster through Config.backend/kubeconfig/gateway, not an address"
_DATA_SYSTEM = "yr has no separate data system: values travel with calls or in shared memory"
_TLS = "yr's channels are set up by the runtime (session credentials, the chart's certificates)"
_LOGS = "yr logs through Python's logging (logger 'yr') and forwards instance output"
_SCHEDULING = "the local runtime has one node and Kubernetes schedules pods itself"
_FAAS = "yr has no function service: code travels pickled with each instance"

# field -> (default openYuanrong documents, why it has no effect here)
INVOKE_OPTIONS: dict[str, tuple[Any, str]] = {
    "labels": ([], _SCHEDULING),
    "affinity": ({}, _SCHEDULING),
    "schedule_affinities": ([], _SCHEDULING),
    "is_data_affinity": (False, _SCHEDULING),
    "preferred_priority": (True, _SCHEDULING),
    "required_priority": (False, _SCHEDULING),
    "preferred_anti_other_labels": (False, _SCHEDULING),
    "function_group_options": (None, "yr has no function groups; create the instances yourself"),
    "group_name": ("", "yr has no instance groups; create the instances yourself"),
    "device": (None, "yr schedules no heterogeneous devices; use custom_resources"),
    "max_invoke_latency": (5000, "yr schedules no heterogeneous devices"),
    "min_instances": (0, "yr keeps no pool bounds for stateless functions"),
    "max_instances": (0, "yr keeps no pool bounds for stateless functions"),
    "retry_times": (0, "yr does not retry calls: a retried call could run twice"),
    "trace_id": ("", "yr does not trace calls"),
    "alias_params": ({}, _FAAS),
    "preempted_allowed": (False, "yr has no instance priorities or preemption"),
    "instance_priority": (0, "yr has no instance priorities or preemption"),
    "is_delete_remote_tensor": (False, _DATA_SYSTEM),
}

CONFIG: dict[str, tuple[Any, str]] = {
    "function_id": ("", _FAAS),
    "cpp_function_id": ("", _FAAS),
    "cpp_auto_function_name": ("", _FAAS),
    "function_name": ("", _FAAS),
    "server_address": ("", _CLUSTER),
    "ds_address": ("", _DATA_SYSTEM),
    "master_addr_list": ([], _CLUSTER),
    "rt_server_address": ("", _CLUSTER),
    "server_name": ("", _CLUSTER),
    "in_cluster": (True, _CLUSTER),
    "is_driver": (True, "yr knows by itself whether it runs in a driver or an instance"),
    "invoke_timeout": (900, "yr.get(timeout=) bounds each wait instead"),
    "rpc_timeout": (1800, "yr.get(timeout=) bounds each wait instead"),
    "code_dir": ("", _FAAS),
    "load_paths": ([], _FAAS),
    "working_dir": ("", _FAAS),
    "connection_nums": (100, "yr keeps one gRPC channel per instance"),
    "http_ioc_threads_num": (400, "yr keeps one gRPC channel per instance"),
    "recycle_time": (2, "yr recycles nothing by time: instances live until terminated"),
    "max_task_instance_num": (-1, "yr keeps no pool bounds for stateless functions"),
    "job_id": ("", "yr names each driver's session itself"),
    "runtime_id": ("driver", "yr knows by itself whether it runs in a driver or an instance"),
    "tenant_id": ("", "yr has no tenants: a Kubernetes namespace isolates users"),
    "ns": ("", "yr has no tenants: a Kubernetes namespace isolates users (Config.namespace)"),
    "tls_config": (None, _TLS),
    "enable_mtls": (False, _TLS),
    "private_key_path": ("", _TLS),
    "certificate_file_path": ("", _TLS),
    "verify_file_path": ("", _TLS),
    "private_key_paaswd": ("", _TLS),
    "enable_ds_encrypt": (False, _DATA_SYSTEM),
    "ds_public_key_path": ("", _DATA_SYSTEM),
    "runtime_public_key_path": ("", _DATA_SYSTEM),
    "runtime_private_key_path": ("", _DATA_SYSTEM),
    "auto": (False, "yr.init starts the local runtime itself; Kubernetes is installed with helm"),
    "deployment_config": (None, "yr.init starts the local runtime itself"),
    "log_dir": ("./", _LOGS),
    "log_file_size_max": (0, _LOGS),
    "log_file_num_max": (0, _LOGS),
    "log_flush_interval": (5, _LOGS),
    "dedup_logs": (True, _LOGS),
    "enable_metrics": (True, "yr exports no per-call metrics"),
    "custom_envs": ({}, "set InvokeOptions.env_vars on the instances instead"),
    "runtime_env": (None, "set InvokeOptions.runtime_env / env_vars on the instances instead"),
}

# custom_extensions keys yr acts on; every other key is warned about
HONOURED_EXTENSIONS = ("Concurrency", "GRACEFUL_SHUTDOWN_TIME", "lifecycle")
RUNTIME_ENV_KEYS = ("env_vars",)  # runtime_env keys yr acts on

_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_once(owner: str, field: str, why: str) -> None:
    """Warn the first time ``owner.field`` is set in this process."""
    key = f"{owner}.{field}"
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(
        f"{key} has no effect in yr: {why}. It is accepted so openYuanrong code runs unchanged",
        IgnoredOptionWarning,
        stacklevel=4,
    )


def forget_warnings() -> None:
    """Tests: warn again for fields already warned about."""
    with _warned_lock:
        _warned.clear()
