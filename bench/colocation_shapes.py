"""Why this exists: the call shapes colocation must not slow (yr/localcall/colocation.py).

A caller that works between ``invoke`` and ``get``, and several driver threads each calling its
own instance, need both CPUs; only a lone caller that waits at once should share one with its
instance. Each shape runs with ``YR_COLOCATE`` on and off, alternating, each run in a fresh
process, and prints calls/s::

    python bench/colocation_shapes.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time

import yr

SECONDS = 3.0
SHAPES = {
    "sync, nothing between invoke and get": ["overlap", "0"],
    "caller works 1 ms between invoke and get, instance 1 ms": ["overlap", "1000"],
    "caller works 200 us between invoke and get, instance 200 us": ["overlap", "200"],
    "4 driver threads, each calling its own instance": ["threads", "4", "0"],
    "4 driver threads, 200 us per call": ["threads", "4", "200"],
}


@yr.instance(invoke_options=yr.InvokeOptions(cpu=500))
class Worker:
    def step(self, work_us: int) -> None:
        _busy(work_us)


def _busy(work_us: int) -> None:
    end = time.perf_counter() + work_us / 1e6
    while time.perf_counter() < end:
        pass


def overlap(work_us: int) -> float:
    """invoke, work ``work_us`` here, get: calls/s."""
    worker = Worker.invoke()
    for _ in range(100):
        yr.get(worker.step.invoke(0))
    calls, stop = 0, time.perf_counter() + SECONDS
    while time.perf_counter() < stop:
        ref = worker.step.invoke(work_us)
        _busy(work_us)
        yr.get(ref)
        calls += 1
    return calls / SECONDS


def threads(count: int, work_us: int) -> float:
    """``count`` threads, each calling its own instance synchronously: calls/s in all."""
    workers = [Worker.invoke() for _ in range(count)]
    for worker in workers:
        yr.get(worker.step.invoke(0))
    calls = [0] * count
    stop = time.perf_counter() + SECONDS

    def call(index: int) -> None:
        while time.perf_counter() < stop:
            yr.get(workers[index].step.invoke(work_us))
            calls[index] += 1

    callers = [threading.Thread(target=call, args=(index,)) for index in range(count)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    return sum(calls) / SECONDS


def child(shape: list[str]) -> None:
    yr.init(yr.Config(num_cpus=8))
    try:
        if shape[0] == "overlap":
            rate = overlap(int(shape[1]))
        else:
            rate = threads(int(shape[1]), int(shape[2]))
    finally:
        yr.finalize()
    print(f"{rate:.0f}")


def run(shape: list[str], colocate: str) -> float:
    environment = {**os.environ, "YR_COLOCATE": colocate}
    done = subprocess.run(
        [sys.executable, __file__, "--child", *shape],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    print(f"{'shape':<62} {'on':>16} {'off':>16}  (calls/s, each round)")
    for name, shape in SHAPES.items():
        rates: dict[str, list[float]] = {"1": [], "0": []}
        for round_index in range(args.rounds):
            for colocate in ("1", "0") if round_index % 2 == 0 else ("0", "1"):
                rates[colocate].append(run(shape, colocate))
        on, off = (" ".join(f"{rate:,.0f}" for rate in rates[key]) for key in ("1", "0"))
        print(f"{name:<62} {on:>16} {off:>16}", flush=True)


if __name__ == "__main__":
    main()
