"""The process-wide yr session: which runtime serves this process, created by ``init``."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import uuid
from dataclasses import dataclass

from yr.call_failures import death_report_timeout_s
from yr.client import CallClient
from yr.errors import YRError, YRNotInitializedError
from yr.localcall import colocation, spinning
from yr.options import Config
from yr.runtime.base import Runtime

logger = logging.getLogger("yr")


@dataclass
class Session:
    runtime: Runtime
    client: CallClient
    owner_id: str | None  # the instance this process serves; None in a driver
    is_driver: bool


_lock = threading.RLock()
_session: Session | None = None
_finalized = False
_instance_id: str | None = None  # set in instance processes before any user code runs
_exit_hook_registered = False


def init(conf: Config | None = None) -> None:
    """Start (or connect to) the runtime; everything else in yr needs this first.

    Inside an instance it joins the instance's session (its driver's runtime) and ignores
    ``conf``: the driver decided the capacity.
    """
    global _session, _finalized
    if conf is not None and not isinstance(conf, Config):
        raise TypeError(f"yr.init() takes a yr.Config, got {type(conf).__name__}")
    with _lock:
        if _instance_id is not None:
            # Inside an instance there is one session, its driver's: join it rather than
            # start a second runtime with a CPU budget of its own.
            current()
            return
        if _session is not None:
            where = "an instance" if not _session.is_driver else "this process"
            raise YRError(
                f"yr.init() was already called in {where}; call yr.finalize() before "
                "initializing again"
            )
        config = conf.checked() if conf is not None else Config()
        if config.log_level != "":
            level = config.log_level
            logger.setLevel(level.upper() if isinstance(level, str) else level)
        death_report_timeout_s()  # bad settings fail before anything starts
        colocation.configure_from_environment()
        spinning.configure_from_environment()
        runtime = _driver_runtime(config)
        _session = Session(
            runtime=runtime,
            client=CallClient(runtime, caller_id=_caller_id()),
            owner_id=None,
            is_driver=True,
        )
        _finalized = False
    _finalize_before_threads_are_joined()


def _finalize_before_threads_are_joined() -> None:
    """At interpreter exit, end the session before Python joins non-daemon threads.

    ``atexit`` runs only after that join, and ``concurrent.futures`` joins its workers (a
    call waiting for its reply among them) there: the driver would wait for every running
    call to finish. Threading's own exit hooks run first, latest registered first.
    """
    global _exit_hook_registered
    if _exit_hook_registered:
        return
    _exit_hook_registered = True
    try:
        threading._register_atexit(_finalize_at_exit)  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # another Python, or already shutting down
        atexit.register(_finalize_at_exit)


def _driver_runtime(config: Config) -> Runtime:
    if config.backend == "kubernetes":
        from yr.runtime.kubernetes.runtime import KubernetesRuntime

        return KubernetesRuntime.for_driver(config)
    from yr import local_keeper
    from yr.runtime.local.runtime import LocalRuntime

    return LocalRuntime.start(config, connect_keeper=local_keeper.connect)


def attach_instance(*, instance_id: str) -> None:
    """Mark this process as serving ``instance_id``; its runtime connects on first use."""
    global _instance_id
    _instance_id = instance_id


def _instance_runtime() -> Runtime:
    if os.environ.get("YR_CONTROL_ADDRESS"):
        from yr.runtime.remote import RemoteRuntime

        return RemoteRuntime.from_environment()
    from yr.runtime.kubernetes.runtime import KubernetesRuntime

    return KubernetesRuntime.for_instance()


def current() -> Session:
    """The session of this process, connecting an instance process lazily."""
    global _session
    session = _session
    if session is not None:
        return session
    with _lock:
        if _session is not None:
            return _session
        if _instance_id is not None:
            runtime = _instance_runtime()
            _session = Session(
                runtime=runtime,
                client=CallClient(runtime, caller_id=_caller_id()),
                owner_id=_instance_id,
                is_driver=False,
            )
            return _session
        if _finalized:
            raise YRNotInitializedError(
                "yr was finalized: yr.finalize() ended the session; call yr.init() again to "
                "start a new one"
            )
        raise YRNotInitializedError("yr is not initialized: call yr.init() first")


def is_initialized() -> bool:
    return _session is not None or _instance_id is not None


def finalize() -> None:
    """Terminate every instance this driver created and stop its runtime."""
    global _session, _finalized
    with _lock:
        session, _session = _session, None
        if session is None:
            return
        _finalized = True
    try:
        session.client.close()
    finally:
        session.runtime.shutdown()


def _finalize_at_exit() -> None:
    try:
        finalize()
    except Exception:
        logger.exception("yr: finalize at exit failed")


def _caller_id() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
