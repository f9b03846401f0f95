"""Two threads that take turns run on one CPU while one of them sleeps: a synchronous caller
waiting for its reply, and a serial instance's method thread waiting for that caller's next call.

The kernel wakes a thread on an idle CPU when there is one. For two threads that strictly
alternate that is a cross-CPU wake-up per turn: an interrupt and, on a virtual machine, an idle
vCPU's exit and re-entry. On a 2-vCPU VM a bare Unix-socket ping-pong makes about 24,000 round
trips/s across CPUs and 65,000-88,000 on one. So a thread about to sleep for its partner is
pinned to the partner's CPU, and gets its own affinity back the moment it wakes: no user code,
and no thread it starts, ever runs pinned. ``YR_COLOCATE=0`` turns this off.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
import threading
import time
from collections.abc import Callable

ENVIRONMENT_KEY = "YR_COLOCATE"
CPU = struct.Struct("!H")  # the body of a wire.WAITED frame

_Mask = set[int] | frozenset[int]


def _sched_getcpu() -> Callable[[], int] | None:
    if not hasattr(os, "sched_setaffinity"):
        return None  # not Linux: nothing to pin with
    try:
        getcpu = ctypes.CDLL(None, use_errno=True).sched_getcpu
    except (OSError, AttributeError):
        return None
    getcpu.restype = ctypes.c_int
    getcpu.argtypes = []
    return getcpu  # type: ignore[no-any-return]


_ON, _OFF = ("", "1", "true", "yes", "on"), ("0", "false", "no", "off")


def switch_setting(key: str) -> bool | None:
    """An on/off environment variable as on (the default) or off; None for anything else."""
    value = os.environ.get(key, "1").strip().lower()
    return True if value in _ON else False if value in _OFF else None


def switch_from_environment(key: str, *, turns_off: str) -> bool:
    """Whether the on/off variable ``key`` is on (the default); a value that is neither is
    refused, naming the variable and what 0 is for (``turns_off``)."""
    setting = switch_setting(key)
    if setting is None:
        raise ValueError(
            f"{key}={os.environ[key]!r} is neither on nor off: use 1 (the default) or 0 {turns_off}"
        )
    return setting


def enabled_by_environment() -> bool:
    """Whether ``YR_COLOCATE`` leaves colocation on (the default); a value that is neither
    on nor off is refused, naming the variable (``yr.init`` checks it before anything starts).
    """
    return switch_from_environment(
        ENVIRONMENT_KEY,
        turns_off="to stop pinning a synchronous caller and its instance to one CPU while they "
        "wait for each other",
    )


def configure_from_environment() -> None:
    """Read ``YR_COLOCATE`` again (``yr.init`` does, so a driver's setting holds from its
    ``init`` on); a value that is neither on nor off raises before anything starts."""
    global ENABLED
    ENABLED = _getcpu is not None and enabled_by_environment()


_getcpu = _sched_getcpu()
# An instance reads it on import: it inherits the setting its driver's yr.init() accepted.
ENABLED = _getcpu is not None and switch_setting(ENVIRONMENT_KEY) is not False


# A caller that comes to wait for its call within this long of sending it did next to nothing
# meanwhile: running the instance on its CPU costs it less than a cross-CPU wake-up each way
# (tens of microseconds on a VM). One that works longer keeps the instance off its CPU, so the
# call runs beside its work (with 1 ms of work a side, pinning would cost 40% of its calls/s).
PROMPT_WAIT_S = 100e-6


# Only a lone calling thread colocates: once a second thread of this process waits for calls,
# none does for this long (threads that call side by side need every CPU: 4 driver threads,
# each calling its own instance, made 38% fewer calls pinned).
SHARED_QUIET_S = 0.05
_last_waiter = 0  # the thread that last waited for a call
_shared_until = 0.0  # monotonic


def prompt_lone_waiter(*, since_send: float) -> bool:
    """Whether this thread, about to wait for a call sent ``since_send`` seconds ago, waits at
    once and alone: no other thread of this process waited for calls lately. Only such a
    waiter colocates, or polls before it sleeps (spinning.py)."""
    global _last_waiter, _shared_until
    if since_send > PROMPT_WAIT_S:
        return False
    waiter, now = threading.get_ident(), time.monotonic()
    if waiter != _last_waiter:
        if _last_waiter:
            _shared_until = now + SHARED_QUIET_S
        _last_waiter = waiter
    return now >= _shared_until


def current_cpu() -> int | None:
    """The CPU this thread runs on now, to wait for a call on; None if colocation is off or
    the kernel does not say."""
    if not ENABLED:
        return None
    cpu = _getcpu()  # type: ignore[misc]  # not None when ENABLED
    return cpu if cpu >= 0 else None


def pin(cpu: int | None) -> _Mask | None:
    """Pin this thread to ``cpu`` for a sleep; the affinity to give back with ``unpin``, or
    None when nothing changed (no CPU, or one this thread may not use)."""
    if cpu is None or not ENABLED:
        return None
    try:
        own = os.sched_getaffinity(0)
        if cpu not in own or len(own) == 1:
            return None
        os.sched_setaffinity(0, (cpu,))
    except OSError:
        return None
    return own


def unpin(own: _Mask | None) -> None:
    """Give this thread back the affinity ``pin`` took away."""
    if own is not None:
        try:
            os.sched_setaffinity(0, own)
        except OSError:  # its CPUs left the cpuset meanwhile: every CPU the cpuset allows
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, range(os.cpu_count() or 1))


def waited_frame_body(cpu: int) -> bytes:
    return CPU.pack(cpu)


def parse_waited(body: bytes) -> int | None:
    """The CPU a ``WAITED`` frame names, or None for a malformed one (it is only a hint)."""
    if len(body) != CPU.size:
        return None
    return CPU.unpack(body)[0]
