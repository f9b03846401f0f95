"""The instance server and the driver's control server against callers without the token."""

from __future__ import annotations

import os
import subprocess
import sys

import yr
from tests.instances import Counter


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class Spawner:
    def child_environment_token(self) -> str:
        """What a process started by the user's code finds in YR_SESSION_TOKEN."""
        code = "import os; print(os.environ.get('YR_SESSION_TOKEN', ''))"
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        ).stdout.strip()

    def own_environment_token(self) -> str:
        return os.environ.get("YR_SESSION_TOKEN", "")

    def nested_call(self) -> int:
        return yr.get(Counter.invoke(41).add.invoke(1))


def test_processes_started_by_an_instance_do_not_inherit_the_session_token(local_runtime):
    spawner = Spawner.invoke()
    assert yr.get(spawner.child_environment_token.invoke()) == ""
    assert yr.get(spawner.own_environment_token.invoke()) == ""


def test_an_instance_without_the_token_in_its_environment_still_creates_instances(local_runtime):
    spawner = Spawner.invoke()
    assert yr.get(spawner.own_environment_token.invoke()) == ""
    assert yr.get(spawner.nested_call.invoke()) == 42
