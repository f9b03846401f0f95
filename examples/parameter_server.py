"""The tutorial's tree with a parameter server instead of all-reduce: per learning rate, a
supervisor starts a ParameterServer and N workers; each worker pulls the weights, computes the
gradient of its data shard and pushes it, with no barrier between workers (asynchronous SGD).

    python examples/parameter_server.py [--workers N] [--steps S]
"""

from __future__ import annotations

import argparse

import numpy as np

import yr

SAMPLES = 8192
FEATURES = 32
SEED = 7


def make_problem(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The data-parallel example's problem (examples/data_parallel_training.py)."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((SAMPLES, FEATURES))
    true_weights = rng.standard_normal(FEATURES)
    labels = (features @ true_weights + 0.5 * rng.standard_normal(SAMPLES) > 0).astype(float)
    return features, labels


def mean_loss_and_gradient(weights, features, labels) -> tuple[float, np.ndarray]:
    logits = features @ weights
    probabilities = 1.0 / (1.0 + np.exp(-logits))
    loss = np.mean(np.logaddexp(0.0, logits) - labels * logits)
    return float(loss), features.T @ (probabilities - labels) / len(labels)


@yr.instance(invoke_options=yr.InvokeOptions(cpu=300, memory=200))
class ParameterServer:
    """Holds the weights; applies each pushed gradient as it arrives."""

    def __init__(self, lr: float) -> None:
        self.lr = lr
        self.weights = np.zeros(FEATURES)
        self.updates = 0

    def pull(self) -> np.ndarray:
        return self.weights

    def push(self, gradient: np.ndarray) -> int:
        self.weights = self.weights - self.lr * gradient
        self.updates += 1
        return self.updates

    def updates_applied(self) -> int:
        return self.updates


@yr.instance(invoke_options=yr.InvokeOptions(cpu=300, memory=200))
class ShardWorker:
    def __init__(self, shard: int, num_shards: int) -> None:
        features, labels = make_problem(SEED)
        rows = slice(SAMPLES * shard // num_shards, SAMPLES * (shard + 1) // num_shards)
        self.features, self.labels = features[rows], labels[rows]

    def train(self, server, steps: int) -> list[float]:
        losses = []
        pushed = None
        for _ in range(steps):
            weights = yr.get(server.pull.invoke())
            loss, gradient = mean_loss_and_gradient(weights, self.features, self.labels)
            if pushed is not None:
                yr.get(pushed)  # at most one push in flight per worker
            pushed = server.push.invoke(gradient)
            losses.append(loss)
        yr.get(pushed)
        return losses


@yr.instance(invoke_options=yr.InvokeOptions(cpu=300, memory=200))
class Supervisor:
    def __init__(self, hyperparams: dict) -> None:
        self.hyperparams = hyperparams

    def start_training(self, num_workers: int, steps: int) -> dict:
        server = ParameterServer.invoke(self.hyperparams["lr"])
        workers = [ShardWorker.invoke(rank, num_workers) for rank in range(num_workers)]
        losses = yr.get([worker.train.invoke(server, steps) for worker in workers], timeout=600)
        return {
            "lr": self.hyperparams["lr"],
            "weights": yr.get(server.pull.invoke()),
            "updates": yr.get(server.updates_applied.invoke()),
            "first_loss": float(np.mean([worker[0] for worker in losses])),
            "last_loss": float(np.mean([worker[-1] for worker in losses])),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="workers per supervisor")
    parser.add_argument("--steps", type=int, default=60, help="gradient pushes per worker")
    args = parser.parse_args()

    yr.init()
    try:
        supervisors = [Supervisor.invoke({"lr": lr}) for lr in (0.5, 0.05)]
        reports = yr.get([s.start_training.invoke(args.workers, args.steps) for s in supervisors])
    finally:
        yr.finalize()
    features, labels = make_problem(SEED)
    for report in reports:
        accuracy = float(np.mean((features @ report["weights"] > 0) == (labels > 0.5)))
        print(
            f"lr={report['lr']}: loss {report['first_loss']:.4f} -> {report['last_loss']:.4f}, "
            f"{report['updates']} asynchronous updates, accuracy {accuracy:.4f}"
        )


if __name__ == "__main__":
    main()
