"""Why this exists: issue 2's side-by-side of yr's local runtime and Ray, with ratios and targets.

Every workload runs first on yr, then on Ray, each in a fresh subprocess of this script (no
leftover state; RSS and creation are measured cleanly), and the parent prints one table::

    python bench/compare_ray.py                  # everything, about 3-5 minutes on 2 cores
    python bench/compare_ray.py --quick          # shorter loops, fewer repetitions
    python bench/compare_ray.py --only sync inflight --json out.json
    python bench/compare_ray.py --only sync --rounds 7   # medians of 7 alternating rounds

Both frameworks get the same logical CPUs and every instance/actor asks for one of them
(``InvokeOptions(cpu=1000)`` / ``num_cpus=1``). Every process a child starts is recorded while
it runs and killed by PID if it outlives the child.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MB = 1_000_000
ARRAY_BYTES = 100 * 2**20
LARGE_BYTES = 200 * MB
IN_FLIGHT_CALLS = 5_000
TASK_CALLS = 1_000
TREE_SUPERVISORS = 8
TREE_WORKERS = 3
CHILD_TIMEOUT_S = 150.0
SHARED_THINK_S = 0.001  # both callers of the shared instance do 1 ms of work between calls
STALL_TIMEOUT_S = 20.0  # a yr.get/ray.get of one batch that takes longer is reported as stalled


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    unit: str
    higher_is_better: bool
    target: str
    check: Callable[[float | None, float | None], bool | None]  # (yr value, ratio) -> met?
    frameworks: tuple[str, ...] = ("yr", "ray")


def _ratio_at_least(minimum: float) -> Callable[[float | None, float | None], bool | None]:
    return lambda _value, ratio: None if ratio is None else ratio >= minimum


def _value_at_most(maximum: float) -> Callable[[float | None, float | None], bool | None]:
    return lambda value, _ratio: None if value is None else value <= maximum


WORKLOADS: list[Workload] = [
    Workload(
        "create",
        "create 1 + get 1 no-op (median of 10)",
        "ms",
        False,
        ">= 5x faster",
        _ratio_at_least(5.0),
    ),
    Workload("sync", "1:1 sync calls", "calls/s", True, ">= 5x Ray", _ratio_at_least(5.0)),
    Workload(
        "nested",
        "1:1 sync calls from an instance to another (a supervisor driving a worker)",
        "calls/s",
        True,
        ">= 5x Ray",
        _ratio_at_least(5.0),
    ),
    Workload(
        "shared",
        "sync call to an instance another caller also calls (median latency)",
        "ms",
        False,
        ">= 1x faster",
        _ratio_at_least(1.0),
    ),
    Workload(
        "uds",
        "bare Unix-socket ping-pong, pickle + length framing (floor)",
        "calls/s",
        True,
        "reference",
        lambda _v, _r: None,
        frameworks=("grpc",),  # a reference row: no framework
    ),
    Workload(
        "inflight",
        f"{IN_FLIGHT_CALLS:,} calls in flight",
        "calls/s",
        True,
        ">= 1x Ray",
        _ratio_at_least(1.0),
    ),
    Workload(
        "tasks",
        f"{TASK_CALLS:,} tiny stateless calls at once",
        "calls/s",
        True,
        ">= 2x Ray",
        _ratio_at_least(2.0),
    ),
    Workload(
        "tree",
        f"tree {TREE_SUPERVISORS}x{TREE_WORKERS}, no sleep",
        "s",
        False,
        ">= 2x faster",
        _ratio_at_least(2.0),
    ),
    Workload(
        "tree_sleep",
        f"tree {TREE_SUPERVISORS}x{TREE_WORKERS}, sleep(1)",
        "s",
        False,
        ">= 2x faster (~1 s)",
        _ratio_at_least(2.0),
    ),
    Workload("rss", "idle instance RSS (mean)", "MB", False, "<= 50 MB", _value_at_most(50.0)),
    Workload(
        "numpy",
        "100 MiB numpy argument (median)",
        "ms",
        False,
        ">= 1.5x faster",
        _ratio_at_least(1.5),
    ),
    Workload(
        "numpy_return",
        "100 MiB numpy return value (median)",
        "ms",
        False,
        ">= 1.5x faster",
        _ratio_at_least(1.5),
    ),
    Workload(
        "ctor200",
        "200 MB constructor argument, create + first call (median)",
        "ms",
        False,
        "within 2x of the numpy row",
        lambda _v, _r: None,
    ),
    Workload(
        "bytes200",
        "200 MB bytes argument (median)",
        "ms",
        False,
        "no slower",
        _ratio_at_least(1.0),
    ),
    Workload(
        "grpc",
        "bare grpcio unary loopback (floor)",
        "calls/s",
        True,
        "reference",
        lambda _v, _r: None,
        frameworks=("grpc",),
    ),
]
BY_NAME = {w.name: w for w in WORKLOADS}


# ---------------------------------------------------------------------------------------------
# The frameworks behind one small interface, so every workload is written once.
# ---------------------------------------------------------------------------------------------


class Bench:
    """One framework, initialised with ``num_cpus`` logical CPUs."""

    name = ""

    def start(self, num_cpus: int) -> None: ...
    def create(self, kind: str, *args: Any) -> Any: ...
    def call(self, handle: Any, method: str, *args: Any) -> Any: ...
    def get(self, refs: Any, timeout: float | None = None) -> Any: ...
    def task(self, *args: Any) -> Any: ...
    def kill(self, handle: Any) -> None: ...
    def instance_pids(self, handles: list[Any]) -> list[int]: ...
    def stop(self) -> None: ...


def _noop_class() -> type:
    class Noop:
        def __init__(self, payload: bytes = b"") -> None:
            self.payload_bytes = len(payload)

        def payload_size(self) -> int:
            return self.payload_bytes

        def noop(self) -> None:
            return None

        def pid(self) -> int:
            return os.getpid()

        def size(self, array: Any) -> int:
            return int(array.nbytes)

        def length(self, data: bytes) -> int:
            return len(data)

        def array(self, nbytes: int) -> Any:
            """The same array every time: what is measured is its trip back, not making it."""
            import numpy as np

            kept = getattr(self, "kept_array", None)
            if kept is None or kept.nbytes != nbytes:
                kept = self.kept_array = np.ones(nbytes // 8)
            return kept

    return Noop


def _holder_class() -> type:
    class Holder:
        def __init__(self, payload: bytes) -> None:
            self.held = len(payload)

        def size(self) -> int:
            return self.held

    return Holder


class YrBench(Bench):
    name = "yr"

    def start(self, num_cpus: int) -> None:
        import yr

        self.yr = yr
        options = yr.InvokeOptions(cpu=1000)
        self.noop = yr.instance(invoke_options=options)(_noop_class())
        self.holder = yr.instance(invoke_options=options)(_holder_class())
        worker = yr.instance(invoke_options=options)(TrainingWorker)
        self.supervisor = yr.instance(invoke_options=options)(_yr_supervisor(worker))
        self.caller = yr.instance(invoke_options=options)(_caller_class(yr.get, "invoke"))
        self.tiny = yr.invoke(invoke_options=options)(tiny_task)
        yr.init(yr.Config(num_cpus=num_cpus))

    def create(self, kind: str, *args: Any) -> Any:
        creator = {"noop": self.noop, "holder": self.holder, "caller": self.caller}.get(
            kind, self.supervisor
        )
        return creator.invoke(*args)

    def call(self, handle: Any, method: str, *args: Any) -> Any:
        return getattr(handle, method).invoke(*args)

    def get(self, refs: Any, timeout: float | None = None) -> Any:
        return self.yr.get(refs, timeout=timeout if timeout is not None else 300)

    def task(self, *args: Any) -> Any:
        return self.tiny.invoke(*args)

    def kill(self, handle: Any) -> None:
        handle.terminate(is_sync=True)

    def instance_pids(self, handles: list[Any]) -> list[int]:
        by_id = self.yr.session.current().runtime.pids()
        return [by_id[h.instance_id] for h in handles]

    def stop(self) -> None:
        self.yr.finalize()


class RayBench(Bench):
    name = "ray"

    def start(self, num_cpus: int) -> None:
        import ray

        self.ray = ray
        self.noop = ray.remote(num_cpus=1)(_noop_class())
        self.holder = ray.remote(num_cpus=1)(_holder_class())
        worker = ray.remote(num_cpus=1)(TrainingWorker)
        self.supervisor = ray.remote(num_cpus=1)(_ray_supervisor(worker))
        self.caller = ray.remote(num_cpus=1)(_caller_class(ray.get, "remote"))
        self.tiny = ray.remote(num_cpus=1)(tiny_task)
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            logging_level="ERROR",
            configure_logging=True,
        )

    def create(self, kind: str, *args: Any) -> Any:
        creator = {"noop": self.noop, "holder": self.holder, "caller": self.caller}.get(
            kind, self.supervisor
        )
        return creator.remote(*args)

    def call(self, handle: Any, method: str, *args: Any) -> Any:
        return getattr(handle, method).remote(*args)

    def get(self, refs: Any, timeout: float | None = None) -> Any:
        return self.ray.get(refs, timeout=timeout)

    def task(self, *args: Any) -> Any:
        return self.tiny.remote(*args)

    def kill(self, handle: Any) -> None:
        self.ray.kill(handle, no_restart=True)

    def instance_pids(self, handles: list[Any]) -> list[int]:
        return self.ray.get([h.pid.remote() for h in handles])

    def stop(self) -> None:
        self.ray.shutdown()


def _caller_class(get: Callable[[Any], Any], call_with: str) -> type:
    class Caller:
        """Another caller of a shared instance: a sync call, then ``think_s`` of work."""

        def loop(self, target: Any, seconds: float, think_s: float) -> int:
            count = 0
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                get(getattr(target.noop, call_with)())
                count += 1
                _work_for(think_s)
            return count

    return Caller


def _work_for(seconds: float) -> None:
    """Busy, not asleep: a caller computing between its calls."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def tiny_task(value: int) -> int:
    """The stateless-calls row: as small as a call gets."""
    return value + 1


class TrainingWorker:
    """The seed's bottom layer; ``sleep_s`` > 0 simulates training."""

    def train(self, shard_id: int, hyperparams: dict[str, float], sleep_s: float) -> str:
        if sleep_s:
            time.sleep(sleep_s)
        return f"Loss: {0.1 / hyperparams['lr']} (shard {shard_id})"


def _yr_supervisor(worker: Any) -> type:
    import yr

    class TrainingSupervisor:
        def __init__(self, hyperparams: dict[str, float]) -> None:
            self.hyperparams = hyperparams

        def start_training(self, num_workers: int, sleep_s: float) -> str:
            workers = [worker.invoke() for _ in range(num_workers)]
            refs = [w.train.invoke(i, self.hyperparams, sleep_s) for i, w in enumerate(workers)]
            return f"{self.hyperparams} done: {yr.get(refs)}"

    return TrainingSupervisor


def _ray_supervisor(worker: Any) -> type:
    import ray

    class TrainingSupervisor:
        def __init__(self, hyperparams: dict[str, float]) -> None:
            self.hyperparams = hyperparams

        def start_training(self, num_workers: int, sleep_s: float) -> str:
            self.workers = [worker.remote() for _ in range(num_workers)]
            refs = [
                w.train.remote(i, self.hyperparams, sleep_s) for i, w in enumerate(self.workers)
            ]
            return f"{self.hyperparams} done: {ray.get(refs)}"

    return TrainingSupervisor


# ---------------------------------------------------------------------------------------------
# The workloads (run inside a child process; each returns a dict with "value" and details).
# ---------------------------------------------------------------------------------------------


def run_create(b: Bench, quick: bool) -> dict[str, Any]:
    b.start(num_cpus=4)
    times = []
    for _ in range(5 if quick else 10):
        started = time.perf_counter()
        handle = b.create("noop")
        b.get(b.call(handle, "noop"))
        times.append((time.perf_counter() - started) * 1e3)
        b.kill(handle)
        time.sleep(0.2)  # let the teardown finish outside the timed part
    b.stop()
    return {"value": statistics.median(times), "min": min(times), "max": max(times), "all": times}


def run_sync(b: Bench, quick: bool) -> dict[str, Any]:
    b.start(num_cpus=2)
    handle = b.create("noop")
    for _ in range(100):
        b.get(b.call(handle, "noop"))
    duration = 1.0 if quick else 3.0
    count = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < duration:
        b.get(b.call(handle, "noop"))
        count += 1
    b.stop()
    return {"value": count / elapsed, "calls": count, "seconds": elapsed}


def run_nested(b: Bench, quick: bool) -> dict[str, Any]:
    b.start(num_cpus=4)
    target, caller = b.create("noop"), b.create("caller")
    b.get(b.call(target, "noop"))
    b.get(b.call(caller, "loop", target, 0.3, 0.0))  # warmed up: both connected
    duration = 1.0 if quick else 3.0
    count = b.get(b.call(caller, "loop", target, duration, 0.0))
    b.stop()
    return {"value": count / duration, "calls": count, "seconds": duration}


def run_shared(b: Bench, quick: bool) -> dict[str, Any]:
    """The driver's sync calls to an instance that another instance calls at the same time
    (workers pushing to one parameter server): the latency each call sees."""
    b.start(num_cpus=4)
    target, caller = b.create("noop"), b.create("caller")
    b.get(b.call(target, "noop"))
    duration = 1.0 if quick else 3.0
    other = b.call(caller, "loop", target, duration + 1.0, SHARED_THINK_S)
    latencies = []
    started = time.perf_counter()
    while time.perf_counter() - started < duration:
        call_started = time.perf_counter()
        b.get(b.call(target, "noop"))
        latencies.append((time.perf_counter() - call_started) * 1e3)
        _work_for(SHARED_THINK_S)
    other_calls = b.get(other)
    b.stop()
    latencies.sort()
    return {
        "value": statistics.median(latencies),
        "p90": latencies[int(len(latencies) * 0.9)],
        "calls": len(latencies),
        "other_calls": other_calls,
    }


def run_inflight(b: Bench, quick: bool) -> dict[str, Any]:
    b.start(num_cpus=2)
    handle = b.create("noop")
    b.get([b.call(handle, "noop") for _ in range(100)])
    rates = []
    for _ in range(1 if quick else 3):
        started = time.perf_counter()
        refs = [b.call(handle, "noop") for _ in range(IN_FLIGHT_CALLS)]
        submitted = time.perf_counter() - started
        try:
            b.get(refs, timeout=STALL_TIMEOUT_S)
        except Exception as error:
            b.stop()
            return {"value": None, "error": f"stalled: {type(error).__name__}: {error}"[:300]}
        rates.append(IN_FLIGHT_CALLS / (time.perf_counter() - started))
    b.stop()
    return {"value": statistics.median(rates), "rates": rates, "submit_s_last": submitted}


def run_tasks(b: Bench, quick: bool) -> dict[str, Any]:
    """Tasks (Ray) / stateless functions (yr) on 2 CPUs: workers warmed up, then 1,000 at once."""
    b.start(num_cpus=2)
    b.get([b.task(i) for i in range(100)])
    rates = []
    for _ in range(1 if quick else 3):
        started = time.perf_counter()
        refs = [b.task(i) for i in range(TASK_CALLS)]
        try:
            values = b.get(refs, timeout=STALL_TIMEOUT_S)
        except Exception as error:
            b.stop()
            return {"value": None, "error": f"stalled: {type(error).__name__}: {error}"[:300]}
        rates.append(TASK_CALLS / (time.perf_counter() - started))
        assert values == [i + 1 for i in range(TASK_CALLS)]
    b.stop()
    return {"value": statistics.median(rates), "rates": rates}


def _tree(b: Bench, sleep_s: float) -> dict[str, Any]:
    b.start(num_cpus=TREE_SUPERVISORS * (1 + TREE_WORKERS))
    started = time.perf_counter()
    supervisors = [b.create("supervisor", {"lr": 0.01 / (i + 1)}) for i in range(TREE_SUPERVISORS)]
    reports = b.get(
        [b.call(s, "start_training", TREE_WORKERS, sleep_s) for s in supervisors], timeout=120
    )
    elapsed = time.perf_counter() - started
    assert len(reports) == TREE_SUPERVISORS and all("Loss" in r for r in reports), reports
    b.stop()
    return {"value": elapsed}


def run_tree(b: Bench, quick: bool) -> dict[str, Any]:
    return _tree(b, 0.0)


def run_tree_sleep(b: Bench, quick: bool) -> dict[str, Any]:
    return _tree(b, 1.0)


def run_rss(b: Bench, quick: bool) -> dict[str, Any]:
    import psutil

    count = 4 if quick else 10
    b.start(num_cpus=count)
    handles = [b.create("noop") for _ in range(count)]
    b.get([b.call(h, "noop") for h in handles])
    pids = b.instance_pids(handles)
    reported = b.get([b.call(h, "pid") for h in handles])
    if sorted(pids) != sorted(reported):
        raise RuntimeError(f"instance pids disagree: runtime says {pids}, instances {reported}")
    time.sleep(2.0)  # idle
    rss, uss = [], []
    for pid in pids:
        process = psutil.Process(pid)
        rss.append(process.memory_info().rss / MB)
        uss.append(process.memory_full_info().uss / MB)
    b.stop()
    return {"value": statistics.mean(rss), "uss_mean": statistics.mean(uss), "instances": count}


def run_numpy(b: Bench, quick: bool) -> dict[str, Any]:
    import numpy as np

    b.start(num_cpus=2)
    handle = b.create("noop")
    b.get(b.call(handle, "size", np.ones(1024)))
    array = np.ones(ARRAY_BYTES // 8)
    times = []
    for _ in range(3 if quick else 5):
        started = time.perf_counter()
        size = b.get(b.call(handle, "size", array), timeout=120)
        times.append((time.perf_counter() - started) * 1e3)
        assert size == ARRAY_BYTES, size
    b.stop()
    return {"value": statistics.median(times), "all": times}


def run_numpy_return(b: Bench, quick: bool) -> dict[str, Any]:
    b.start(num_cpus=2)
    handle = b.create("noop")
    b.get(b.call(handle, "array", ARRAY_BYTES), timeout=120)  # made once, in the instance
    times = []
    for _ in range(3 if quick else 5):
        started = time.perf_counter()
        array = b.get(b.call(handle, "array", ARRAY_BYTES), timeout=120)
        times.append((time.perf_counter() - started) * 1e3)
        assert array.nbytes == ARRAY_BYTES and array[-1] == 1.0, array.nbytes
        del array  # as a loop that uses each result and moves on
    b.stop()
    return {"value": statistics.median(times), "all": times}


def run_ctor200(b: Bench, quick: bool) -> dict[str, Any]:
    b.start(num_cpus=2)
    payload = os.urandom(LARGE_BYTES)
    times = []
    for _ in range(2 if quick else 3):
        started = time.perf_counter()
        handle = b.create("holder", payload)
        size = b.get(b.call(handle, "size"), timeout=120)
        times.append((time.perf_counter() - started) * 1e3)
        assert size == LARGE_BYTES, size
        b.kill(handle)
    b.stop()
    return {"value": statistics.median(times), "all": times}


def run_bytes200(b: Bench, quick: bool) -> dict[str, Any]:
    b.start(num_cpus=2)
    handle = b.create("noop")
    b.get(b.call(handle, "length", b"warm"))
    payload = os.urandom(LARGE_BYTES)
    times = []
    for _ in range(3 if quick else 5):
        started = time.perf_counter()
        size = b.get(b.call(handle, "length", payload), timeout=120)
        times.append((time.perf_counter() - started) * 1e3)
        assert size == LARGE_BYTES, size
    b.stop()
    return {"value": statistics.median(times), "all": times}


def run_grpc(_b: Bench | None, quick: bool) -> dict[str, Any]:
    """Sync client -> sync server in another process; the cost of one Python gRPC round trip."""
    import grpc

    server = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--grpc-server"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        echo = channel.unary_unary("/bench.Echo/Echo")
        for _ in range(200):
            echo(b"x")
        duration = 1.0 if quick else 3.0
        count = 0
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < duration:
            echo(b"x")
            count += 1
        channel.close()
    finally:
        server.kill()
        server.wait()
    return {"value": count / elapsed}


def run_uds(_b: Bench | None, quick: bool) -> dict[str, Any]:
    """A forked echo server over a Unix socket pair; the floor under yr's local transport."""
    import pickle
    import socket
    import struct

    header = struct.Struct("!I")
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        ours.close()
        reader = theirs.makefile("rb")
        while size := reader.read(header.size):
            value = pickle.loads(reader.read(header.unpack(size)[0]))
            out = pickle.dumps(value)
            theirs.sendall(header.pack(len(out)) + out)
        os._exit(0)
    theirs.close()
    reader = ours.makefile("rb")
    duration = 1.0 if quick else 3.0
    count = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < duration:
        out = pickle.dumps(("noop", (), {}))
        ours.sendall(header.pack(len(out)) + out)
        pickle.loads(reader.read(header.unpack(reader.read(header.size))[0]))
        count += 1
    reader.close()
    ours.close()
    os.waitpid(pid, 0)
    return {"value": count / elapsed}


def grpc_server() -> None:
    import concurrent.futures

    import grpc

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.unary_unary_rpc_method_handler(lambda request, _context: request)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.Echo", {"Echo": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


RUNNERS: dict[str, Callable[[Any, bool], dict[str, Any]]] = {
    "create": run_create,
    "sync": run_sync,
    "nested": run_nested,
    "shared": run_shared,
    "inflight": run_inflight,
    "tasks": run_tasks,
    "tree": run_tree,
    "tree_sleep": run_tree_sleep,
    "rss": run_rss,
    "numpy": run_numpy,
    "numpy_return": run_numpy_return,
    "ctor200": run_ctor200,
    "bytes200": run_bytes200,
    "grpc": run_grpc,
    "uds": run_uds,
}


def child(framework: str, workload: str, quick: bool) -> None:
    bench: Bench | None = {"yr": YrBench, "ray": RayBench}.get(framework, lambda: None)()
    try:
        result = RUNNERS[workload](bench, quick)
    except Exception as error:
        result = {"value": None, "error": f"{type(error).__name__}: {error}"[:300]}
    print("RESULT " + json.dumps(result), flush=True)
    sys.stderr.flush()
    os._exit(0)  # no lingering atexit hooks or non-daemon threads: the parent reaps the rest


# ---------------------------------------------------------------------------------------------
# The parent: runs the children, reaps whatever they leave behind, prints the table.
# ---------------------------------------------------------------------------------------------


def _descendants(process: Any, seen: dict[int, float]) -> None:
    import psutil

    try:
        for proc in process.children(recursive=True):
            seen.setdefault(proc.pid, proc.create_time())
    except psutil.Error:
        pass


def _reap(seen: dict[int, float]) -> list[int]:
    """Kill every recorded descendant still alive (same PID and start time), by PID."""
    import psutil

    killed = []
    for pid, created in seen.items():
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - created) > 0.01:
                continue
            proc.kill()
            killed.append(pid)
        except psutil.Error:
            continue
    for pid in killed:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).wait(5)
    return killed


def run_child(framework: str, workload: str, quick: bool, log: Any) -> dict[str, Any]:
    import psutil

    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    command = [sys.executable, os.path.abspath(__file__), "--child", framework, workload]
    if quick:
        command.append("--quick")
    log.write(f"\n===== {framework} {workload} =====\n")
    log.flush()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=log, env=env, start_new_session=True)
        parent = psutil.Process(proc.pid)
        seen: dict[int, float] = {}
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        timed_out = False
        while proc.poll() is None:
            _descendants(parent, seen)
            if time.monotonic() > deadline:
                timed_out = True
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.1)
        leftovers = _reap(seen)
        out.seek(0)
        text = out.read()
    log.write(text)
    if leftovers:
        log.write(f"[bench] killed {len(leftovers)} leftover process(es): {leftovers}\n")
    for line in text.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    reason = f"timed out after {CHILD_TIMEOUT_S:g} s" if timed_out else f"exit {proc.returncode}"
    return {"value": None, "error": f"no result ({reason}); see the log"}


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "FAILED"
    if unit == "calls/s":
        return f"{value:,.0f}/s"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "ms":
        return f"{value:.1f} ms"
    return f"{value:.1f} {unit}"


NOT_RUN = "not run"  # a framework left out with --frameworks


def _cell(result: dict[str, Any], unit: str) -> str:
    """A framework's table cell: its value, FAILED, or that it was left out."""
    if result["value"] is None and result.get("error") == NOT_RUN:
        return NOT_RUN
    return _fmt(result["value"], unit)


def _ratio(workload: Workload, yr_value: float | None, ray_value: float | None) -> float | None:
    """How many times better yr is than Ray (> 1: yr wins)."""
    if not yr_value or not ray_value:
        return None
    return yr_value / ray_value if workload.higher_is_better else ray_value / yr_value


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One framework's rounds of a workload as one result: the median value, and every one."""
    if len(runs) == 1:
        return runs[0]
    values = [run["value"] for run in runs if run.get("value") is not None]
    if not values:
        return {"value": None, "error": runs[-1].get("error", "no round gave a value")}
    return {"value": statistics.median(values), "rounds": [run.get("value") for run in runs]}


def table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    header = ("workload", "yr", "Ray", "yr vs Ray", "target", "met?")
    rows = [header]
    for workload in WORKLOADS:
        if workload.name not in results:
            continue
        got = results[workload.name]
        if workload.frameworks == ("grpc",):
            value = got["grpc"]["value"]
            rows.append((workload.title, _fmt(value, workload.unit), "", "", "reference", ""))
            continue
        yr_value, ray_value = got["yr"]["value"], got["ray"]["value"]
        ratio = _ratio(workload, yr_value, ray_value)
        met = workload.check(yr_value, ratio)
        rows.append(
            (
                workload.title,
                _cell(got["yr"], workload.unit),
                _cell(got["ray"], workload.unit),
                "" if ratio is None else f"{ratio:.2f}x",
                workload.target,
                {True: "yes", False: "NO", None: "n/a"}[met],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def details(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = []
    for name, by_framework in results.items():
        for framework, result in by_framework.items():
            extra = {k: v for k, v in result.items() if k != "value"}
            if extra:
                rounded = {
                    k: [round(x, 1) if isinstance(x, float) else x for x in v]
                    if isinstance(v, list)
                    else (round(v, 2) if isinstance(v, float) else v)
                    for k, v in extra.items()
                }
                lines.append(f"  {name:<10} {framework:<4} {rounded}")
    return "\n".join(lines)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(BY_NAME),
        metavar="NAME",
        help=f"workloads to run, of: {', '.join(BY_NAME)}",
    )
    parser.add_argument("--quick", action="store_true", help="shorter loops, fewer repeats")
    parser.add_argument(
        "--rounds",
        type=_positive_int,
        default=1,
        help="run each workload this many times, frameworks alternating, and report medians",
    )
    parser.add_argument("--frameworks", nargs="+", default=["yr", "ray"], choices=["yr", "ray"])
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument(
        "--log",
        default=os.path.join(tempfile.gettempdir(), "compare_ray.log"),
        help="where the children's stderr goes",
    )
    parser.add_argument(
        "--child", nargs=2, metavar=("FRAMEWORK", "WORKLOAD"), help=argparse.SUPPRESS
    )
    parser.add_argument("--grpc-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.grpc_server:
        grpc_server()
        return
    if args.child:
        child(args.child[0], args.child[1], args.quick)
        return
    names = args.only or list(BY_NAME)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    started = time.monotonic()
    with open(args.log, "w") as log:
        for name in names:
            workload = BY_NAME[name]
            frameworks = [f for f in workload.frameworks if f in args.frameworks or f == "grpc"]
            runs: dict[str, list[dict[str, Any]]] = {}
            for round_index in range(args.rounds):
                # Alternating who goes first: a machine that drifts favours neither.
                order = frameworks if round_index % 2 == 0 else frameworks[::-1]
                for framework in order:
                    t0 = time.monotonic()
                    result = run_child(framework, name, args.quick, log)
                    runs.setdefault(framework, []).append(result)
                    shown = _fmt(result["value"], workload.unit)
                    error = f"  ({result['error']})" if result.get("error") else ""
                    took = time.monotonic() - t0
                    print(
                        f"{name:<10} {framework:<4} {shown:>14}  [{took:.0f} s]{error}",
                        flush=True,
                    )
            for framework, framework_runs in runs.items():
                results.setdefault(name, {})[framework] = _median_run(framework_runs)
            for framework in ("yr", "ray"):
                if framework in workload.frameworks:
                    results[name].setdefault(framework, {"value": None, "error": NOT_RUN})
    print()
    print(table(results))
    print("\nDetails:\n" + details(results))
    print(f"\nTotal {time.monotonic() - started:.0f} s; children's stderr in {args.log}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
