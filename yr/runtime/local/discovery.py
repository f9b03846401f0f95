"""Where a running driver tells the ``yr`` command about its session, for this user only.

A per-user runtime directory (``$YR_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/yr``, else
``/tmp/yr-<uid>``), mode 0700, holds one ``<id>.json`` per live session (its control server's
address and the path of its token file) and that ``<id>.token``, both 0600. Finalize removes
them; a session whose driver process is gone (``kill -9``) is swept by the next reader or
publisher. The directory also holds the per-user locks (one keeper at a time).

A separate job from sessiondir.py: this directory is shared by the user's sessions and only
announces them; each session's own workspace (its sockets, its liveness lock) is a private
directory of its own, which sessiondir.py creates and sweeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    pid: int
    control_address: str
    token_file: str
    program: str
    started: float
    role: str = "driver"  # or "keeper": the per-user keeper of detached instances

    def token(self) -> str:
        return Path(self.token_file).read_text().strip()


def runtime_dir() -> Path:
    if os.environ.get("YR_RUNTIME_DIR"):
        return Path(os.environ["YR_RUNTIME_DIR"])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "yr"
    return Path("/tmp") / f"yr-{os.getuid()}"


def _private_dir() -> Path:
    """The runtime directory, created 0700; refused if another user could read or plant files."""
    directory = runtime_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(
            f"yr's runtime directory {directory} must be a directory owned by uid "
            f"{os.getuid()} with mode 0700 (it is {oct(info.st_mode & 0o777)}, uid "
            f"{info.st_uid}); remove it or set YR_RUNTIME_DIR"
        )
    return directory


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def publish(*, control_address: str, token: str, role: str = "driver") -> SessionInfo:
    """Announce this process's session; returns what :func:`withdraw` removes."""
    directory = _private_dir()
    sweep_stale(directory)
    session_id = f"{os.getpid()}-{secrets.token_hex(4)}"
    token_file = directory / f"{session_id}.token"
    _write_private(token_file, token)
    info = SessionInfo(
        session_id=session_id,
        pid=os.getpid(),
        control_address=control_address,
        token_file=str(token_file),
        program=" ".join(sys.argv) or "python",
        started=time.time(),
        role=role,
    )
    _write_private(directory / f"{session_id}.json", json.dumps(info.__dict__))
    return info


def withdraw(info: SessionInfo) -> None:
    _remove_session_files(Path(info.token_file).parent, info.session_id)


def _remove_session_files(directory: Path, session_id: str) -> None:
    for suffix in (".json", ".token"):
        with contextlib.suppress(FileNotFoundError):
            (directory / f"{session_id}{suffix}").unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sessions() -> list[SessionInfo]:
    """Every live session of this user, oldest first (stale ones are swept on the way)."""
    directory = runtime_dir()
    if not directory.is_dir():
        return []
    directory = _private_dir()
    sweep_stale(directory)
    found = []
    for path in directory.glob("*.json"):
        with contextlib.suppress(OSError, ValueError, TypeError):
            found.append(SessionInfo(**json.loads(path.read_text())))
    return sorted(found, key=lambda info: info.started)


def keeper() -> SessionInfo | None:
    """The live keeper of this user's detached instances, if one runs."""
    return next((info for info in sessions() if info.role == "keeper"), None)


def lock_file(name: str) -> Path:
    """A file in the private runtime directory to ``flock`` (e.g. one keeper at a time)."""
    return _private_dir() / f"{name}.lock"


def sweep_stale(directory: Path) -> None:
    """Remove the files of sessions whose driver process no longer exists."""
    for path in directory.glob("*.json"):
        try:
            pid = int(json.loads(path.read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not _alive(pid):
            _remove_session_files(directory, path.name[: -len(".json")])
