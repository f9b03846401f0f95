"""User-facing configuration (``Config``, ``InvokeOptions``), validated before anything exists."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

from yr import ignored_options
from yr.resources import check_resource_map

MAX_CPU_MILLICORES = 1_000_000  # 1000 cores: anything above is a typo, not a request
LOW_CPU_MILLICORES = 100  # below this, cpu=2 meant "2 cores" far more often than 2 millicores
_warned_low_cpu = False
MAX_MEMORY_MB = 10_000_000  # about 10 TB
BACKENDS = ("local", "kubernetes")
DEFAULT_SHUTDOWN_GRACE_S = 30.0  # openYuanrong's default graceful shutdown time
LIFETIMES = (None, "detached", "non_detached")  # Ray's InvokeOptions.lifetime values
DEFAULT_SCHEDULE_TIMEOUT_MS = 30000  # openYuanrong's default
MAX_SCHEDULE_TIMEOUT_MS = 86_400_000
SCHEDULE_TIMEOUT_ENV = "YR_SCHEDULE_TIMEOUT_MS"


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


def _reject_unknown(cls: type, kwargs: dict[str, Any], ignored: dict[str, Any]) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(kwargs) - known - set(ignored))
    if unknown:
        raise TypeError(
            f"{cls.__name__} got unknown option(s) {', '.join(map(repr, unknown))}; "
            f"known options: {', '.join(sorted(known))}"
        )


class _Checked:
    """Options validated field by field when set, and as a whole when used.

    openYuanrong's idiom is ``opt = InvokeOptions(); opt.cpu = 2000``: a bad value fails at the
    line that sets it, naming the field; ``checked()`` revalidates a copy when the options are
    used, so a dict mutated in place (``opt.env_vars["A"] = 1``) still fails before anything
    is created.
    """

    _owner = ""
    _ignored: dict[str, tuple[Any, str]] = {}

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._ignored:
            ignored_options.warn_once(self._owner, name, self._ignored[name][1])
            self.__dict__[name] = value
            return
        if name not in {f.name for f in dataclasses.fields(self)}:  # type: ignore[arg-type]
            raise AttributeError(
                f"{self._owner} has no option {name!r}; known options: "
                f"{', '.join(sorted(f.name for f in dataclasses.fields(self)))}"  # type: ignore[arg-type]
            )
        self._check_field(name, value)
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # only reached for fields never set: an ignored field reads as openYuanrong's default
        if name in type(self)._ignored:
            return copy.deepcopy(type(self)._ignored[name][0])
        raise AttributeError(f"{type(self).__name__} has no option {name!r}")

    def _check_field(self, name: str, value: Any) -> None:
        raise NotImplementedError

    def _set_all(self, kwargs: dict[str, Any]) -> None:
        _reject_unknown(type(self), kwargs, self._ignored)
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name in kwargs:
                setattr(self, f.name, kwargs[f.name])
            elif f.default_factory is not dataclasses.MISSING:
                object.__setattr__(self, f.name, f.default_factory())
            else:
                object.__setattr__(self, f.name, f.default)
        for name in sorted(set(kwargs) & set(self._ignored)):
            setattr(self, name, kwargs[name])

    def _validate(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            self._check_field(f.name, getattr(self, f.name))

    def checked(self):  # the subclass's own type
        """A validated copy, taken when the options are used: later edits do not leak in."""
        self._validate()
        return copy.deepcopy(self)


@dataclass
class ResourceGroupOptions:
    """Which resource group (and which of its bundles) an instance is placed in.

    openYuanrong's option: an empty ``resource_group_name`` places nowhere special; a
    ``bundle_index`` of -1 lets the runtime pick any bundle with room.
    """

    resource_group_name: str = ""
    bundle_index: int = -1

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        owner = "ResourceGroupOptions"
        if not isinstance(self.resource_group_name, str):
            raise TypeError(
                f"{owner}.resource_group_name must be a str, got {self.resource_group_name!r}"
            )
        if isinstance(self.bundle_index, bool) or not isinstance(self.bundle_index, int):
            raise TypeError(f"{owner}.bundle_index must be an integer, got {self.bundle_index!r}")
        if self.bundle_index < -1:
            raise ValueError(
                f"{owner}.bundle_index must be -1 (any bundle) or a bundle's index, "
                f"got {self.bundle_index}"
            )

    @property
    def placed(self) -> bool:
        return bool(self.resource_group_name)


@dataclass(init=False, eq=True)
class InvokeOptions(_Checked):
    """Resources and behaviour of an instance; cpu in millicores, memory in MB.

    Mutable, as in openYuanrong: ``opt = yr.InvokeOptions(); opt.cpu = 2000``. openYuanrong's
    other documented fields are accepted; those with no effect here warn once.
    """

    _owner = "InvokeOptions"
    _ignored = ignored_options.INVOKE_OPTIONS

    cpu: int = 500
    memory: int = 500
    concurrency: int = 1
    recover_retry_times: int = 0
    name: str = ""
    namespace: str = ""
    schedule_timeout_ms: int = DEFAULT_SCHEDULE_TIMEOUT_MS  # or YR_SCHEDULE_TIMEOUT_MS
    env_vars: dict[str, str] = field(default_factory=dict)
    pod_labels: dict[str, str] = field(default_factory=dict)
    custom_resources: dict[str, float] = field(default_factory=dict)
    custom_extensions: dict[str, str] = field(default_factory=dict)
    runtime_env: dict[str, Any] = field(default_factory=dict)
    need_order: bool = False  # calls from one caller always run in order in yr
    get_if_exists: bool = False  # a name taken: invoke() returns that instance (Ray's option)
    resource_group_options: ResourceGroupOptions = field(default_factory=ResourceGroupOptions)
    # Ray's "detached": owned by no driver or instance (openYuanrong: custom_extensions
    # {"lifecycle": "detached"}); None or "non_detached" is the default, fate-shared lifetime
    lifetime: str | None = None

    def __init__(self, **kwargs: Any) -> None:
        self._set_all(kwargs)
        if "schedule_timeout_ms" not in kwargs:
            object.__setattr__(self, "schedule_timeout_ms", default_schedule_timeout_ms())

    def _check_field(self, name: str, value: Any) -> None:
        owner = "InvokeOptions"
        if name == "cpu":
            _require_int(owner, name, value, minimum=1, maximum=MAX_CPU_MILLICORES)
            if value < LOW_CPU_MILLICORES:
                _warn_low_cpu(value)
        elif name == "memory":
            _require_int(owner, name, value, minimum=1, maximum=MAX_MEMORY_MB)
        elif name == "concurrency":
            _require_int(owner, name, value, minimum=1, maximum=10_000)
        elif name == "recover_retry_times":
            _require_int(owner, name, value, minimum=0, maximum=1_000)
        elif name == "schedule_timeout_ms":
            _require_int(owner, name, value, minimum=1, maximum=MAX_SCHEDULE_TIMEOUT_MS)
        elif name in ("name", "namespace"):
            if not isinstance(value, str):
                raise TypeError(f"{owner}.{name} must be a str, got {value!r}")
        elif name in ("env_vars", "pod_labels"):
            _require_str_map(owner, name, value)
        elif name == "custom_resources":
            check_resource_map(owner, name, value)
        elif name == "custom_extensions":
            _check_extensions(value)
        elif name == "runtime_env":
            _check_runtime_env(value)
        elif name in ("need_order", "get_if_exists") and not isinstance(value, bool):
            raise TypeError(f"{owner}.{name} must be a bool, got {value!r}")
        elif name == "resource_group_options":
            if not isinstance(value, ResourceGroupOptions):
                raise TypeError(
                    f"{owner}.resource_group_options must be a yr.ResourceGroupOptions, "
                    f"got {value!r}"
                )
            value.check()
        elif name == "lifetime" and value not in LIFETIMES:
            raise ValueError(
                f"{owner}.lifetime must be None, 'detached' or 'non_detached', got {value!r}"
            )

    def checked(self) -> InvokeOptions:
        """A validated copy with openYuanrong's indirect settings applied to the real fields:
        ``runtime_env["env_vars"]`` under ``env_vars`` (which wins on a shared key) and
        ``custom_extensions["Concurrency"]`` when ``concurrency`` was left at 1."""
        options: InvokeOptions = super().checked()
        if options.runtime_env.get("env_vars"):
            object.__setattr__(
                options, "env_vars", {**options.runtime_env["env_vars"], **options.env_vars}
            )
        extension = options.custom_extensions.get("Concurrency")
        if extension is not None and options.concurrency == 1:
            object.__setattr__(options, "concurrency", int(extension))
        return options

    @property
    def is_detached(self) -> bool:
        """Ray's ``lifetime="detached"`` or openYuanrong's ``custom_extensions["lifecycle"]``:
        the instance outlives whoever created it, until it is killed."""
        return self.lifetime == "detached" or self.custom_extensions.get("lifecycle") == "detached"

    def shutdown_grace_s(self) -> float:
        """How long ``__yr_shutdown__`` may run: ``GRACEFUL_SHUTDOWN_TIME`` (a negative value
        means the default), else openYuanrong's default of 30 s."""
        raw = self.custom_extensions.get("GRACEFUL_SHUTDOWN_TIME")
        if raw is None or int(raw) < 0:
            return DEFAULT_SHUTDOWN_GRACE_S
        return float(raw)

    def merged(self, **changes: Any) -> InvokeOptions:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values.update(changes)
        return InvokeOptions(**values)


def _check_extensions(value: Any) -> None:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TypeError(
            f"InvokeOptions.custom_extensions must be a dict of str to str, got {value!r}"
        )
    concurrency = value.get("Concurrency")
    if concurrency is not None and (not concurrency.isdigit() or not 1 <= int(concurrency) <= 1000):
        raise ValueError(
            "InvokeOptions.custom_extensions['Concurrency'] must be an integer between 1 and "
            f"1000, got {concurrency!r}"
        )
    grace = value.get("GRACEFUL_SHUTDOWN_TIME")
    if grace is not None and not grace.lstrip("-").isdigit():
        raise ValueError(
            "InvokeOptions.custom_extensions['GRACEFUL_SHUTDOWN_TIME'] must be a whole number "
            f"of seconds, got {grace!r}"
        )
    lifecycle = value.get("lifecycle")
    if lifecycle is not None and lifecycle != "detached":
        raise ValueError(
            "InvokeOptions.custom_extensions['lifecycle'] can only be 'detached', got "
            f"{lifecycle!r}"
        )
    for key in sorted(set(value) - set(ignored_options.HONOURED_EXTENSIONS)):
        ignored_options.warn_once(
            "InvokeOptions",
            f"custom_extensions[{key!r}]",
            "yr acts only on 'Concurrency', 'GRACEFUL_SHUTDOWN_TIME' and 'lifecycle' there",
        )


def _check_runtime_env(value: Any) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise TypeError(f"InvokeOptions.runtime_env must be a dict with str keys, got {value!r}")
    if "env_vars" in value:
        _require_str_map("InvokeOptions", "runtime_env['env_vars']", value["env_vars"])
    for key in sorted(set(value) - set(ignored_options.RUNTIME_ENV_KEYS)):
        ignored_options.warn_once(
            "InvokeOptions",
            f"runtime_env[{key!r}]",
            "yr runs instances in the driver's environment (its image on Kubernetes); only "
            "'env_vars' is applied",
        )


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


def env_seconds(name: str, default: float) -> float:
    """A number of seconds (> 0, finite) from the environment variable ``name``, or ``default``
    when it is unset or empty; anything else is refused, naming the variable."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < math.inf:
        raise ValueError(f"{name}={raw!r} is not a number of seconds (> 0)")
    return seconds


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def default_schedule_timeout_ms() -> int:
    """``schedule_timeout_ms`` of options that leave it unset: ``YR_SCHEDULE_TIMEOUT_MS`` when
    set (read where the options are made, so a script's classes take the driver's), else 30 s."""
    value = _env_int(SCHEDULE_TIMEOUT_ENV)
    if value is None:
        return DEFAULT_SCHEDULE_TIMEOUT_MS
    if not 1 <= value <= MAX_SCHEDULE_TIMEOUT_MS:
        raise ValueError(
            f"environment variable {SCHEDULE_TIMEOUT_ENV} must be between 1 and "
            f"{MAX_SCHEDULE_TIMEOUT_MS} (milliseconds), got {value}"
        )
    return value


@dataclass(init=False, eq=True)
class Config(_Checked):
    """How ``yr.init`` connects: the local runtime (default) or a Kubernetes namespace.

    ``num_cpus`` is the local runtime's logical capacity in whole CPUs (``YR_NUM_CPUS``);
    ``backend`` and ``namespace`` default to ``YR_BACKEND`` and ``YR_NAMESPACE``.
    ``local_mode=True`` (openYuanrong) means the local runtime; ``log_level`` sets the level of
    the ``yr`` logger. openYuanrong's other documented fields are accepted and warn once.
    """

    _owner = "Config"
    _ignored = ignored_options.CONFIG

    num_cpus: int | None = None
    backend: str = ""
    namespace: str = ""
    kubeconfig: str = ""
    gateway: str = ""
    log_to_driver: bool = True
    local_mode: bool = False
    log_level: str | int = ""
    resources: dict[str, float] = field(default_factory=dict)  # custom resources of this machine

    def __init__(self, **kwargs: Any) -> None:
        self._set_all(kwargs)
        if self.num_cpus is None:
            self.num_cpus = _env_int("YR_NUM_CPUS")
        if self.local_mode and not self.backend:
            self.backend = "local"
        if not self.backend:
            self.backend = os.environ.get("YR_BACKEND", "local") or "local"
        if not self.namespace:
            self.namespace = os.environ.get("YR_NAMESPACE", "")
        if not self.gateway:
            self.gateway = os.environ.get("YR_GATEWAY", "")
        self._validate()

    def _check_field(self, name: str, value: Any) -> None:
        if name == "num_cpus":
            if value is not None:
                _require_int("Config", name, value, minimum=1, maximum=100_000)
        elif name == "backend":
            if value and value not in BACKENDS:  # "" until __init__ applies the default
                raise ValueError(
                    f"Config.backend must be one of {', '.join(BACKENDS)}, got {value!r}"
                )
        elif name in ("namespace", "kubeconfig", "gateway"):
            if not isinstance(value, str):
                raise TypeError(f"Config.{name} must be a str, got {value!r}")
        elif name in ("log_to_driver", "local_mode"):
            if not isinstance(value, bool):
                raise TypeError(f"Config.{name} must be a bool, got {value!r}")
        elif name == "log_level":
            _check_log_level(value)
        elif name == "resources":
            check_resource_map("Config", name, value)

    def _validate(self) -> None:
        super()._validate()
        if not self.backend:
            raise ValueError(f"Config.backend must be one of {', '.join(BACKENDS)}, got ''")
        if self.local_mode and self.backend != "local":
            raise ValueError(
                f"Config.local_mode=True runs on the local runtime, but Config.backend is "
                f"{self.backend!r}; set one or the other"
            )


def _check_log_level(value: Any) -> None:
    if value == "" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return
    if isinstance(value, str) and value.upper() in ("ERROR", "WARNING", "INFO", "DEBUG"):
        return
    raise ValueError(
        f"Config.log_level must be one of ERROR, WARNING, INFO, DEBUG or a logging level "
        f"number, got {value!r}"
    )
