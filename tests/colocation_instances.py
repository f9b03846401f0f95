"""Instance classes for the colocation tests (importable, so instances can load them)."""

from __future__ import annotations

import os
import threading
import time

import yr


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class Affinities:
    """A concurrency=1 instance that says which CPUs its method thread may run on."""

    def method_thread(self) -> int:
        return threading.get_native_id()

    def noop(self) -> None:
        return None

    def own_affinity(self) -> list[int]:
        return sorted(os.sched_getaffinity(0))

    def affinity_of_a_thread_started_here(self) -> list[int]:
        seen: list[int] = []
        thread = threading.Thread(target=lambda: seen.extend(sorted(os.sched_getaffinity(0))))
        thread.start()
        thread.join()
        return seen

    def pin_own_thread(self, cpus: list[int]) -> None:
        os.sched_setaffinity(0, cpus)

    def wait_for_file(self, path: str) -> None:
        deadline = time.monotonic() + 60
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} never appeared")
            time.sleep(0.01)
