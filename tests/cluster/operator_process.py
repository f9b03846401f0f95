"""The one way tests run the real operator (`python -m yr_operator`) against a cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def operator_env(kubeconfig: Path, **extra: str) -> dict[str, str]:
    """This test run's environment, the cluster's kubeconfig and this tree's code first."""
    path = [str(REPO / "operator"), str(REPO), os.environ.get("PYTHONPATH", "")]
    return dict(
        os.environ,
        KUBECONFIG=str(kubeconfig),
        PYTHONPATH=os.pathsep.join(p for p in path if p),
        **extra,
    )


class OperatorProcess:
    """The operator as a subprocess logging to `log`, stopped (or killed) by PID."""

    def __init__(self, kubeconfig: Path, log: Path, *args: str, **env: str) -> None:
        self.env = operator_env(kubeconfig, **env)
        self.args = args or ("-A",)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "yr_operator", *self.args],
                env=self.env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""
