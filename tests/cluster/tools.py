"""helm and kubectl for the tests: the ones on PATH, or one clear message naming the fix.

`.ci/install-k8s-tools` puts pinned binaries in `.tools/bin` and `.ci/run` puts that on PATH;
tests never download anything themselves.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

TOOLS = ("helm", "kubectl")
FIXTURE = "k8s_tools"
SETUP = '.ci/install-k8s-tools && export PATH="$PWD/.tools/bin:$PATH"'


class K8sTools:
    """`tools / "helm"`: the executable of that name found on PATH."""

    def __init__(self, found: dict[str, Path]) -> None:
        self.found = found

    def __truediv__(self, name: str) -> Path:
        return self.found[name]


def find_tools() -> K8sTools | str:
    """The tools, or the message saying which are missing and how to get them."""
    found = {name: shutil.which(name) for name in TOOLS}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        return (
            f"{' and '.join(missing)} not found on PATH, needed by the Kubernetes tests "
            f"that were selected; install the pinned versions with: {SETUP}"
        )
    return K8sTools({name: Path(path) for name, path in found.items() if path})


def require_tools_for(items: list[pytest.Item]) -> None:
    """Refuse the run once, up front, when selected tests need tools that are missing."""
    if not any(FIXTURE in getattr(item, "fixturenames", ()) for item in items):
        return
    tools = find_tools()
    if isinstance(tools, str):
        raise pytest.UsageError(tools)


@pytest.fixture(scope="session")
def k8s_tools() -> K8sTools:
    tools = find_tools()
    if isinstance(tools, str):  # collection already refused the run; this is a direct call
        pytest.fail(tools, pytrace=False)
    return tools


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    require_tools_for(items)
