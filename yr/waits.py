"""Which thread of this process is a ``concurrency=1`` instance's only method thread.

That thread can never wait for a call to its own instance: the call would run after the
waiting method returns. ``yr.get`` asks here first and raises at once instead of hanging.
"""

from __future__ import annotations

import threading

from yr.errors import YRError

_serial: dict[int, str] = {}  # thread ident -> the instance whose calls it runs one by one


def declare_serial_thread(instance_id: str) -> None:
    """Called on the method thread of a ``concurrency=1`` instance, before any user code."""
    _serial[threading.get_ident()] = instance_id


def refuse_self_wait(target_instance: str, method: str) -> None:
    """Raise if this thread is ``target_instance``'s only method thread (a wait on itself)."""
    instance_id = _serial.get(threading.get_ident())
    if instance_id is not None and instance_id == target_instance:
        raise YRError(
            f"deadlock: instance {instance_id} (concurrency=1) waits in yr.get for its own call "
            f"{method}, which cannot run until the waiting method returns "
            f"(cycle: {instance_id} -> {instance_id}). Return the ref instead of waiting for it, "
            "or give the instance concurrency > 1"
        )
