"""Instance classes the local-runtime tests create (importable, so children can load them)."""

from __future__ import annotations

import os
import threading
import time

import yr


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class Counter:
    def __init__(self, start: int = 0) -> None:
        self.value = start
        self.seen: list[int] = []
        self.pid_at_init = os.getpid()

    def add(self, amount: int = 1) -> int:
        self.value += amount
        return self.value

    def record(self, item: int) -> None:
        self.seen.append(item)

    def history(self) -> list[int]:
        return self.seen

    def pid(self) -> int:
        return os.getpid()

    def init_pid(self) -> int:
        return self.pid_at_init

    def sleep(self, seconds: float) -> int:
        time.sleep(seconds)
        return os.getpid()

    def sleep_marked(self, seconds: float, marker: str) -> int:
        """Sleep, after creating ``marker`` so a test knows the call is running."""
        open(marker, "w").close()
        time.sleep(seconds)
        return os.getpid()

    def fail(self, message: str) -> None:
        raise ValueError(message)

    def echo(self, value):
        return value

    def fill(self, array, value: float) -> float:
        array[:] = value  # arguments are the instance's own, writable copy
        return float(array.sum())

    def say(self, text: str) -> None:
        print(text, flush=True)

    @yr.method(return_nums=2)
    def pair(self, a, b):
        return a, b


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100, concurrency=2))
class Rendezvous:
    def __init__(self) -> None:
        self.barrier = threading.Barrier(2, timeout=10)

    def meet(self) -> str:
        self.barrier.wait()  # only passes if two calls run at the same time
        return "met"


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class ThreadBound:
    """Holds a sqlite connection, which refuses use from any thread but its creator's."""

    def __init__(self) -> None:
        import sqlite3

        self.db = sqlite3.connect(":memory:")
        self.db.execute("create table items (value integer)")

    def store(self, value: int) -> int:
        self.db.execute("insert into items values (?)", (value,))
        return self.db.execute("select count(*) from items").fetchone()[0]


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class BrokenInit:
    def __init__(self) -> None:
        raise RuntimeError("cannot start: missing configuration")

    def ping(self) -> str:
        return "pong"


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class Node:
    """A tree node: ``grow(depth)`` creates a chain of children below it."""

    def __init__(self) -> None:
        self.children: list = []

    def grow(self, depth: int) -> list[int]:
        pids = [os.getpid()]
        if depth > 1:
            child = Node.invoke()
            self.children.append(child)
            pids += yr.get(child.grow.invoke(depth - 1))
        return pids

    def pid(self) -> int:
        return os.getpid()


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class Supervisor:
    """Keeps one worker; replaces it if it dies."""

    def __init__(self) -> None:
        self.worker = Counter.invoke()

    def worker_pid(self) -> int:
        return yr.get(self.worker.pid.invoke())

    def worker_handle(self):
        return self.worker

    def pid(self) -> int:
        return os.getpid()

    def work_or_replace(self, seconds: float, marker: str) -> str:
        """Call the worker (it creates ``marker`` once running); replace it if it dies."""
        try:
            yr.get(self.worker.sleep_marked.invoke(seconds, marker))
            return "worked"
        except yr.YRInstanceDiedError as error:
            self.worker = Counter.invoke()
            yr.get(self.worker.pid.invoke())
            return f"replaced after: {error}"


@yr.instance(invoke_options=yr.InvokeOptions(cpu=1000))
class GreedySupervisor:
    def start(self, workers: int) -> list[str]:
        team = [
            Counter.options(yr.InvokeOptions(cpu=1000, schedule_timeout_ms=3000)).invoke()
            for _ in range(workers)
        ]
        return yr.get([w.add.invoke() for w in team], timeout=60)


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class Relay:
    """Uses handles and names from inside an instance."""

    def forward(self, handle, amount: int) -> int:
        return yr.get(handle.add.invoke(amount))

    def add_to_named(self, name: str, amount: int) -> int:
        return yr.get(yr.get_instance(name).add.invoke(amount))

    def create_and_terminate(self) -> int:
        child = Counter.invoke()
        pid = yr.get(child.pid.invoke())
        child.terminate(is_sync=True)
        return pid


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class Spawner:
    """Starts processes of its own, as user code may."""

    def __init__(self, *args) -> None:
        self.children: list = []
        self.argument_size = sum(len(arg) for arg in args)

    def size(self) -> int:
        return self.argument_size

    def start_sleeper(self) -> int:
        import subprocess

        child = subprocess.Popen(["sleep", "600"])
        self.children.append(child)
        return child.pid

    def pid(self) -> int:
        return os.getpid()

    def join_session(self) -> int:
        """``yr.init()`` from inside an instance, then create a child: return the child's pid."""
        yr.init()
        return yr.get(Counter.invoke().pid.invoke())


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class FailsToStart:
    """Its ``__init__`` raises until ``attempts_file`` records ``succeed_on`` attempts."""

    def __init__(self, attempts_file: str, succeed_on: int = 0) -> None:
        with open(attempts_file, "a") as handle:
            handle.write("x")
        with open(attempts_file) as handle:
            attempts = len(handle.read())
        if not succeed_on or attempts < succeed_on:
            raise ValueError(f"attempt {attempts} refused")
        self.attempts = attempts

    def attempt(self) -> int:
        return self.attempts


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class DetachedMaker:
    """Creates a detached instance from inside an instance, and calls it."""

    def make(self, name: str) -> int:
        options = yr.InvokeOptions(cpu=100, name=name, lifetime="detached")
        return yr.get(Counter.options(options).invoke(3).add.invoke(1), timeout=60)
