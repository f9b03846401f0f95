"""Tests that need helm and kubectl take them from PATH, and say once how to get them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _collect(test_file: str, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly", test_file],
        cwd=REPO,
        env=dict(os.environ, PATH=path),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_helm_and_kubectl_stop_the_run_with_one_message_naming_the_setup(tmp_path):
    done = _collect("tests/test_chart.py", str(tmp_path))

    assert done.returncode == 4, done.stdout + done.stderr  # pytest's usage error
    output = done.stdout + done.stderr
    assert output.count("helm and kubectl not found on PATH") == 1
    assert ".ci/install-k8s-tools" in output


def test_tests_that_need_no_tools_run_without_them(tmp_path):
    done = _collect("tests/test_cluster_watches.py", str(tmp_path))

    assert done.returncode == 0, done.stdout + done.stderr
