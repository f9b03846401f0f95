"""User-facing configuration (``Config``, ``InvokeOptions``), validated before anything exists."""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

from yr.resources import check_resource_map

MAX_CPU_MILLICORES = 1_000_000  # 1000 cores: anything above is a typo, not a request
LOW_CPU_MILLICORES = 100  # below this, cpu=2 meant "2 cores" far more often than 2 millicores
_warned_low_cpu = False
MAX_MEMORY_MB = 10_000_000  # about 10 TB
BACKENDS = ("local", "kubernetes")


def _require_int(owner: str, name: str, value: Any, *, minimum: int, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}.{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum or value > maximum:
        raise ValueError(f"{owner}.{name} must be between {minimum} and {maximum}, got {value}")


def _require_str_map(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TypeError(f"{owner}.{name} must be a dict of str to str, got {value!r}")


def _reject_unknown(cls: type, kwargs: dict[str, Any]) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(
            f"{cls.__name__} got unknown option(s) {', '.join(map(repr, unknown))}; "
            f"known options: {', '.join(sorted(known))}"
        )


@dataclass(frozen=True, init=False)
class InvokeOptions:
    """Resources and behaviour of an instance; cpu in millicores, memory in MB."""

    cpu: int = 500
    memory: int = 500
    concurrency: int = 1
    recover_retry_times: int = 0
    name: str = ""
    namespace: str = ""
    schedule_timeout_ms: int = 30000
    env_vars: dict[str, str] = field(default_factory=dict)
    pod_labels: dict[str, str] = field(default_factory=dict)
    custom_resources: dict[str, float] = field(default_factory=dict)

    def __init__(self, **kwargs: Any) -> None:
        _reject_unknown(InvokeOptions, kwargs)
        for f in dataclasses.fields(self):
            if f.name in kwargs:
                value = kwargs[f.name]
            elif f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
            else:
                value = f.default
            object.__setattr__(self, f.name, value)
        self._validate()

    def _validate(self) -> None:
        owner = "InvokeOptions"
        _require_int(owner, "cpu", self.cpu, minimum=1, maximum=MAX_CPU_MILLICORES)
        if self.cpu < LOW_CPU_MILLICORES:
            _warn_low_cpu(self.cpu)
        _require_int(owner, "memory", self.memory, minimum=1, maximum=MAX_MEMORY_MB)
        _require_int(owner, "concurrency", self.concurrency, minimum=1, maximum=10_000)
        _require_int(
            owner, "recover_retry_times", self.recover_retry_times, minimum=0, maximum=1_000
        )
        _require_int(
            owner, "schedule_timeout_ms", self.schedule_timeout_ms, minimum=1, maximum=86_400_000
        )
        for name in ("name", "namespace"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{owner}.{name} must be a str, got {getattr(self, name)!r}")
        _require_str_map(owner, "env_vars", self.env_vars)
        _require_str_map(owner, "pod_labels", self.pod_labels)
        check_resource_map(owner, "custom_resources", self.custom_resources)

    def merged(self, **changes: Any) -> InvokeOptions:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values.update(changes)
        return InvokeOptions(**values)


def _warn_low_cpu(cpu: int) -> None:
    """Once per process; silence it with ``warnings.filterwarnings("ignore", category=...)``."""
    global _warned_low_cpu
    if _warned_low_cpu:
        return
    _warned_low_cpu = True
    warnings.warn(
        f"InvokeOptions(cpu={cpu}) asks for {cpu} millicores ({cpu / 1000:g} of a CPU); cpu is "
        f"in millicores, so {cpu} cores is cpu={cpu * 1000}. Below {LOW_CPU_MILLICORES}m is "
        "almost always a unit mistake",
        LowCPUWarning,
        stacklevel=4,
    )


class LowCPUWarning(UserWarning):
    """InvokeOptions.cpu below 100 millicores: probably meant as whole CPUs."""


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


@dataclass(frozen=True, init=False)
class Config:
    """How ``yr.init`` connects: the local runtime (default) or a Kubernetes namespace.

    ``num_cpus`` is the local runtime's logical capacity in whole CPUs (``YR_NUM_CPUS``);
    ``backend`` and ``namespace`` default to ``YR_BACKEND`` and ``YR_NAMESPACE``.
    """

    num_cpus: int | None = None
    backend: str = ""
    namespace: str = ""
    kubeconfig: str = ""
    gateway: str = ""
    log_to_driver: bool = True
    resources: dict[str, float] = field(default_factory=dict)  # custom resources of this machine

    def __init__(self, **kwargs: Any) -> None:
        _reject_unknown(Config, kwargs)
        for f in dataclasses.fields(self):
            default = (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            )
            object.__setattr__(self, f.name, kwargs.get(f.name, default))
        if self.num_cpus is None:
            object.__setattr__(self, "num_cpus", _env_int("YR_NUM_CPUS"))
        if not self.backend:
            object.__setattr__(self, "backend", os.environ.get("YR_BACKEND", "local") or "local")
        if not self.namespace:
            object.__setattr__(self, "namespace", os.environ.get("YR_NAMESPACE", ""))
        if not self.gateway:
            object.__setattr__(self, "gateway", os.environ.get("YR_GATEWAY", ""))
        self._validate()

    def _validate(self) -> None:
        if self.num_cpus is not None:
            _require_int("Config", "num_cpus", self.num_cpus, minimum=1, maximum=100_000)
        check_resource_map("Config", "resources", self.resources)
        if self.backend not in BACKENDS:
            raise ValueError(
                f"Config.backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}"
            )
        for name in ("namespace", "kubeconfig", "gateway"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"Config.{name} must be a str, got {getattr(self, name)!r}")
