"""Instance classes written as openYuanrong users write them, for the compatibility tests."""

from __future__ import annotations

import asyncio
import os
import pathlib
import time

import yr


@yr.instance
class EnvReader:
    def read(self, name: str) -> str | None:
        return os.environ.get(name)


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100, concurrency=2))
class AsyncPair:
    """Two calls in flight at once: one awaits what the other sets."""

    def __init__(self) -> None:
        self.signal = asyncio.Event()
        self.waiting = False
        self.loops: list[asyncio.AbstractEventLoop] = []

    async def wait_for_signal(self) -> str:
        self.waiting = True
        await self.signal.wait()  # no timeout: a loop nobody wakes would sleep forever
        return "signalled"

    async def is_waiting(self) -> bool:
        return self.waiting

    async def give_signal(self) -> str:
        self.signal.set()
        return "given"

    async def same_loop_as_before(self) -> bool:
        self.loops.append(asyncio.get_running_loop())
        return all(loop is self.loops[0] for loop in self.loops)

    async def awaits_a_ref(self, handle) -> str:
        return await handle.ping.invoke()


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100, concurrency=2))
class AsyncCounter:
    """Counts how many of its calls were in flight at once."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0

    async def hold(self, seconds: float) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(seconds)
        self.in_flight -= 1

    async def peak_in_flight(self) -> int:
        return self.peak


@yr.invoke
def add(a, b):
    return a + b


@yr.invoke(return_nums=2)
def split_sign(x):
    return abs(x), -abs(x)


@yr.invoke(invoke_options=yr.InvokeOptions(cpu=300))
def worker_pid() -> int:
    return os.getpid()


@yr.invoke(invoke_options=yr.InvokeOptions(cpu=300))
def pid_then_sleep(marker: str, seconds: float) -> int:
    """Say which process runs the call (in ``marker``), then stay busy ``seconds``."""
    pathlib.Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


@yr.invoke
def refuse(message: str):
    raise KeyError(message)


@yr.invoke
def add_then_double(a, b):
    return yr.get(add.invoke(a, b), timeout=60) * 2


@yr.instance(invoke_options=yr.InvokeOptions(cpu=300))
class FunctionCaller:
    def add_through_function(self, a, b):
        return yr.get(add.invoke(a, b), timeout=60)


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class NameLister:
    def list_named(self) -> list[str]:
        return yr.list_named_instances()


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100, recover_retry_times=2))
class Quitter:
    def __init__(self) -> None:
        self.child = None

    def start_child(self) -> int:
        from tests.instances import Counter

        self.child = Counter.invoke()
        return yr.get(self.child.pid.invoke(), timeout=60)

    def pid(self) -> int:
        return os.getpid()

    def quit(self) -> str:
        yr.exit()
        return "still here"


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class Streamer:
    def count_to(self, n: int):
        yield from range(1, n + 1)

    def forever(self):
        """Never ends: its items can only be had one by one as they are yielded."""
        item = 0
        while True:
            yield item
            item += 1

    def fail_at(self, n: int):
        yield from range(n)
        raise ValueError(f"broken at item {n}")

    async def async_count_to(self, n: int):
        for item in range(n):
            await asyncio.sleep(0)
            yield item


@yr.invoke
def squares(n: int):
    for item in range(n):
        yield item * item


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class Tidy:
    """Writes a file from its graceful shutdown hook."""

    def __init__(self, marker: str, hook_seconds: float = 0.0) -> None:
        self.marker = marker
        self.hook_seconds = hook_seconds

    def pid(self) -> int:
        return os.getpid()

    def __yr_shutdown__(self, grace_period_seconds: float) -> None:
        import time

        time.sleep(self.hook_seconds)
        with open(self.marker, "w") as out:
            out.write(str(grace_period_seconds))
