"""The driver's side of the fork server: starts it, sends commands, reads its events.

Nothing here blocks a caller on the fork server: commands are queued and written by a thread
of their own, and events are read by another, so a fork server that is slow to read (a large
payload) or to be read (hundreds of exits at once) never holds up the runtime's lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError

from yr import serialization, sharedmem
from yr.errors import YRError, invoke_error_for
from yr.protocol import yr_pb2
from yr.runtime.local.launch import driver_import_path, module_command
from yr.runtime.local.wire import encode_command

_STOP = None


class ZygoteProcess:
    """One fork-server child of the driver; its events are passed to ``on_event``.

    ``on_event`` runs on the reader thread; the last event is always ``zygote-exited``.
    """

    def __init__(
        self,
        *,
        on_event: Callable[[dict[str, Any]], None],
        shm_prefix: str,
        session_dir: str,
    ) -> None:
        env = dict(os.environ)
        # Instances must import what the driver can: same sys.path (script dir first).
        env["PYTHONPATH"] = driver_import_path()
        self._process = subprocess.Popen(
            module_command(
                "yr.runtime.local.zygote",
                f"--shm-prefix={shm_prefix}",
                f"--session-dir={session_dir}",
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        self.pid = self._process.pid
        self._shm_prefix = shm_prefix
        self._on_event = on_event
        self._commands: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._commanded = False  # whether it was ever told anything (so may own a process)
        self._writer = threading.Thread(target=self._write_commands, name="yr-fork-w", daemon=True)
        self._reader = threading.Thread(target=self._read_events, name="yr-fork-r", daemon=True)
        self._writer.start()
        self._reader.start()

    def send(self, command: dict[str, Any]) -> None:
        """Queue a command; never blocks. A spawn's payload travels through shared memory."""
        self._commanded = True
        self._commands.put(command)

    def _write_commands(self) -> None:
        stdin = self._process.stdin
        assert stdin is not None
        try:
            while (command := self._commands.get()) is not _STOP:
                if command["op"] == "spawn":
                    try:
                        command = self._with_payload_segment(command)
                    except OSError as error:  # /dev/shm full: this instance fails, not all
                        self._on_event(_spawn_failed(command, error))
                        continue
                stdin.write(encode_command(command))
                stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # it died: the reader reports that, and the runtime fails what is left
        finally:
            with contextlib.suppress(OSError):
                stdin.close()  # EOF: the fork server kills every instance and exits

    def _with_payload_segment(self, command: dict[str, Any]) -> dict[str, Any]:
        command = dict(command, shm_prefix=self._shm_prefix, payload_segment="")
        if sharedmem.available():  # one linear write instead of a trip through the pipe
            command["payload_segment"] = sharedmem.write_segment(
                self._shm_prefix, command.pop("payload")
            )
        return command

    def _read_events(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        with stdout:  # closed here: a finished session leaves no descriptor for the GC to find
            for line in stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                self._on_event(event)
        self._on_event({"event": "zygote-exited", "exit_code": self._process.wait()})

    def close(self, *, timeout: float = 10.0) -> None:
        """Send EOF after the queued commands; wait for the fork server and both threads."""
        self._commands.put(_STOP)
        self._writer.join(timeout)
        if not self._commanded:  # it started nothing: no need to wait until it has loaded
            with contextlib.suppress(ProcessLookupError):
                self._process.terminate()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join(timeout)


def _spawn_failed(command: dict[str, Any], error: OSError) -> dict[str, Any]:
    return {
        "event": "spawn-failed",
        "instance_id": command["instance_id"],
        "incarnation": command["incarnation"],
        "error": f"its payload could not be written to shared memory: {error}",
    }


def read_init_failure(segment: str) -> yr_pb2.RemoteError:
    """What an instance's ``__init__`` raised, from the segment its process wrote it to."""
    try:
        (view,) = sharedmem.open_buffers([segment])
        return yr_pb2.RemoteError.FromString(bytes(view))
    except (OSError, ValueError, DecodeError) as unreadable:
        return yr_pb2.RemoteError(
            type_name="unknown", message=f"the error could not be read: {unreadable}"
        )


def init_failure_error(remote: yr_pb2.RemoteError, *, label: str, attempts: int) -> YRError:
    """The error calls on an instance whose ``__init__`` failed for good raise: typed as what
    ``__init__`` raised (``except ValueError`` works), saying the instance is gone."""
    cause: BaseException | None = None
    if remote.exception:  # written by our own child process, as replies are
        with contextlib.suppress(Exception):
            cause = serialization.loads(remote.exception)
    if cause is None:
        cause = YRError(f"{remote.type_name}: {remote.message}")
    return invoke_error_for(
        cause,
        f"instance {label} failed to start: its __init__ raised on each of {attempts} "
        "attempt(s); its process ended and its CPU was released\n" + remote.traceback,
    )


def sweep_process_group(pid: int) -> None:
    """Kill what is left of an instance's process group (what its code started)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
