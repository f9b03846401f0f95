"""How a driver on the local runtime reaches the keeper of detached instances, starting it if
none runs (see yr/runtime/local/keeper.py): found in the private discovery directory, called
through its control server with the token of its 0600 token file."""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
import time

from yr.errors import YRError
from yr.runtime.local import discovery
from yr.runtime.local.launch import driver_import_path, module_command
from yr.runtime.remote import RemoteRuntime

START_TIMEOUT_S = 30.0
POLL_S = 0.05

_lock = threading.Lock()
_keepers: dict[str, RemoteRuntime] = {}  # keeper session id -> our channel to it


def connect(start: bool) -> RemoteRuntime | None:
    """The running keeper's runtime; with ``start``, one is started first if none runs."""
    with _lock:
        info = discovery.keeper()
        if info is None and start:
            info = _start()
        for gone in set(_keepers) - {info.session_id if info else ""}:
            _keepers.pop(gone).shutdown()  # a keeper that ended: close our channel to it
        if info is None:
            return None
        keeper = _keepers.get(info.session_id)
        if keeper is None:
            keeper = _keepers[info.session_id] = RemoteRuntime(info.control_address, info.token())
        return keeper


def _start() -> discovery.SessionInfo:
    """Start a keeper (one starter at a time) and wait for it to publish itself."""
    with open(discovery.lock_file("keeper-start"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = discovery.keeper()
        if found is not None:
            return found
        log_path = discovery.runtime_dir() / "keeper.log"
        # The keeper imports the classes it keeps as this driver does.
        path = driver_import_path()
        with open(log_path, "w") as log:
            starter = subprocess.Popen(
                module_command("yr.runtime.local.keeper"),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONPATH": path},
                start_new_session=True,
            )
        starter.wait(timeout=START_TIMEOUT_S)  # at once: the keeper leaves it (daemonizes)
        deadline = time.monotonic() + START_TIMEOUT_S
        while (found := discovery.keeper()) is None:
            if time.monotonic() > deadline:
                raise YRError(
                    f"the keeper of detached instances did not start within "
                    f"{START_TIMEOUT_S:g} s; its log: {log_path}"
                )
            time.sleep(POLL_S)  # it announces itself by a file: look again shortly
        return found
