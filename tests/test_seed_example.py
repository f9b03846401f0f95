"""The seed tutorial's tree-training program runs unmodified on the local runtime."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

from tests.support import all_dead

EXAMPLE = pathlib.Path(__file__).parents[1] / "examples" / "tree_training.py"


def test_the_seed_program_prints_both_reports_and_every_worker_line():
    finished = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120
    )
    assert finished.returncode == 0, finished.stderr
    out = finished.stdout
    assert "results: ['Loss: 10.0', 'Loss: 10.0']" in out
    assert "results: ['Loss: 100.0', 'Loss: 100.0']" in out
    training = [line for line in out.splitlines() if "is training data shard" in line]
    assert len(training) == 4
    assert sorted(re.search(r"Worker (\d)", line).group(1) for line in training) == list("0011")
    worker_pids = [int(re.search(r"pid=(\d+)\)", line).group(1)) for line in training]
    assert all_dead(worker_pids)
    assert "local runtime started with" in finished.stderr
