"""Why this exists: issue 10's side-by-side of yr.collective and Ray for allreduce and one
data-parallel training step, against a floor (one numpy copy of the same bytes).

    python bench/collective.py                      # yr, the floor, then Ray (~3 minutes)
    python bench/collective.py --ray-python /path/to/venv/bin/python   # Ray from another env

4 workers each allreduce (sum) a float32 array of 1, 16 and 100 MiB. yr: the members run the
collective peer to peer (on one machine through shared memory, or the kernel's cross-memory
copy); each repetition is timed inside the members after a barrier, the slowest rank counting.
Ray runs two ways: ``ray.util.collective``'s allreduce with its CPU backend (gloo, through
torch.distributed; needs torch in Ray's environment), timed exactly like yr's, and Ray's
documented parameter-server pattern through the object store (every worker returns its array,
a server actor sums them, every worker fetches the sum), timed at the driver. Without torch the
gloo rows say why. The training step is examples/data_parallel_training.py's step (4 workers):
yr and Ray gloo all-reduce the gradient in the workers; the parameter server does it its way.

Two references: the floor, one numpy copy of the array in one process (issue 10's yardstick),
and the least memory traffic, 4 processes each copying the array at once: any allreduce of 4
ranks reads every input byte and writes every output byte at least once, so it moves at least
that, through the same cores and memory bus.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
from _stats import slowest_rank_median

MiB = 1 << 20
SIZES_MIB = (1, 16, 100)
WORKERS = 4
REPEATS = {1: 20, 16: 8, 100: 4}
STEPS = 30
FEATURES = 32
SAMPLES = 8192


def problem() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    features = rng.standard_normal((SAMPLES, FEATURES))
    labels = (features @ rng.standard_normal(FEATURES) > 0).astype(float)
    return features, labels


def shard_of(shard: int) -> tuple[np.ndarray, np.ndarray]:
    """Worker ``shard``'s rows of the problem (features, labels)."""
    features, labels = problem()
    rows = slice(SAMPLES * shard // WORKERS, SAMPLES * (shard + 1) // WORKERS)
    return features[rows], labels[rows]


def gradient(weights, features, labels) -> np.ndarray:
    probabilities = 1.0 / (1.0 + np.exp(-(features @ weights)))
    return features.T @ (probabilities - labels)


def floor_copy(nbytes: int) -> float:
    source = np.ones(nbytes // 4, np.float32)
    target = np.empty_like(source)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        np.copyto(target, source)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _copier(nbytes: int, barrier, repeats: int) -> None:
    source = np.ones(nbytes // 4, np.float32)
    target = np.zeros_like(source)  # faulted in before the clock starts
    for _ in range(repeats):
        barrier.wait()
        np.copyto(target, source)
        barrier.wait()


def minimum_traffic(nbytes: int, workers: int = WORKERS, repeats: int = 5) -> float:
    """Wall time of ``workers`` processes each copying ``nbytes`` at once: the least memory
    traffic any allreduce among them must make (every input byte read once, every output byte
    written once), with the machine's cores and memory bus shared as the members share them."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(workers + 1)
    copiers = [
        context.Process(target=_copier, args=(nbytes, barrier, repeats)) for _ in range(workers)
    ]
    for copier in copiers:
        copier.start()
    times = []
    try:
        for _ in range(repeats):
            barrier.wait(timeout=120)
            started = time.perf_counter()
            barrier.wait(timeout=120)
            times.append(time.perf_counter() - started)
    finally:
        for copier in copiers:
            copier.join(timeout=60)
            if copier.is_alive():  # a broken barrier: end what this started
                copier.kill()
                copier.join()
    return statistics.median(times)


# -- yr --------------------------------------------------------------------------------------


def run_yr() -> dict:
    import yr
    from yr import collective

    @yr.instance(invoke_options=yr.InvokeOptions(cpu=1000, memory=1000))
    class Member:
        def __init__(self, shard: int) -> None:
            self.features, self.labels = shard_of(shard)

        def allreduce(self, nbytes: int, repeats: int) -> list[float]:
            array = np.ones(nbytes // 4, np.float32)
            out = np.empty_like(array)
            collective.allreduce(array, out=out)  # warm up: map the segments
            times = []
            for _ in range(repeats):
                collective.barrier()
                started = time.perf_counter()
                collective.allreduce(array, out=out)
                times.append(time.perf_counter() - started)
            return times

        def train(self, weights, lr: float, steps: int) -> np.ndarray:
            for _ in range(steps):
                packed = gradient(weights, self.features, self.labels)
                collective.allreduce(packed, out=packed)
                weights = weights - lr * packed / SAMPLES
            return weights

    yr.init(yr.Config(num_cpus=8))
    try:
        members = [Member.invoke(rank) for rank in range(WORKERS)]
        collective.create_group(members, name="default")
        results = {}
        for size in SIZES_MIB:
            per_rank = yr.get(
                [m.allreduce.invoke(size * MiB, REPEATS[size]) for m in members], timeout=600
            )
            results[f"allreduce_{size}MiB"] = slowest_rank_median(per_rank)
        weights = np.zeros(FEATURES)
        yr.get([m.train.invoke(weights, 0.5, 2) for m in members])  # warm up
        started = time.perf_counter()
        yr.get([m.train.invoke(weights, 0.5, STEPS) for m in members])
        results["train_step"] = (time.perf_counter() - started) / STEPS
        return results
    finally:
        yr.finalize()


# -- Ray ---------------------------------------------------------------------------------------


def run_ray() -> dict:
    import ray

    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    try:

        @ray.remote(num_cpus=1)
        class Worker:
            def __init__(self, shard: int) -> None:
                self.features, self.labels = shard_of(shard)
                self.array = None

            def contribution(self, nbytes: int) -> np.ndarray:
                if self.array is None or self.array.nbytes != nbytes:
                    self.array = np.ones(nbytes // 4, np.float32)
                return self.array

            def receive(self, total: np.ndarray) -> int:
                self.result = np.array(total)  # the sum, as a writable local array
                return self.result.size

            def gradient(self, weights: np.ndarray) -> np.ndarray:
                return gradient(weights, self.features, self.labels)

        @ray.remote(num_cpus=1)
        class ParameterServer:
            def total(self, *arrays: np.ndarray) -> np.ndarray:
                result = np.array(arrays[0])
                for array in arrays[1:]:
                    result += array
                return result

            def step(self, weights, lr, *gradients) -> np.ndarray:
                return weights - lr * self.total(*gradients) / SAMPLES

        results = run_ray_gloo(ray)
        workers = [Worker.remote(rank) for rank in range(WORKERS)]
        server = ParameterServer.remote()

        def allreduce_round(nbytes: int) -> float:
            started = time.perf_counter()
            total = server.total.remote(*[w.contribution.remote(nbytes) for w in workers])
            ray.get([w.receive.remote(total) for w in workers])
            return time.perf_counter() - started

        for size in SIZES_MIB:
            allreduce_round(size * MiB)  # warm up
            times = [allreduce_round(size * MiB) for _ in range(REPEATS[size])]
            results[f"ps_allreduce_{size}MiB"] = statistics.median(times)
        weights = ray.put(np.zeros(FEATURES))
        for _ in range(2):
            weights = server.step.remote(
                weights, 0.5, *[w.gradient.remote(weights) for w in workers]
            )
        ray.get(weights)
        started = time.perf_counter()
        for _ in range(STEPS):
            weights = server.step.remote(
                weights, 0.5, *[w.gradient.remote(weights) for w in workers]
            )
        ray.get(weights)
        results["ps_train_step"] = (time.perf_counter() - started) / STEPS
        return results
    finally:
        ray.shutdown()


def run_ray_gloo(ray) -> dict:
    """ray.util.collective with the gloo CPU backend, measured as yr is; or why it cannot run."""
    try:
        import torch  # noqa: F401  (ray.util.collective's gloo backend is torch.distributed)
        from ray.util import collective as ray_collective
    except ImportError as error:
        return {"gloo_error": f"{type(error).__name__}: {error}"}

    @ray.remote(num_cpus=1)
    class GlooWorker:
        def __init__(self, shard: int) -> None:
            self.features, self.labels = shard_of(shard)

        def join(self, rank: int) -> int:
            ray_collective.init_collective_group(WORKERS, rank, backend="gloo")
            return ray_collective.get_rank()

        def allreduce(self, nbytes: int, repeats: int) -> list[float]:
            array = np.ones(nbytes // 4, np.float32)  # reduced in place (as a torch view)
            ray_collective.allreduce(array)  # warm up
            times = []
            for _ in range(repeats):
                ray_collective.barrier()
                started = time.perf_counter()
                ray_collective.allreduce(array)
                times.append(time.perf_counter() - started)
            return times

        def train(self, weights, lr: float, steps: int) -> np.ndarray:
            for _ in range(steps):
                packed = gradient(weights, self.features, self.labels)
                ray_collective.allreduce(packed)
                weights = weights - lr * packed / SAMPLES
            return weights

    workers = [GlooWorker.remote(rank) for rank in range(WORKERS)]
    try:
        ray.get([w.join.remote(rank) for rank, w in enumerate(workers)], timeout=300)
    except Exception as error:  # reported in the table, not hidden
        return {"gloo_error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
    results = {}
    for size in SIZES_MIB:
        per_rank = ray.get([w.allreduce.remote(size * MiB, REPEATS[size]) for w in workers])
        results[f"gloo_allreduce_{size}MiB"] = slowest_rank_median(per_rank)
    weights = np.zeros(FEATURES)
    ray.get([w.train.remote(weights, 0.5, 2) for w in workers])  # warm up
    started = time.perf_counter()
    ray.get([w.train.remote(weights, 0.5, STEPS) for w in workers])
    results["gloo_train_step"] = (time.perf_counter() - started) / STEPS
    for worker in workers:
        ray.kill(worker)
    return results


# -- the table ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ray-python", default=sys.executable, help="a Python that has ray")
    parser.add_argument("--only", choices=("yr", "ray"), help="(internal) run one side, as JSON")
    args = parser.parse_args()
    if args.only:
        print(json.dumps(run_yr() if args.only == "yr" else run_ray()))
        return
    here = os.path.abspath(__file__)
    sides = {}
    for side, python in (("yr", sys.executable), ("ray", args.ray_python)):
        env = dict(os.environ)
        if side == "ray":  # Ray may live in another environment: do not lend it ours
            env.pop("PYTHONPATH", None)
        finished = subprocess.run(
            [python, here, "--only", side], env=env, capture_output=True, text=True, timeout=900
        )
        if finished.returncode != 0:
            sys.exit(f"{side} failed:\n{finished.stderr[-3000:]}")
        sides[side] = json.loads(finished.stdout.strip().splitlines()[-1])
    rows = [
        (f"allreduce {size} MiB x {WORKERS}", f"allreduce_{size}MiB", size) for size in SIZES_MIB
    ]
    rows.append((f"training step, {WORKERS} workers", "train_step", None))
    ray_side = sides["ray"]
    if "gloo_error" in ray_side:
        print(f"Ray's collective (gloo) could not run: {ray_side['gloo_error']}\n")
    print(
        "| workload | yr | Ray collective (gloo) | yr vs Ray gloo | Ray parameter server "
        f"| yr vs Ray PS | numpy copy floor | yr / floor | {WORKERS} copies at once "
        "(least traffic) | yr / least traffic |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, key, size in rows:
        yr_s = sides["yr"][key]
        gloo_s, ps_s = ray_side.get(f"gloo_{key}"), ray_side[f"ps_{key}"]
        gloo = f"{gloo_s * 1e3:.2f} ms | {gloo_s / yr_s:.2f}x" if gloo_s else "n/a | n/a"
        floor_s = floor_copy(size * MiB) if size else 0.0
        floor = f"{floor_s * 1e3:.2f} ms | {yr_s / floor_s:.1f}x" if size else " | "
        least_s = minimum_traffic(size * MiB) if size else 0.0
        least = f"{least_s * 1e3:.2f} ms | {yr_s / least_s:.1f}x" if size else " | "
        print(
            f"| {label} | {yr_s * 1e3:.2f} ms | {gloo} | {ps_s * 1e3:.2f} ms | "
            f"{ps_s / yr_s:.2f}x | {floor} | {least} |"
        )


if __name__ == "__main__":
    main()
