"""The per-user keeper of detached instances: a headless local session that outlives drivers.

A driver that creates a detached instance starts it (``python -m yr.runtime.local.keeper``)
unless one runs. It daemonizes (so no driver waits for it or is its parent), takes the keeper
lock (one per user; a successor waits for a predecessor that is ending), and runs a
LocalRuntime of its own: fork server, CPU ledger and control server, published in the private
discovery directory with role "keeper". A later driver finds it there and authenticates with
its token file (0600: this user only). It ends, with its fork server, once it has kept no
instance for ``YR_KEEPER_IDLE_SECONDS`` (default 30 s), or on SIGTERM.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import threading
import time

IDLE_S = float(os.environ.get("YR_KEEPER_IDLE_SECONDS", "30"))
POLL_S = 0.2


def _daemonize() -> None:
    """Leave the starter: it reaps the first child at once, the keeper is nobody's child."""
    if os.fork():
        os._exit(0)
    os.setsid()


def main() -> int:
    _daemonize()
    from yr.runtime.local import discovery

    with open(discovery.lock_file("keeper"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a keeper still ending finishes first
        if discovery.keeper() is not None:
            return 0  # another started while we waited: it keeps them
        from yr.runtime.local.instances import default_num_cpus
        from yr.runtime.local.runtime import LocalRuntime

        runtime = LocalRuntime(num_cpus=default_num_cpus(), log_to_driver=False, role="keeper")
        stopping = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopping.set())
        idle_since = time.monotonic()
        while not stopping.wait(POLL_S):
            if not runtime.idle():
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= IDLE_S and runtime.stop_if_idle():
                break
        runtime.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
