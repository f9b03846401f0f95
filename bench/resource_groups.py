"""Resource groups on the local runtime: from creation to admitted, and to the team's first results.

``python bench/resource_groups.py [--rounds 10]``: each round creates a group of 1 + 3 one-CPU
bundles (a supervisor and three workers, 4 CPUs in all), waits for it, places the supervisor in
bundle 0 and lets it place its three workers in bundles 1-3 (through the driver's control
server, as a tree does), and times until all four members have answered one call; then removes
the group. The same team created without a group is the baseline. Prints median and max.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import psutil

import yr

BUNDLE = {"CPU": 1000, "Memory": 500}
WORKERS = 3


def placed(group_name: str, index: int) -> yr.InvokeOptions:
    options = yr.InvokeOptions(cpu=1000, memory=500)
    if group_name:
        options.resource_group_options = yr.ResourceGroupOptions(group_name, index)
    return options


@yr.instance(invoke_options=yr.InvokeOptions(cpu=1000, memory=500))
class Worker:
    def pid(self) -> int:
        return os.getpid()


@yr.instance(invoke_options=yr.InvokeOptions(cpu=1000, memory=500))
class Supervisor:
    def team_pids(self, group_name: str) -> list[int]:
        workers = [Worker.options(placed(group_name, i + 1)).invoke() for i in range(WORKERS)]
        return [os.getpid(), *yr.get([w.pid.invoke() for w in workers])]


def one_round(with_group: bool) -> tuple[float, float]:
    """Seconds from the start to admitted (0 without a group) and to the team's results."""
    started = time.perf_counter()
    name = ""
    if with_group:
        group = yr.create_resource_group([BUNDLE] * (1 + WORKERS))
        group.wait(60)
        name = group.resource_group_name
    admitted = time.perf_counter() - started
    supervisor = Supervisor.options(placed(name, 0)).invoke()
    pids = yr.get(supervisor.team_pids.invoke(name), timeout=120)
    answered = time.perf_counter() - started
    assert len(set(pids)) == 1 + WORKERS
    if with_group:
        yr.remove_resource_group(name)  # ends the team too
    else:
        supervisor.terminate()
    wait_until_gone(pids)  # the next round does not share the CPU with this one's teardown
    return admitted, answered


def wait_until_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 30
    while any(psutil.pid_exists(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.01)


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1e3:7.1f} ms, max {max(values) * 1e3:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds per case (default 10)")
    args = parser.parse_args()
    yr.init(yr.Config(num_cpus=4))
    try:
        one_round(True)  # warm-up: imports in the fork server, first channels
        grouped = [one_round(True) for _ in range(args.rounds)]
        plain = [one_round(False) for _ in range(args.rounds)]
    finally:
        yr.finalize()
    team = f"1 + {WORKERS} bundles"
    print(f"local runtime, 4 CPUs, {args.rounds} rounds, a team of 1 + {WORKERS} one-CPU members")
    print(f"group of {team}, creation -> admitted:          {ms([a for a, _ in grouped])}")
    print(f"group of {team}, creation -> all first results: {ms([b for _, b in grouped])}")
    print(f"no group (baseline), first create -> all first results: {ms([b for _, b in plain])}")


if __name__ == "__main__":
    main()
