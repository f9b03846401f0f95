"""Running the `yr` command as a user would (a separate process) against the tests' sessions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.local_fixtures import local_session
from yr.runtime.local.runtime import LocalRuntime

# What `yr list` must say of the observed tree (tests/observe_instances.py), on either backend:
# role -> (state, owner's role, class).
OBSERVED_FACTS = {
    "top": ("ready", "driver", "Top"),
    "middle": ("ready", "top", "Middle"),
    "leaf": ("ready", "middle", "Leaf"),
    "doomed": ("dead", "top", "Doomed"),
}


def run_yr(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    """``yr ARGS`` in a child process (killed at ``timeout``) with this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "yr.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, **env),
    )


def yr_json(*args: str, **env: str) -> Any:
    done = run_yr(*args, "--json", **env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def observed_facts(rows: list[dict[str, Any]], ids: dict[str, str]) -> dict[str, tuple]:
    """The observed tree's rows as role -> (state, owner's role, class)."""
    role = {instance_id: name for name, instance_id in ids.items()}
    return {
        role[row["id"]]: (
            row["state"],
            role.get(row["owner"], row["owner"]),
            row["class"].split(".")[-1],
        )
        for row in rows
        if row["id"] in role
    }


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
    with local_session() as runtime:
        yield runtime
