"""The fork server: a process that imported the runtime once and forks instance processes.

Forking from a process that has imported grpc and cloudpickle, but created no gRPC object,
starts an instance in milliseconds instead of the hundreds a fresh interpreter needs.

Wire format: the driver writes length-prefixed pickled commands to our stdin; we (and our
children) write JSON event lines to the pipe that was our stdout. When stdin reaches EOF — the
driver exited or was killed — every child is killed and we exit, so no instance outlives its
driver. Children also get PR_SET_PDEATHSIG, so they die with us.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pickle
import select
import signal
import socket
import struct
import sys
import traceback
from typing import Any

_HEADER = struct.Struct("!I")
PR_SET_PDEATHSIG = 1


def encode_command(command: dict[str, Any]) -> bytes:
    body = pickle.dumps(command, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


def _write_event(fd: int, event: dict[str, Any]) -> None:
    line = (json.dumps(event) + "\n").encode()
    os.write(fd, line)  # one write below PIPE_BUF is atomic, so children may share the pipe


class Zygote:
    """The fork server's loop."""

    def __init__(self, *, command_fd: int, event_fd: int) -> None:
        self.command_fd = command_fd
        self.event_fd = event_fd
        self.buffer = b""
        self.children: dict[int, tuple[str, int]] = {}  # pid -> (instance id, incarnation)
        self.by_instance: dict[str, int] = {}
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_write, False)
        signal.set_wakeup_fd(self.wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
        signal.signal(signal.SIGTERM, lambda *_: self.stop())

    def run(self) -> None:
        while True:
            readable, _, _ = select.select([self.command_fd, self.wake_read], [], [])
            if self.wake_read in readable:
                os.read(self.wake_read, 4096)
                self.reap()
            if self.command_fd in readable:
                data = os.read(self.command_fd, 1 << 20)
                if not data:
                    self.stop()
                self.buffer += data
                self.dispatch()

    def dispatch(self) -> None:
        while len(self.buffer) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self.buffer)
            if len(self.buffer) < _HEADER.size + length:
                return
            body = self.buffer[_HEADER.size : _HEADER.size + length]
            self.buffer = self.buffer[_HEADER.size + length :]
            command = pickle.loads(body)
            if command["op"] == "spawn":
                self.spawn(command)
            elif command["op"] == "kill":
                pid = self.by_instance.get(command["instance_id"])
                if pid is not None and pid in self.children:
                    os.kill(pid, signal.SIGKILL)

    def spawn(self, command: dict[str, Any]) -> None:
        pid = os.fork()
        if pid == 0:
            _child(
                command,
                event_fd=self.event_fd,
                closing=[self.command_fd, self.wake_read, self.wake_write],
            )
        key = (command["instance_id"], command["incarnation"])
        self.children[pid] = key
        self.by_instance[key[0]] = pid
        _write_event(
            self.event_fd,
            {"event": "spawned", "instance_id": key[0], "incarnation": key[1], "pid": pid},
        )

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
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
            _write_event(self.event_fd, event)

    def stop(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        os._exit(0)


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
        os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the driver, which then finalizes
        for fd in closing:
            os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.environ.update(command["env"])
        _redirect_output(command)
        _serve(command, event_fd=event_fd)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _redirect_output(command: dict[str, Any]) -> None:
    """Send fd 1 and 2 to the driver's log collector, which prefixes each line."""
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


def _serve(command: dict[str, Any], *, event_fd: int) -> None:
    import asyncio

    from yr import server, session

    instance_id = command["instance_id"]
    incarnation = command["incarnation"]
    session.attach_instance(instance_id=instance_id)

    def ready(port: int) -> None:
        _write_event(
            event_fd,
            {
                "event": "ready",
                "instance_id": instance_id,
                "incarnation": incarnation,
                "port": port,
                "pid": os.getpid(),
            },
        )

    asyncio.run(
        server.serve(
            payload=command["payload"],
            instance_id=instance_id,
            class_name=command["class_name"],
            token=command["env"]["YR_SESSION_TOKEN"],
            host="127.0.0.1",
            port=0,
            concurrency=command["concurrency"],
            on_ready=ready,
        )
    )


def main() -> None:
    # Import everything an instance needs now, once, before any fork: no gRPC object exists yet.
    import cloudpickle  # noqa: F401
    import grpc  # noqa: F401
    from grpc_health.v1 import health  # noqa: F401

    import yr  # noqa: F401
    from yr import client, server  # noqa: F401
    from yr.runtime import remote  # noqa: F401

    event_fd = os.dup(1)
    os.dup2(2, 1)  # our own stray prints go to stderr, never into the event pipe
    Zygote(command_fd=0, event_fd=event_fd).run()


if __name__ == "__main__":
    main()
