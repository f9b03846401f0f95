"""What session TLS costs: 1:1 calls and a 100 MiB argument to an instance server, TLS on vs off.

    python bench/session_tls.py [--calls 2000] [--repeat 5] [--mib 100]

The instance server runs as an instance pod runs it (`python -m yr.server` configured by the
pod's env; with TLS, the session key pair as files and a plaintext health port), on loopback.
The client is a gRPC channel as the SDK opens it on Kubernetes: pinned to the session
certificate (TLS on) or plaintext (TLS off, what the local runtime uses). It sends the SDK's
CallRequest messages. Pod networking and the emulated cluster are left out, so the figures are
the transport's own cost. Prints figures; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import socket
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
from yr.contract import session_server_name  # noqa: E402
from yr.protocol import (  # noqa: E402
    CHANNEL_OPTIONS,
    PROTOCOL_METADATA_KEY,
    PROTOCOL_VERSION,
    TOKEN_METADATA_KEY,
    yr_pb2,
    yr_pb2_grpc,
)
from yr.tls import PinnedServer, make_key_pair  # noqa: E402

TOKEN = "bench-token"
SESSION = "bench"
METADATA = ((TOKEN_METADATA_KEY, TOKEN), (PROTOCOL_METADATA_KEY, str(PROTOCOL_VERSION)))


class Echo:
    def noop(self) -> None:
        return None

    def size(self, data: bytes) -> int:
        return len(data)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_server(workdir: Path, tls: tuple[bytes, bytes] | None) -> tuple[subprocess.Popen, int]:
    payload = workdir / "payload"
    payload.write_bytes(serialization.dumps((Echo, (), {})))
    port, health_port = _free_port(), _free_port()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        YR_SESSION_TOKEN=TOKEN,
        YR_PAYLOAD_FILE=str(payload),
        YR_POD_IP="127.0.0.1",
        YR_PORT=str(port),
        YR_HEALTH_PORT=str(health_port),
        YR_CLASS_NAME="Echo",
    )
    if tls is not None:
        (workdir / "tls.crt").write_bytes(tls[0])
        (workdir / "tls.key").write_bytes(tls[1])
        env.update(
            YR_TLS_CERT_FILE=str(workdir / "tls.crt"), YR_TLS_KEY_FILE=str(workdir / "tls.key")
        )
    process = subprocess.Popen([sys.executable, "-m", "yr.server"], env=env)
    with grpc.insecure_channel(f"127.0.0.1:{health_port}") as channel:
        health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=60, wait_for_ready=True
        )
    return process, port


def _request(method: str, *args: object) -> yr_pb2.CallRequest:
    arguments = serialization.dumps_call_arguments(args, {}, target=f"Echo.{method}")
    return yr_pb2.CallRequest(
        caller="bench", seq=0, invocations=[yr_pb2.Invocation(method=method, arguments=arguments)]
    )


def _value(reply: yr_pb2.CallReply) -> object:
    (outcome,) = reply.outcomes
    if outcome.HasField("error"):
        raise RuntimeError(outcome.error.traceback)
    return serialization.loads(outcome.value)


def measure(tls_on: bool, calls: int, repeat: int, mib: int) -> dict[str, float]:
    pair = make_key_pair(session_server_name(SESSION)) if tls_on else None
    with tempfile.TemporaryDirectory(prefix="yr-bench-tls-") as workdir:
        process, port = _start_server(Path(workdir), pair)
        try:
            address = f"127.0.0.1:{port}"
            if pair is not None:
                channel = PinnedServer(pair[0], session_server_name(SESSION)).secure_channel(
                    address, CHANNEL_OPTIONS
                )
            else:
                channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
            with channel:
                stub = yr_pb2_grpc.InstanceStub(channel)
                # A fresh caller per call (seq 0 each time): each call is admitted on its own.
                connect_started = time.perf_counter()
                stub.Hello(yr_pb2.HelloRequest(), metadata=METADATA, timeout=30)
                connect_s = time.perf_counter() - connect_started
                rates = []
                for _ in range(repeat):
                    started = time.perf_counter()
                    for index in range(calls):
                        request = _request("noop")
                        request.caller = f"bench-{index}"
                        _value(stub.Call(request, metadata=METADATA, timeout=60))
                    rates.append(calls / (time.perf_counter() - started))
                data = os.urandom(1 << 20) * mib
                big = []
                for index in range(repeat):
                    started = time.perf_counter()
                    request = _request("size", data)
                    request.caller = f"bench-big-{index}"
                    assert _value(stub.Call(request, metadata=METADATA, timeout=300)) == len(data)
                    big.append(time.perf_counter() - started)
        finally:
            process.terminate()
            process.wait(15)
    return {
        "first call (connect + handshake) ms": connect_s * 1000,
        "1:1 calls/s (median)": statistics.median(rates),
        f"{mib} MiB argument ms (median)": statistics.median(big) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--mib", type=int, default=100)
    args = parser.parse_args()
    off = measure(False, args.calls, args.repeat, args.mib)
    on = measure(True, args.calls, args.repeat, args.mib)
    print(f"{'':40} {'TLS off':>12} {'TLS on':>12} {'on/off':>8}")
    for key in off:
        print(f"{key:40} {off[key]:12.1f} {on[key]:12.1f} {on[key] / off[key]:8.2f}")


if __name__ == "__main__":
    main()
