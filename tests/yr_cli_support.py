"""Running the `yr` command as a user would (a separate process) against the tests' sessions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import yr
from tests.support import all_dead, wait_for
from yr.runtime.local.runtime import LocalRuntime


def run_yr(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``yr ARGS`` in a child process (killed at ``timeout``) with this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "yr.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )


def yr_json(*args: str) -> Any:
    done = run_yr(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def flatten(nodes: list[dict[str, Any]], depth: int = 1) -> dict[str, dict[str, Any]]:
    """Every node of a `yr tree --json` tree by id, each with its depth (1 = under the driver)."""
    found = {}
    for node in nodes:
        found[node["id"]] = {**node, "depth": depth}
        found.update(flatten(node["children"], depth + 1))
    return found


@pytest.fixture
def private_session(tmp_path, monkeypatch) -> Iterator[LocalRuntime]:
    """A local session published in a runtime directory of this test's own."""
    monkeypatch.setenv("YR_RUNTIME_DIR", str(tmp_path / "run"))
    yr.init(yr.Config(num_cpus=16))
    runtime = yr.session.current().runtime
    assert isinstance(runtime, LocalRuntime)
    started: set[int] = {runtime.zygote_pid}
    try:
        yield runtime
    finally:
        started |= runtime.spawned_pids()
        yr.finalize()
        wait_for(lambda: all_dead(started), timeout=15, what="the session's processes to exit")
