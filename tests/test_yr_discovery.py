"""How the `yr` command finds local sessions, and that only their owner can use them."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import grpc
import pytest

import yr
from tests.observe_instances import Leaf
from tests.yr_cli_support import private_session
from yr.protocol import yr_pb2, yr_pb2_grpc
from yr.runtime.local import discovery

__all__ = ["private_session"]


def test_session_files_are_private_to_the_user(private_session, tmp_path):
    directory = tmp_path / "run"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = list(directory.iterdir())
    assert {path.suffix for path in files} == {".json", ".token"}
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in files)


def test_the_published_file_holds_no_token(private_session, tmp_path):
    (published,) = (tmp_path / "run").glob("*.json")
    assert private_session.session_token not in published.read_text()


def test_finalize_removes_the_session_files(tmp_path, monkeypatch):
    monkeypatch.setenv("YR_RUNTIME_DIR", str(tmp_path / "run"))
    yr.init(yr.Config(num_cpus=4))
    assert len(list((tmp_path / "run").iterdir())) == 2
    yr.finalize()
    assert list((tmp_path / "run").iterdir()) == []


def test_stale_sessions_of_dead_drivers_are_swept(tmp_path, monkeypatch):
    monkeypatch.setenv("YR_RUNTIME_DIR", str(tmp_path / "run"))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    (directory / "gone.json").write_text(
        json.dumps(
            {
                "session_id": "gone",
                "pid": int(dead.stdout),
                "control_address": "127.0.0.1:1",
                "token_file": str(directory / "gone.token"),
                "program": "x",
                "started": 0.0,
            }
        )
    )
    (directory / "gone.token").write_text("secret")
    assert discovery.sessions() == []
    assert list(directory.iterdir()) == []


def test_a_runtime_directory_others_can_read_is_refused(tmp_path, monkeypatch):
    directory = tmp_path / "run"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    monkeypatch.setenv("YR_RUNTIME_DIR", str(directory))
    with pytest.raises(PermissionError, match="must be a directory owned by uid .* mode 0700"):
        discovery.sessions()


def test_the_stack_rpc_refuses_a_caller_without_the_token(private_session):
    leaf = Leaf.invoke()
    address = yr.session.current().runtime.endpoint(leaf.instance_id).result(30).address
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as refused:
        yr_pb2_grpc.DebugStub(channel).Stacks(yr_pb2.StacksRequest(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_inspect_service_refuses_a_caller_without_the_token(private_session):
    (info,) = discovery.sessions()
    with (
        grpc.insecure_channel(info.control_address) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        yr_pb2_grpc.InspectStub(channel).Snapshot(yr_pb2.SnapshotRequest(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_session_runs_unpublished_when_the_runtime_directory_is_not_private(
    tmp_path, monkeypatch, caplog
):
    directory = tmp_path / "run"
    directory.mkdir()
    os.chmod(directory, 0o755)
    monkeypatch.setenv("YR_RUNTIME_DIR", str(directory))
    yr.init(yr.Config(num_cpus=4))
    try:
        assert list(directory.iterdir()) == []
        assert "not visible to the `yr` command" in caplog.text
    finally:
        yr.finalize()
