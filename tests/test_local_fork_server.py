"""The fork server under stress: blocking I/O, large payloads, failed forks, its own death."""

from __future__ import annotations

import gc
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

import yr
from tests.call_instances import Probe
from tests.instances import Counter, Spawner
from tests.support import all_dead, call_in_flight, wait_for
from yr.runtime.local.wire import CommandReader, encode_command
from yr.runtime.local.zygote import FAIL_FORK_ENV, parse_options

REPO = pathlib.Path(__file__).resolve().parent.parent
MiB = 1 << 20


def run_driver(script: str, *, deadline: float) -> str:
    """Run ``script`` as a driver in its own process group; kill the group if it overruns."""
    driver = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        output, _ = driver.communicate(timeout=deadline)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and its fork server; instances follow
        driver.communicate()
        pytest.fail(f"the driver was still running after {deadline} s: the session wedged")
    assert driver.returncode == 0, output
    return output


def test_a_large_constructor_argument_while_many_instances_exit_never_wedges():
    output = run_driver(
        """
        import array, fcntl, os, signal, termios, threading
        import yr
        from tests.instances import Counter, Spawner
        from tests.support import wait_for

        yr.init(yr.Config(num_cpus=64))
        runtime = yr.session.current().runtime
        zygote = runtime.zygote_pid
        # A one-page event pipe: a few dozen exits fill it, as hundreds do at the default size.
        fcntl.fcntl(runtime._zygote._process.stdout.fileno(), fcntl.F_SETPIPE_SZ, 4096)
        crowd = [Counter.options(yr.InvokeOptions(cpu=10)).invoke() for _ in range(60)]
        pids = yr.get([member.pid.invoke() for member in crowd], timeout=120)

        # The crowd dies while the fork server is stopped: it reports all 60 exits at once,
        # exactly while the driver sends it a 32 MB spawn command.
        os.kill(zygote, signal.SIGSTOP)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        big, returned = [], threading.Event()

        def create():
            big.append(Spawner.invoke(b"x" * (32 << 20)))
            returned.set()

        def queued_for_the_fork_server():
            count = array.array("i", [0])
            fcntl.ioctl(runtime._zygote._process.stdin.fileno(), termios.FIONREAD, count)
            return count[0]

        threading.Thread(target=create, daemon=True).start()
        wait_for(
            lambda: returned.is_set() or queued_for_the_fork_server() >= 4096,
            timeout=60,
            what="the spawn command to be sent or queued",
        )
        os.kill(zygote, signal.SIGCONT)
        returned.wait()
        print(yr.get(big[0].size.invoke(), timeout=120), flush=True)
        yr.finalize()
        print("finalized", flush=True)
        """,
        deadline=120,
    )
    assert output.split() == [str(32 * MiB), "finalized"]


def test_invoke_with_a_large_constructor_argument_returns_while_the_fork_server_is_busy(
    local_runtime,
):
    os.kill(local_runtime.zygote_pid, signal.SIGSTOP)  # a fork server that reads nothing
    handles = []
    returned = threading.Event()

    def create() -> None:
        handles.append(Spawner.invoke(b"x" * (32 * MiB)))
        yr.resources()
        returned.set()

    try:
        threading.Thread(target=create, daemon=True).start()
        assert returned.wait(30), "invoke() or yr.resources() waited for the fork server"
    finally:
        os.kill(local_runtime.zygote_pid, signal.SIGCONT)
    assert yr.get(handles[0].size.invoke(), timeout=60) == 32 * MiB


def test_commands_are_reassembled_from_reads_of_any_size():
    commands = [{"op": "spawn", "payload": b"p" * n} for n in (0, 5, 70_000)]
    stream = b"".join(encode_command(command) for command in commands)
    for chunk in (1, 3, 4096, len(stream)):
        reader = CommandReader()
        received = []
        for start in range(0, len(stream), chunk):
            received += reader.feed(stream[start : start + chunk])
        assert received == commands


@pytest.fixture
def failing_forks(tmp_path, monkeypatch) -> pathlib.Path:
    """While the returned path exists, the fork server's forks fail with EAGAIN."""
    marker = tmp_path / "fail-forks"
    monkeypatch.setenv(FAIL_FORK_ENV, str(marker))
    return marker


def test_a_failed_fork_fails_only_that_instance_and_returns_its_cpu(failing_forks, local_runtime):
    survivor = Counter.invoke()
    assert yr.get(survivor.add.invoke(1)) == 1
    failing_forks.touch()
    doomed = Counter.invoke()
    with pytest.raises(yr.YRError, match="could not fork") as caught:
        yr.get(doomed.add.invoke(1), timeout=30)
    assert doomed.instance_id in str(caught.value) and "EAGAIN" in str(caught.value)
    assert yr.resources()[0]["holders"] == {survivor.instance_id: 100}

    failing_forks.unlink()
    assert yr.get(survivor.add.invoke(1)) == 2
    assert yr.get(Counter.invoke().add.invoke(5), timeout=30) == 5


def test_a_killed_fork_server_fails_calls_at_once_and_finalize_still_works(local_runtime, tmp_path):
    counter = Counter.invoke()
    in_flight = call_in_flight(counter, tmp_path)
    os.kill(local_runtime.zygote_pid, signal.SIGKILL)
    with pytest.raises(yr.YRInstanceDiedError, match="fork server"):
        yr.get(in_flight, timeout=30)
    with pytest.raises(yr.YRInstanceDiedError, match="fork server"):
        yr.get(counter.add.invoke(1), timeout=30)
    with pytest.raises(yr.YRError, match="fork server .* died"):
        Counter.invoke()
    yr.finalize()
    yr.init(yr.Config(num_cpus=1))  # the fixture finalizes a session of its own


def test_a_kill_right_after_the_fork_ends_an_instance_not_yet_leading_its_own_group():
    """Finalize or terminate just after invoke: the kill may come before the new process has
    made its own group; it must end it all the same (else finalize waited 10 s for nothing)."""
    output = run_driver(
        """
        import os, time
        from yr.runtime.local import zygote

        def child_not_yet_in_its_own_group(command, **_):
            time.sleep(120)
            os._exit(0)

        zygote._child = child_not_yet_in_its_own_group
        _, events = os.pipe()
        server = zygote.Zygote(command_fd=0, event_fd=events, shm_prefix="", session_dir="")
        server.spawn({"instance_id": "i-1", "incarnation": 0, "payload_segment": ""})
        pid = server.by_instance["i-1"]
        server.dispatch({"op": "kill", "instance_id": "i-1"})
        _, status = os.waitpid(pid, 0)
        print(os.WIFSIGNALED(status) and os.WTERMSIG(status))
        """,
        deadline=30,
    )
    assert output.strip() == str(int(signal.SIGKILL))


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_init_finalize_cycles_leak_no_file_descriptor():
    gc.collect()
    gc.disable()  # a leak the cyclic GC would hide must show
    try:
        counts = []
        for _ in range(20):
            yr.init(yr.Config(num_cpus=1))
            zygote = yr.session.current().runtime.zygote_pid
            yr.finalize()
            wait_for(lambda z=zygote: all_dead([z]), timeout=15, what="the fork server to exit")
            counts.append(_open_descriptors())
        # Descriptors gRPC closes a moment after finalize may come and go; a leak stays.
        wait_for(
            lambda: _open_descriptors() <= counts[1],
            timeout=10,
            what=f"the descriptor count to come back to {counts[1]} (after each cycle: {counts})",
        )
    finally:
        gc.enable()


def test_instances_inherit_the_fork_servers_objects_frozen(local_runtime):
    """Frozen, an instance's garbage collector never writes to (so never copies) the pages
    holding what it inherited: ~5 MB per instance otherwise."""
    assert yr.get(Probe.invoke().frozen_objects.invoke(), timeout=60) > 10_000


def test_an_idle_instance_has_not_imported_what_only_errors_and_pods_use(local_runtime):
    modules = set(yr.get(Probe.invoke().modules.invoke(), timeout=60))
    assert "yr.server" in modules
    assert not {"argparse", "difflib"} & modules


def test_the_fork_server_takes_only_the_options_the_driver_passes():
    assert parse_options(["--shm-prefix=yr-ab", "--session-dir=/tmp/x"]) == {
        "--shm-prefix": "yr-ab",
        "--session-dir": "/tmp/x",
    }
    with pytest.raises(SystemExit, match="unexpected argument '--verbose'"):
        parse_options(["--verbose"])
