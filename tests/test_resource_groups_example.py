"""The tutorial at 4 CPUs: with a resource group per experiment it completes both experiments
one after the other; unmodified, it reports the resource deadlock."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

from tests.support import all_dead

EXAMPLES = pathlib.Path(__file__).parents[1] / "examples"
SHORT_SCHEDULE_TIMEOUT_MS = "3000"  # the deadlock shows after this instead of the default 30 s


def run_at_four_cpus(
    example: str, *, timeout: float, **extra_env: str
) -> subprocess.CompletedProcess:
    env = {**os.environ, "YR_NUM_CPUS": "4", "YR_BACKEND": "local", **extra_env}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / example)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_the_groups_example_completes_both_experiments_one_after_the_other_at_four_cpus():
    finished = run_at_four_cpus("tree_training_groups.py", timeout=300)
    assert finished.returncode == 0, finished.stderr
    out = finished.stdout
    assert "results: ['Loss: 10.0', 'Loss: 10.0']" in out
    assert "results: ['Loss: 100.0', 'Loss: 100.0']" in out
    progress = re.findall(r"^Experiment (\{.*\}): (.*)$", out, flags=re.MULTILINE)
    # two groups of 3 CPUs do not fit in 4: the second is admitted after the first is done
    assert [step for _, step in progress] == [
        "resource group admitted, starting its team",
        "done, releasing its resource group",
    ] * 2, out
    assert progress[0][0] == progress[1][0] != progress[2][0] == progress[3][0]
    training = [line for line in out.splitlines() if "is training data shard" in line]
    assert len(training) == 4
    assert all_dead(int(re.search(r"pid=(\d+)\)", line).group(1)) for line in training)


def test_the_unmodified_tutorial_reports_the_resource_deadlock_at_four_cpus():
    finished = run_at_four_cpus(
        "tree_training.py", timeout=300, YR_SCHEDULE_TIMEOUT_MS=SHORT_SCHEDULE_TIMEOUT_MS
    )
    assert finished.returncode != 0
    assert "YRSchedulingError" in finished.stderr
    assert f"could not be scheduled within {SHORT_SCHEDULE_TIMEOUT_MS} ms" in finished.stderr
    assert "This is a resource deadlock" in finished.stderr
