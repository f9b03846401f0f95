"""The tutorial's tree doing real work: supervisors (one per learning rate) that each train a
logistic-regression model data-parallel on N workers, gradients all-reduced every step.

    python examples/data_parallel_training.py [--workers N] [--steps S] [--kill-a-worker]

Each supervisor holds the checkpoint (weights and step after each segment of steps). With
--kill-a-worker one worker SIGKILLs itself mid-training; its supervisor replaces it, re-forms
the group and re-runs the segment from the checkpoint, so the run still ends with the weights
of single-process full-batch training (printed as the difference from it).
"""

from __future__ import annotations

import argparse
import os
import signal

import numpy as np

import yr
from yr import collective

SAMPLES = 8192
FEATURES = 32
SEED = 7
SEGMENT_STEPS = 10  # steps between checkpoints


def make_problem(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic, noisy, linearly separable-ish binary classification problem."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((SAMPLES, FEATURES))
    true_weights = rng.standard_normal(FEATURES)
    labels = (features @ true_weights + 0.5 * rng.standard_normal(SAMPLES) > 0).astype(float)
    return features, labels


def loss_and_gradient(weights, features, labels) -> tuple[float, np.ndarray]:
    """Summed (not averaged) log-loss and its gradient, so shards add up to the full batch."""
    logits = features @ weights
    probabilities = 1.0 / (1.0 + np.exp(-logits))
    loss = np.sum(np.logaddexp(0.0, logits) - labels * logits)
    return float(loss), features.T @ (probabilities - labels)


def accuracy(weights, features, labels) -> float:
    return float(np.mean((features @ weights > 0) == (labels > 0.5)))


def train_single_process(lr: float, steps: int) -> np.ndarray:
    """The reference: full-batch gradient descent in one process."""
    features, labels = make_problem(SEED)
    weights = np.zeros(FEATURES)
    for _ in range(steps):
        _, gradient = loss_and_gradient(weights, features, labels)
        weights -= lr * gradient / SAMPLES
    return weights


@yr.instance(invoke_options=yr.InvokeOptions(cpu=500, memory=200))
class TrainingWorker:
    def __init__(self, shard: int, num_shards: int) -> None:
        features, labels = make_problem(SEED)
        rows = slice(SAMPLES * shard // num_shards, SAMPLES * (shard + 1) // num_shards)
        self.features, self.labels = features[rows], labels[rows]

    def train(self, weights, lr: float, steps: int, group: str, die_after: int = -1):
        """Run ``steps`` steps from ``weights``; returns the new weights and each step's loss."""
        weights = np.array(weights)
        losses = []
        for step in range(steps):
            if step == die_after:
                os.kill(os.getpid(), signal.SIGKILL)
            loss, gradient = loss_and_gradient(weights, self.features, self.labels)
            packed = np.append(gradient, loss)  # one allreduce carries gradient and loss
            collective.allreduce(packed, group_name=group, out=packed)
            weights -= lr * packed[:-1] / SAMPLES
            losses.append(packed[-1] / SAMPLES)
        return weights, losses


@yr.instance(invoke_options=yr.InvokeOptions(cpu=500, memory=200))
class TrainingSupervisor:
    def __init__(self, hyperparams: dict) -> None:
        self.hyperparams = hyperparams
        self.weights = np.zeros(FEATURES)  # the checkpoint: weights after `self.step` steps
        self.step = 0
        self.losses: list[float] = []
        self.replaced = 0

    def start_training(self, num_workers: int, steps: int, kill_a_worker: bool = False) -> dict:
        def start_worker(rank: int):
            return TrainingWorker.invoke(rank, num_workers)

        name = f"lr-{self.hyperparams['lr']}"
        group = collective.create_group([start_worker(r) for r in range(num_workers)], name=name)
        kill_at = steps // 2 if kill_a_worker else -1  # the step at which one worker dies
        while self.step < steps:
            segment = min(SEGMENT_STEPS, steps - self.step)
            refs = []
            for rank, worker in enumerate(group.members):
                doomed = rank == num_workers - 1 and self.step <= kill_at < self.step + segment
                die_after = kill_at - self.step if doomed else -1
                refs.append(
                    worker.train.invoke(
                        self.weights, self.hyperparams["lr"], segment, name, die_after
                    )
                )
            try:
                results = collective.gather(group, refs)
            except collective.MembersDiedError as error:
                print(f"[{name}] {error}; replacing and resuming from step {self.step}")
                group = collective.heal(group, error.dead_ranks, start_worker)
                self.replaced += len(error.dead_ranks)
                kill_at = -1  # one kill per run
                continue
            self.weights, losses = results[0]
            self.losses += losses
            self.step += segment
        group.destroy()
        return {
            "lr": self.hyperparams["lr"],
            "weights": self.weights,
            "losses": self.losses,
            "replaced": self.replaced,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="workers per supervisor")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--kill-a-worker", action="store_true", help="SIGKILL one mid-training")
    args = parser.parse_args()

    yr.init()
    try:
        configs = [{"lr": 0.5}, {"lr": 0.05}]
        supervisors = [TrainingSupervisor.invoke(config) for config in configs]
        reports = yr.get(
            [
                s.start_training.invoke(args.workers, args.steps, args.kill_a_worker)
                for s in supervisors
            ]
        )
    finally:
        yr.finalize()
    features, labels = make_problem(SEED)
    for report in reports:
        reference = train_single_process(report["lr"], args.steps)
        difference = float(np.max(np.abs(report["weights"] - reference)))
        losses = report["losses"]
        print(
            f"lr={report['lr']}: loss {losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses)} "
            f"steps, accuracy {accuracy(report['weights'], features, labels):.4f}, "
            f"workers replaced {report['replaced']}, "
            f"max |w - single-process w| = {difference:.3g}"
        )


if __name__ == "__main__":
    main()
