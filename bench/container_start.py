"""Instance container start on a real container engine: `docker run` -> gRPC health SERVING.

    python bench/container_start.py --image yr:ci [--runs 10] [--docker /usr/bin/docker]

The part of an instance's start latency a kubelet cannot hide: the runtime creating and starting
the container, Python starting from the image on a read-only root (uid 10001, no capabilities,
as the operator's pods run), importing the server and constructing the object. Timed from just
before `docker run -d` until a gRPC health Watch (wait_for_ready, fast reconnect: what the SDK
does) reports SERVING. Pod scheduling, the sandbox's network setup and the operator are not in
it. Prints p50/max; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from yr import serialization  # noqa: E402

FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 20),
    ("grpc.min_reconnect_backoff_ms", 20),
    ("grpc.max_reconnect_backoff_ms", 100),
]


def one_start(docker: str, image: str, payload_dir: Path) -> tuple[float, float]:
    """(seconds until `docker run -d` returned, seconds until SERVING)."""
    t0 = time.monotonic()
    started = subprocess.run(
        [
            docker,
            "run",
            "-d",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--user",
            "10001:10001",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "-v",
            f"{payload_dir}:/var/run/yr/payload:ro",
            "-e",
            "YR_SESSION_TOKEN=bench",
            "-p",
            "127.0.0.1::50051",
            image,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    t_run = time.monotonic() - t0
    container = started.stdout.strip()
    try:
        port = subprocess.run(
            [docker, "port", container, "50051/tcp"], capture_output=True, text=True, check=True
        ).stdout.split(":")[-1]
        with grpc.insecure_channel(f"127.0.0.1:{port.strip()}", options=FAST_RECONNECT) as ch:
            replies = health_pb2_grpc.HealthStub(ch).Watch(
                health_pb2.HealthCheckRequest(), timeout=60, wait_for_ready=True
            )
            for reply in replies:
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    replies.cancel()
                    break
        return t_run, time.monotonic() - t0
    finally:
        subprocess.run([docker, "rm", "-f", container], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--docker", default="/usr/bin/docker")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="yr-bench-payload-") as tmp:
        payload_dir = Path(tmp)
        payload_dir.chmod(0o755)
        (payload_dir / "payload").write_bytes(serialization.dumps((str, ("x",), {})))
        (payload_dir / "payload").chmod(0o644)
        one_start(args.docker, args.image, payload_dir)  # warm the engine's caches
        runs = [one_start(args.docker, args.image, payload_dir) for _ in range(args.runs)]
    ran, serving = [r * 1000 for r, _ in runs], [s * 1000 for _, s in runs]
    print(f"{args.image} on {args.docker} ({args.runs} runs), milliseconds")
    print(f"docker run -d returned: p50 {statistics.median(ran):.0f}  max {max(ran):.0f}")
    print(f"health SERVING:         p50 {statistics.median(serving):.0f}  max {max(serving):.0f}")


if __name__ == "__main__":
    main()
