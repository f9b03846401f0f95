"""`python -m tests.cluster.apiserver`: the emulated Kubernetes API with GC and scheduler inside.

Serves on loopback (ephemeral port unless --port), registers CRDs from --crd files, writes a
kubeconfig (--kubeconfig, default a temp file) and prints its path once it is serving.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from tests.cluster import cli, kinds
from tests.cluster.auth import ADMIN, Tokens, kubeconfig_text
from tests.cluster.deployments import DeploymentController
from tests.cluster.gc import GarbageCollector
from tests.cluster.handlers import DEFAULT_BOOKMARK_INTERVAL, Handlers
from tests.cluster.resources import Registry
from tests.cluster.scheduler import Scheduler
from tests.cluster.store import Store
from tests.cluster.tls import self_signed, server_context
from tests.cluster.watches import HISTORY, Event

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def write_kubeconfig(path: Path, server: str, ca_pem: bytes, token: str) -> None:
    """Write atomically: readers poll for the file to know the server is up."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(kubeconfig_text(server, ca_pem, token))
    os.replace(tmp, path)


def load_crd_documents(paths: list[str]) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition document in the given YAML files."""
    crds = []
    for path in paths:
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                crds.append(doc)
    return crds


def build_cluster(
    crd_paths: list[str], gc: bool = True, scheduler: bool = True, watch_history: int = HISTORY
):
    """The store with default namespaces and CRDs, plus the controllers to run beside it."""
    store = Store(Registry(), watch_history)
    ns_rt = store.registry.get("", "v1", "namespaces")
    crd_rt = store.registry.get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    assert ns_rt is not None and crd_rt is not None
    for name in DEFAULT_NAMESPACES:
        store.create(ns_rt, "", {"metadata": {"name": name}})
    for crd in load_crd_documents(crd_paths):
        store.create(crd_rt, "", crd)
    controllers = []
    if gc:
        controllers.append(GarbageCollector(store))
    if scheduler:
        controllers.append(Scheduler(store))
    controllers.append(DeploymentController(store))
    return store, controllers


async def serve(args: argparse.Namespace) -> None:
    store, controllers = build_cluster(
        args.crd,
        gc=not args.no_gc,
        scheduler=not args.no_scheduler,
        watch_history=args.watch_history,
    )
    app = web.Application(client_max_size=8 * 1024 * 1024)
    tokens = Tokens()
    store.listeners.append(lambda event: _revoke_deleted_accounts(tokens, event))
    Handlers(store, tokens, bookmark_interval=args.bookmark_interval).routes(app)
    # Open watch streams would hold shutdown for the whole timeout: keep it short.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.25)
    await runner.setup()
    cert_pem, key_pem = self_signed(args.host)
    site = web.TCPSite(runner, args.host, args.port, ssl_context=server_context(cert_pem, key_pem))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server = f"https://{args.host}:{port}"
    kubeconfig = Path(args.kubeconfig or tempfile.mkstemp(prefix="yr-kubeconfig-")[1]).resolve()
    write_kubeconfig(kubeconfig, server, cert_pem, tokens.issue(ADMIN))
    print(f"API server listening on {server}", flush=True)
    print(f"kubeconfig: {kubeconfig}", flush=True)
    tasks = [asyncio.create_task(c.run()) for c in controllers]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.exit_with_stdin:  # the fixture holds our stdin: its death closes the pipe
        loop.add_reader(sys.stdin.fileno(), lambda: _stdin_ready(stop))
    await stop.wait()
    for task in tasks:
        task.cancel()
    await runner.cleanup()


def _revoke_deleted_accounts(tokens: Tokens, event: Event) -> None:
    if event.type == "DELETED" and event.key == kinds.SERVICE_ACCOUNT_KEY:
        meta = event.obj["metadata"]
        tokens.revoke_service_account(meta.get("namespace", ""), meta["name"])


def _stdin_ready(stop: asyncio.Event) -> None:
    if not os.read(sys.stdin.fileno(), 4096):
        stop.set()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.apiserver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to serve on")
    parser.add_argument("--port", type=int, default=0, help="port (default: an ephemeral one)")
    parser.add_argument("--kubeconfig", help="where to write the kubeconfig (default: temp file)")
    parser.add_argument("--crd", action="append", default=[], help="CRD YAML file (repeatable)")
    parser.add_argument("--no-gc", action="store_true", help="do not run the garbage collector")
    parser.add_argument("--no-scheduler", action="store_true", help="do not run the scheduler")
    parser.add_argument(
        "--watch-history",
        type=int,
        default=HISTORY,
        help=f"events kept for resuming watches, older ones get 410 (default {HISTORY})",
    )
    parser.add_argument(
        "--bookmark-interval",
        type=float,
        default=DEFAULT_BOOKMARK_INTERVAL,
        help="seconds of quiet after which a watch with allowWatchBookmarks gets a BOOKMARK",
    )
    cli.add_process_arguments(parser)
    args = parser.parse_args(argv)
    cli.configure_logging(args)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
