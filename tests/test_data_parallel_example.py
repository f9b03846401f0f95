"""examples/data_parallel_training.py as shipped: the weights of single-process training."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).parents[1]
EXAMPLE = REPO / "examples" / "data_parallel_training.py"
REPORT = re.compile(
    r"lr=(?P<lr>[\d.]+): loss .* accuracy (?P<accuracy>[\d.]+), workers replaced "
    r"(?P<replaced>\d+), max \|w - single-process w\| = (?P<difference>\S+)"
)


def run_example(*args: str, env: dict[str, str] | None = None) -> dict[str, dict]:
    finished = subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        env=env or dict(os.environ),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,  # kills the driver; its instances die with it (fate sharing)
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    reports = {m["lr"]: m.groupdict() for m in REPORT.finditer(finished.stdout)}
    assert set(reports) == {"0.5", "0.05"}, finished.stdout
    return reports


def test_data_parallel_weights_equal_single_process_training():
    for report in run_example("--workers", "3").values():
        assert float(report["difference"]) < 1e-6
        assert report["replaced"] == "0"


@pytest.fixture(scope="module")
def undisturbed() -> dict[str, dict]:
    return run_example()


def test_killing_a_worker_mid_training_heals_and_still_equals_single_process(undisturbed):
    healed = run_example("--kill-a-worker")
    for lr, report in healed.items():
        assert report["replaced"] == "1"
        assert float(report["difference"]) < 1e-6
        assert report["accuracy"] == undisturbed[lr]["accuracy"]


def test_parameter_server_example_applies_every_push_and_learns():
    finished = subprocess.run(
        [sys.executable, str(REPO / "examples" / "parameter_server.py"), "--steps", "40"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    reports = re.findall(r"(\d+) asynchronous updates, accuracy ([\d.]+)", finished.stdout)
    assert len(reports) == 2, finished.stdout
    for updates, accuracy in reports:
        assert int(updates) == 2 * 40  # two workers, every push applied
        assert float(accuracy) > 0.9
