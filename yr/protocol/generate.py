"""Regenerate the *_pb2*.py modules from the .proto files (run: python yr/protocol/generate.py)."""

from __future__ import annotations

import pathlib
import sys


def generate(output_dir: pathlib.Path) -> None:
    from grpc_tools import protoc  # a build/test dependency, not a runtime one

    here = pathlib.Path(__file__).parent
    root = here.parent.parent
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{root}",
            f"--python_out={output_dir}",
            f"--grpc_python_out={output_dir}",
            *(str(proto) for proto in sorted(here.glob("*.proto"))),
        ]
    )
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}")


if __name__ == "__main__":
    target = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else pathlib.Path(__file__).parents[2]
    generate(target)
