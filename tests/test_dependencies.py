"""`pip install yr` is the local runtime only: Kubernetes pieces are extras, loaded on demand."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
REPO = Path(__file__).resolve().parents[1]


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_the_runtime_dependencies_are_what_the_local_runtime_needs() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = sorted(dep.split(">")[0].split("=")[0] for dep in project["dependencies"])
    assert names == ["cloudpickle", "grpcio", "grpcio-health-checking", "protobuf"]
    extras = project["optional-dependencies"]
    assert any(d.startswith("kubernetes") for d in extras["kubernetes"])
    assert {d.split(">")[0] for d in extras["operator"]} >= {"kopf", "aiohttp"}


def test_a_local_session_never_imports_kubernetes() -> None:
    finished = _run(
        """
        import sys
        import yr

        @yr.instance
        class Counter:
            def add(self, n):
                return n + 1

        yr.init(yr.Config(num_cpus=1))
        assert yr.get(Counter.invoke().add.invoke(1), timeout=60) == 2
        yr.finalize()
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("kubernetes", "kopf")))
        """
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "[]"


BLOCK_KUBERNETES = """
import sys
class _Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "kubernetes":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Missing())
"""


def test_the_kubernetes_backend_without_its_extra_names_the_extra() -> None:
    finished = _run(
        BLOCK_KUBERNETES
        + """
import yr
try:
    yr.init(yr.Config(backend="kubernetes"))
except ImportError as error:
    print(error)
"""
    )
    assert finished.returncode == 0, finished.stderr
    assert "pip install 'yr[kubernetes]'" in finished.stdout


def test_yr_logs_reach_the_applications_logging_configuration() -> None:
    finished = _run(
        """
        import logging
        records = []
        class Keep(logging.Handler):
            def emit(self, record):
                records.append(record.name)
        logging.basicConfig(level=logging.DEBUG, handlers=[Keep()])
        import yr
        handlers = logging.getLogger("yr").handlers
        assert all(isinstance(h, logging.NullHandler) for h in handlers), handlers
        logging.getLogger("yr.runtime").warning("seen by the application")
        print(records)
        """
    )
    assert finished.returncode == 0, finished.stderr
    assert "yr.runtime" in finished.stdout
