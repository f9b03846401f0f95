"""The tutorial's tree (examples/tree_training.py) made deadlock-free with resource groups.

    YR_NUM_CPUS=4 python examples/tree_training_groups.py

Each experiment first reserves its whole team, one bundle for the supervisor and one per worker,
all or nothing; the supervisor and its workers are then placed in those bundles. Where the
plain tutorial lets two supervisors take CPU their workers need (4 CPUs: both supervisors and
two workers start, the other two workers never do, and after 30 s yr reports the resource
deadlock), here the second experiment's group waits, holding nothing, until the first
experiment ends and removes its group; then it runs. With enough CPUs both run at once.

The same file runs on Kubernetes (YR_BACKEND=kubernetes, see README.md): there each bundle is
reserved on a node before any member of the team starts.
"""

import time
from concurrent.futures import ThreadPoolExecutor

import yr

NUM_WORKERS = 2
ADMISSION_TIMEOUT_S = 600  # how long an experiment may wait for its team's resources

# Create stateful function class instances and set their required runtime resources (1 CPU core)
opt = yr.InvokeOptions(cpu=1000)
# One bundle holds one member: the same CPU and memory the members ask for.
BUNDLE = {"CPU": opt.cpu, "Memory": opt.memory}


def in_bundle(group_name: str, index: int) -> yr.InvokeOptions:
    """The members' options, placed in bundle ``index`` of the experiment's group."""
    placed = yr.InvokeOptions(cpu=opt.cpu, memory=opt.memory)
    placed.resource_group_options = yr.ResourceGroupOptions(group_name, index)
    return placed


# --- 2. Bottom Layer: Workers that execute actual training ---
@yr.instance(invoke_options=opt)
class TrainingWorker:
    def train(self, shard_id, hyperparams):
        # Simulate training process
        lr = hyperparams["lr"]
        print(f"Worker {shard_id} is training data shard with lr={lr}...")
        time.sleep(2)
        return f"Loss: {0.1 / lr}"


# --- 1. Middle Layer: Supervisors responsible for orchestration ---
@yr.instance(invoke_options=opt)
class TrainingSupervisor:
    def __init__(self, hyperparams, group_name):
        self.hyperparams = hyperparams
        self.group_name = group_name
        self.workers = []

    def start_training(self, num_workers):
        # The team goes into the bundles reserved for it (bundle 0 is the supervisor's)
        self.workers = [
            TrainingWorker.options(in_bundle(self.group_name, i + 1)).invoke()
            for i in range(num_workers)
        ]

        # Schedule all Workers to train data shards in parallel
        results = yr.get([w.train.invoke(i, self.hyperparams) for i, w in enumerate(self.workers)])
        return f"Hyperparameter {self.hyperparams} experiment completed, results: {results}"


def run_experiment(hyperparams):
    """One experiment in its own resource group, removed (team and all) when it ends."""
    group = yr.create_resource_group([BUNDLE] * (1 + NUM_WORKERS))
    try:
        group.wait(ADMISSION_TIMEOUT_S)
        print(f"Experiment {hyperparams}: resource group admitted, starting its team")
        supervisor = TrainingSupervisor.options(in_bundle(group.resource_group_name, 0)).invoke(
            hyperparams, group.resource_group_name
        )
        report = yr.get(supervisor.start_training.invoke(num_workers=NUM_WORKERS))
        print(f"Experiment {hyperparams}: done, releasing its resource group")
        return report
    finally:
        yr.remove_resource_group(group)


# --- Main Controller ---
yr.init()

# Launch two experiments with different hyperparameters; each starts once its team fits
configs = [{"lr": 0.01}, {"lr": 0.001}]
with ThreadPoolExecutor(max_workers=len(configs)) as experiments:
    final_reports = list(experiments.map(run_experiment, configs))

for report in final_reports:
    print(report)

yr.finalize()
