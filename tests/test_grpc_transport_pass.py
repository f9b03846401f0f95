"""The call-semantics tests hold over gRPC alone too: `YR_TRANSPORT=grpc` turns the local
Unix-socket transport off, and every guarantee must still hold on the transport pods use."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).parents[1]
CALL_SEMANTICS = REPO / ".ci" / "call-semantics-tests"  # the files run over both transports
DEADLINE_S = 900  # the nested run is killed rather than left to hang the suite


def test_the_call_semantics_tests_pass_with_yr_transport_grpc():
    files = CALL_SEMANTICS.read_text().split()
    assert files and all((REPO / f).is_file() for f in files), files
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            *files,
        ],
        cwd=REPO,
        env={**os.environ, "YR_TRANSPORT": "grpc"},
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-4000:]
