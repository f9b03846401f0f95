"""Why this exists: how often each thread sleeps and wakes per 1:1 sync call (issue 14).

A sync call needs one sleep and one wake-up per side. Every extra one costs a context switch,
which on a small virtual machine is as costly as the call's Python. This prints the voluntary
context switches per call of every thread that made any, in the driver and in the instance,
beside a bare Unix-socket ping-pong that makes exactly one::

    python bench/context_switches.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import os
import socket
import threading

import yr


@yr.instance(invoke_options=yr.InvokeOptions(cpu=1000))
class Noop:
    def noop(self) -> None:
        return None

    def pid(self) -> int:
        return os.getpid()


def _switches(pid: int) -> dict[str, int]:
    """Voluntary context switches so far of each thread of ``pid``, by "name (tid)"."""
    counts = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as comm:
                name = comm.read().strip()
            with open(f"/proc/{pid}/task/{tid}/status") as status:
                line = next(x for x in status if x.startswith("voluntary_ctxt_switches"))
        except (FileNotFoundError, StopIteration):
            continue  # the thread ended meanwhile
        counts[f"{name} ({tid})"] = int(line.split(":")[1])
    return counts


def _per_call(before: dict[str, int], after: dict[str, int], calls: int) -> dict[str, float]:
    changed = {t: (after[t] - before[t]) / calls for t in after if t in before}
    return {thread: per_call for thread, per_call in changed.items() if per_call >= 0.01}


def yr_calls(calls: int) -> None:
    yr.init(yr.Config(num_cpus=2))
    try:
        handle = Noop.invoke()
        instance_pid = yr.get(handle.pid.invoke())
        for _ in range(300):
            yr.get(handle.noop.invoke())
        driver_before, instance_before = _switches(os.getpid()), _switches(instance_pid)
        for _ in range(calls):
            yr.get(handle.noop.invoke())
        driver_after, instance_after = _switches(os.getpid()), _switches(instance_pid)
    finally:
        yr.finalize()
    main = f"{threading.current_thread().name} ({threading.get_native_id()})"
    for side, before, after in (
        ("driver", driver_before, driver_after),
        ("instance", instance_before, instance_after),
    ):
        for thread, per_call in sorted(_per_call(before, after, calls).items()):
            mark = "  <- the calling thread" if thread.endswith(main.split(" ")[-1]) else ""
            print(f"yr {side:<8} {thread:<28} {per_call:5.2f} per call{mark}")


def bare_ping_pong(calls: int) -> None:
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        ours.close()
        while data := theirs.recv(65536):
            theirs.send(data)
        os._exit(0)
    theirs.close()
    before = _switches(os.getpid())
    for _ in range(calls):
        ours.send(b"x" * 40)
        ours.recv(65536)
    after = _switches(os.getpid())
    ours.close()
    os.waitpid(pid, 0)
    for thread, per_call in _per_call(before, after, calls).items():
        print(f"bare ping-pong client {thread:<20} {per_call:5.2f} per call")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    bare_ping_pong(args.calls)
    yr_calls(args.calls)


if __name__ == "__main__":
    main()
