"""The composition root of an instance process: wires the session into the instance server.

The instance server (server.py) knows nothing of sessions, and the fork server knows nothing of
either; this module, imported only by entry points, connects them: ``main`` for a pod
(``python -m yr.server``), ``serve_forked`` for a process the local fork server forked.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import sys
import threading
from typing import Any

from yr import contract as c
from yr import server, session, sharedmem
from yr.protocol import COLLECTIVE_METHOD, yr_pb2
from yr.runtime.local.wire import write_event

INIT_FAILED_EXIT_CODE = 3


def _collective_call(*args: Any) -> Any:
    # Imported on first use: yr.collective loads numpy, which an idle instance never needs.
    from yr.collective import member_call

    return member_call(*args)


SYSTEM_METHODS = {COLLECTIVE_METHOD: _collective_call}  # group forming, not user methods


def serve_forked(command: dict[str, Any], *, event_fd: int) -> int:
    """Serve one instance in a forked process; return its exit code."""
    instance_id = command["instance_id"]
    incarnation = command["incarnation"]
    token = command["env"]["YR_SESSION_TOKEN"]
    session.attach_instance(instance_id=instance_id)
    segment = command["payload_segment"]
    payload = sharedmem.open_buffers([segment])[0] if segment else command["payload"]
    # The constructor's large arguments: mapped, not copied, and left for a restart.
    buffers = sharedmem.map_buffers(command.get("payload_buffers", []))
    failed: list[yr_pb2.RemoteError] = []
    # Callers on this machine reach it through a socket in the session's private directory.
    socket_dir = command.get("socket_dir", "")
    local_socket = os.path.join(socket_dir, f"{os.getpid()}.sock") if socket_dir else ""

    def event(kind: str, **fields: Any) -> None:
        write_event(
            event_fd,
            {"event": kind, "instance_id": instance_id, "incarnation": incarnation, **fields},
        )

    def init_failed(error: yr_pb2.RemoteError) -> None:
        # The whole error (traceback included) may exceed an atomic event write: it travels
        # through shared memory and the event names the segment.
        segment = sharedmem.write_segment(command["shm_prefix"], error.SerializeToString())
        event("init-failed", segment=segment)
        failed.append(error)

    serving = server.serve(
        payload=payload,
        payload_buffers=buffers,
        instance_id=instance_id,
        class_name=command["class_name"],
        token=token,
        host="127.0.0.1",
        port=0,
        concurrency=command["concurrency"],
        shutdown_grace_s=command.get("shutdown_grace_s", 0.0),
        on_ready=lambda port: event("ready", port=port, pid=os.getpid(), socket=local_socket),
        on_init_error=init_failed,
        incarnation=incarnation,
        system_methods=SYSTEM_METHODS,
        local_socket=local_socket,
    )
    del payload, buffers  # the server holds the only references, dropped once constructed
    asyncio.run(serving)
    return INIT_FAILED_EXIT_CODE if failed else 0


def main(argv: list[str] | None = None) -> None:
    """Entry point of an instance pod: configuration comes from the environment."""
    import argparse  # here: a forked local instance imports this module and never needs it

    argparse.ArgumentParser(
        prog="python -m yr.server",
        description=(
            "Serve one yr instance over gRPC (what an instance pod runs). Configured by the "
            "environment: YR_SESSION_TOKEN (required), YR_PAYLOAD_FILE (default: "
            "/var/run/yr/payload/payload), YR_INSTANCE_NAME, YR_CLASS_NAME, YR_POD_IP (default: "
            "all interfaces), YR_PORT (default: 50051), YR_CONCURRENCY (default: 1), "
            "YR_INCARNATION, YR_TLS_CERT_FILE and YR_TLS_KEY_FILE (serve TLS only), "
            "YR_HEALTH_PORT (a plaintext health-only port for probes). See "
            "docs/kubernetes-contract.md."
        ),
    ).parse_args(argv)
    env = os.environ
    payload_file = env.get(c.ENV_PAYLOAD_FILE, f"{c.PAYLOAD_DIR}/{c.PAYLOAD_KEY}")
    token = env.get(c.ENV_SESSION_TOKEN, "")
    if not token:
        sys.exit("yr.server: YR_SESSION_TOKEN is not set; refusing to serve without a secret")
    try:
        with open(payload_file, "rb") as handle:
            payload = handle.read()
    except OSError as error:
        sys.exit(f"yr.server: cannot read the instance payload {payload_file}: {error}")
    instance_id = env.get(c.ENV_INSTANCE_NAME, "instance")
    session.attach_instance(instance_id=instance_id)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    threading.current_thread().name = f"yr-instance-{instance_id}"
    asyncio.run(
        server.serve(
            payload=payload,
            instance_id=instance_id,
            class_name=env.get(c.ENV_CLASS_NAME, "instance"),
            token=token,
            host=env.get(c.ENV_POD_IP, "0.0.0.0"),
            port=int(env.get(c.ENV_PORT, str(c.PORT))),
            concurrency=int(env.get(c.ENV_CONCURRENCY, "1")),
            incarnation=int(env[c.ENV_INCARNATION]) if env.get(c.ENV_INCARNATION) else None,
            shutdown_grace_s=float(env.get(c.ENV_SHUTDOWN_GRACE, "0")),
            extra_handlers=_pod_services(token),
            system_methods=SYSTEM_METHODS,
            tls=_tls_from_files(env.get(c.ENV_TLS_CERT_FILE), env.get(c.ENV_TLS_KEY_FILE)),
            health_port=int(env[c.ENV_HEALTH_PORT]) if env.get(c.ENV_HEALTH_PORT) else None,
        )
    )
    _exit_leaving_methods_running()


def _exit_leaving_methods_running() -> None:
    """The server has stopped and the shutdown hook has run: end the pod now.

    A method still running (blocked in ``yr.get``, or waiting for ever) would otherwise hold
    the process at interpreter exit, where ``concurrent.futures`` joins its worker threads,
    until the kubelet's SIGKILL at the end of the termination grace period."""
    atexit._run_exitfuncs()  # the user's exit hooks still run; only the thread joins are skipped
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _pod_services(token: str) -> list[Any]:
    """A pod's collective peers stream to its gRPC port (the one the NetworkPolicy admits)."""
    try:
        from yr.collective.link import link_handler
    except ImportError:  # yr.collective needs numpy (the `collective` extra): no peers then
        return []
    return [link_handler(token)]


def _tls_from_files(cert_file: str | None, key_file: str | None) -> tuple[bytes, bytes] | None:
    """The session key pair the pod mounts (both files, or neither: plaintext)."""
    if not cert_file and not key_file:
        return None
    if not cert_file or not key_file:
        sys.exit("yr.server: set both YR_TLS_CERT_FILE and YR_TLS_KEY_FILE, or neither")
    try:
        with open(cert_file, "rb") as cert, open(key_file, "rb") as key:
            return cert.read(), key.read()
    except OSError as error:
        sys.exit(f"yr.server: cannot read the session TLS key pair: {error}")


if __name__ == "__main__":
    main()
