"""The fork server: a process that imported the runtime once and forks instance processes.

Forking from a process that has imported grpc and cloudpickle, but created no gRPC object,
starts an instance in milliseconds instead of the hundreds a fresh interpreter needs.

The driver writes commands to our stdin and we (and our children) write events to the pipe that
was our stdout (the format: wire.py). Each instance leads its own process group, so whatever it
starts ends with it. When stdin reaches EOF — the driver exited or was killed — every instance
group is killed, the session's shared memory and directory are removed, and we exit: nothing
outlives its driver. Instances also get PR_SET_PDEATHSIG, so they die with us.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import os
import select
import shutil
import signal
import sys
import time
import traceback
from typing import Any

from yr import segment_pool, sharedmem
from yr.runtime.local.wire import CommandReader, write_event

PR_SET_PDEATHSIG = 1
READ_CHUNK = 1 << 20
# Tests set this to a file path; while the file exists every fork fails with EAGAIN, as under
# memory pressure (a real RLIMIT_NPROC cannot do it: root ignores that limit).
FAIL_FORK_ENV = "YR_TEST_FAIL_FORK_WHILE_EXISTS"


class Zygote:
    """The fork server's loop."""

    def __init__(
        self, *, command_fd: int, event_fd: int, shm_prefix: str, session_dir: str
    ) -> None:
        self.command_fd = command_fd
        self.event_fd = event_fd
        self.shm_prefix = shm_prefix
        self.session_dir = session_dir
        self.reader = CommandReader()
        self.children: dict[int, tuple[str, int]] = {}  # pid -> (instance id, incarnation)
        self.payloads: dict[int, str] = {}  # pid -> payload segment it may not have read yet
        self.by_instance: dict[str, int] = {}
        self.kill_at: dict[int, float] = {}  # pid -> when its shutdown hook's grace ends
        self.fail_fork_marker = os.environ.pop(FAIL_FORK_ENV, "")
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_write, False)
        signal.set_wakeup_fd(self.wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
        signal.signal(signal.SIGTERM, lambda *_: self.stop())

    def run(self) -> None:
        while True:
            timeout = None
            if self.kill_at:
                timeout = max(min(self.kill_at.values()) - time.monotonic(), 0)
            readable, _, _ = select.select([self.command_fd, self.wake_read], [], [], timeout)
            self.kill_overdue()
            if self.wake_read in readable:
                os.read(self.wake_read, 4096)
                self.reap()
            if self.command_fd in readable:
                data = os.read(self.command_fd, READ_CHUNK)
                if not data:
                    self.stop()
                for command in self.reader.feed(data):
                    self.dispatch(command)

    def dispatch(self, command: dict[str, Any]) -> None:
        if command["op"] == "spawn":
            self.spawn(command)
        elif command["op"] == "kill":
            pid = self.by_instance.get(command["instance_id"])
            if pid is not None and pid in self.children:
                grace_s = command.get("grace_s", 0)
                if grace_s > 0:  # its __yr_shutdown__ runs on SIGTERM; SIGKILL after grace
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
                    self.kill_at[pid] = time.monotonic() + grace_s
                else:
                    _kill_group(pid)

    def kill_overdue(self) -> None:
        now = time.monotonic()
        for pid, deadline in list(self.kill_at.items()):
            if deadline <= now:
                del self.kill_at[pid]
                if pid in self.children:
                    _kill_group(pid)

    def spawn(self, command: dict[str, Any]) -> None:
        key = (command["instance_id"], command["incarnation"])
        try:
            pid = self._fork()
        except OSError as error:  # this instance fails; the others and we carry on
            sharedmem.discard([command["payload_segment"]])  # "" when it came inline
            write_event(
                self.event_fd,
                {
                    "event": "spawn-failed",
                    "instance_id": key[0],
                    "incarnation": key[1],
                    "error": _describe_os_error(error),
                },
            )
            return
        if pid == 0:
            _child(
                command,
                event_fd=self.event_fd,
                closing=[self.command_fd, self.wake_read, self.wake_write],
            )
        # The child leads its own group too, but it may not have got there yet: a kill (or our
        # stop) right after this fork would find no group and miss it, so set it from here too.
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        self.children[pid] = key
        self.payloads[pid] = command["payload_segment"]
        self.by_instance[key[0]] = pid
        write_event(
            self.event_fd,
            {"event": "spawned", "instance_id": key[0], "incarnation": key[1], "pid": pid},
        )

    def _fork(self) -> int:
        if self.fail_fork_marker and os.path.exists(self.fail_fork_marker):
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN) + " (injected by a test)")
        return os.fork()

    def reap(self) -> None:
        while self.children:
            try:  # peek first: while it is a zombie its pid (and group id) cannot be reused
                exited = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if exited is None:
                return
            _kill_group(exited.si_pid)  # what the instance started ends with it, as in a pod
            self.kill_at.pop(exited.si_pid, None)
            pid, status = os.waitpid(exited.si_pid, 0)
            sharedmem.discard([self.payloads.pop(pid, "")])
            if self.shm_prefix:  # its reused segments: their receivers keep what they map
                segment_pool.discard_written_by(self.shm_prefix, pid)
            instance_id, incarnation = self.children.pop(pid, ("", -1))
            if self.by_instance.get(instance_id) == pid:
                del self.by_instance[instance_id]
            event: dict[str, Any] = {
                "event": "exited",
                "instance_id": instance_id,
                "incarnation": incarnation,
                "pid": pid,
                "exit_code": None,
                "signal": None,
            }
            if os.WIFSIGNALED(status):
                event["signal"] = os.WTERMSIG(status)
            else:
                event["exit_code"] = os.WEXITSTATUS(status)
            with contextlib.suppress(OSError):  # the driver may be gone already
                write_event(self.event_fd, event)

    def stop(self) -> None:
        for pid in list(self.children):
            _kill_group(pid)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        # The driver may have died without cleaning up: nothing of its session may outlive it.
        if self.shm_prefix:
            sharedmem.discard_prefix(self.shm_prefix)
        if self.session_dir:
            shutil.rmtree(self.session_dir, ignore_errors=True)
        os._exit(0)


def _describe_os_error(error: OSError) -> str:
    name = errno.errorcode.get(error.errno or 0, type(error).__name__)
    return f"{name}: {error.strerror or error}"[:1000]


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _child(command: dict[str, Any], *, event_fd: int, closing: list[int]) -> None:
    """Become one instance process; never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        zygote_pid = os.getppid()
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != zygote_pid:
            os._exit(1)
        # Its own group: a terminal's Ctrl-C reaches only the driver (which then finalizes),
        # and the fork server can end the instance together with everything it started.
        os.setpgid(0, 0)
        for fd in closing:
            os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.environ.update(command["env"])
        _redirect_output(command)
        from yr import bootstrap

        code = bootstrap.serve_forked(command, event_fd=event_fd)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _redirect_output(command: dict[str, Any]) -> None:
    """Send fd 1 and 2 to the driver's log collector, which prefixes each line."""
    import json
    import socket

    path = command.get("log_socket")
    if not path:
        return
    for fd, stream in ((1, "stdout"), (2, "stderr")):
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.connect(path)
        header = {"stream": stream, "prefix": f"{command['instance_id']} pid={os.getpid()}"}
        connection.sendall((json.dumps(header) + "\n").encode())
        os.dup2(connection.fileno(), fd)
        connection.close()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]


def parse_options(argv: list[str]) -> dict[str, str]:
    """``--shm-prefix=P --session-dir=D``, as the driver passes them. Not argparse: every
    instance is a fork of this process, and none of them would ever use it."""
    options = {"--shm-prefix": "", "--session-dir": ""}
    for argument in argv:
        name, equals, value = argument.partition("=")
        if name not in options or not equals:
            sys.exit(f"yr.runtime.local.zygote: unexpected argument {argument!r}")
        options[name] = value
    return options


def _share_with_instances() -> None:
    """Leave what every instance inherits as compact and as shared as it can be: garbage
    from the imports collected, C heap trimmed, and every object so far frozen, so that an
    instance's garbage collector never writes to (and so copies) the pages holding them."""
    gc.collect()
    gc.freeze()
    with contextlib.suppress(OSError, AttributeError):  # glibc only
        ctypes.CDLL(None).malloc_trim(0)


def main() -> None:
    options = parse_options(sys.argv[1:])
    # Import everything an instance needs now, once, before any fork: no gRPC object exists yet.
    import cloudpickle  # noqa: F401
    import grpc  # noqa: F401
    from grpc_health.v1 import health  # noqa: F401

    import yr  # noqa: F401
    from yr import bootstrap, client, server  # noqa: F401
    from yr.runtime import remote  # noqa: F401

    event_fd = os.dup(1)
    os.dup2(2, 1)  # our own stray prints go to stderr, never into the event pipe
    _share_with_instances()
    Zygote(
        command_fd=0,
        event_fd=event_fd,
        shm_prefix=options["--shm-prefix"],
        session_dir=options["--session-dir"],
    ).run()


if __name__ == "__main__":
    main()
