"""Instance classes for the Kubernetes end-to-end tests (pods import them from the repo)."""

from __future__ import annotations

import os
import time

import yr

ONE_CPU = yr.InvokeOptions(cpu=1000, memory=128)


@yr.instance(invoke_options=ONE_CPU)
class Worker:
    def pid(self) -> int:
        return os.getpid()

    def train(self, shard: int, lr: float) -> str:
        return f"shard {shard} loss {0.1 / lr}"

    def say(self, lines: list[str]) -> int:
        for line in lines:
            print(line)
        return len(lines)

    def sleep_marked(self, seconds: float, marker: str) -> int:
        """Sleep, after creating ``marker`` so a test knows the call is running."""
        open(marker, "w").close()
        time.sleep(seconds)
        return os.getpid()


@yr.instance(invoke_options=ONE_CPU)
class Lead:
    def __init__(self, workers: int, worker_options: yr.InvokeOptions = ONE_CPU) -> None:
        self.workers = [Worker.options(worker_options).invoke() for _ in range(workers)]

    def train(self, lr: float) -> list[str]:
        return yr.get([w.train.invoke(i, lr) for i, w in enumerate(self.workers)], timeout=120)

    def worker_names(self) -> list[str]:
        return [w.instance_id for w in self.workers]


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100, memory=128))
class Caller:
    """Calls an instance it was handed (did not create): its runtime must find it."""

    def pids_of(self, first: Worker, second: Worker) -> list[int]:
        """One after the other: by the second, this pod's watch has listed the session."""
        return [yr.get(worker.pid.invoke(), timeout=30) for worker in (first, second)]


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100, memory=128))
class Tally:
    """State that shows a later caller reached the same instance."""

    def __init__(self) -> None:
        self.total = 0
        self.child: Worker | None = None

    def add(self, amount: int) -> int:
        self.total += amount
        return self.total

    def start_child(self) -> str:
        self.child = Worker.options(yr.InvokeOptions(cpu=100, memory=128)).invoke()
        yr.get(self.child.pid.invoke(), timeout=120)
        return self.child.instance_id

    def start_detached(self, name: str) -> int:
        """Create a detached Tally from inside this pod; it must outlive this instance."""
        options = yr.InvokeOptions(cpu=100, memory=128, name=name, lifetime="detached")
        return yr.get(Tally.options(options).invoke().add.invoke(3), timeout=120)

    def find(self, name: str) -> int:
        """Look a named instance up from inside this pod and call it."""
        return yr.get(yr.get_instance(name, timeout=30).add.invoke(0), timeout=60)
