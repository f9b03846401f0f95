"""The code base stays ruff-clean (lint and format), checked with the tests."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).parents[1]


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True
    )


def test_ruff_finds_no_lint_errors():
    result = _ruff("check", ".", ".ci/install-k8s-tools")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_code_is_ruff_formatted():
    result = _ruff("format", "--check", ".", ".ci/install-k8s-tools")
    assert result.returncode == 0, result.stdout + result.stderr
