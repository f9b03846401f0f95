"""Entry point of the ``yr`` console script: parses the command and picks the backend."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import grpc

from yr.cli import render

FOLLOW_POLL_S = 0.5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yr",
        description="See yr instances: every live local session of this user, or Kubernetes.",
    )
    parser.add_argument(
        "--kubernetes",
        action="store_true",
        default=os.environ.get("YR_BACKEND") == "kubernetes",
        help="read YRInstances from the cluster (also YR_BACKEND=kubernetes)",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        default=os.environ.get("YR_NAMESPACE") or None,
        help="Kubernetes namespace (default: the kubeconfig's)",
    )
    commands = parser.add_subparsers(dest="command")
    for name, text in (("list", "instances in a table"), ("tree", "instances as a tree")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--json", action="store_true", help="machine-readable output")
    stack = commands.add_parser("stack", help="Python stacks of every thread of an instance")
    stack.add_argument("instance", help="instance id, its unique prefix, or its name")
    logs = commands.add_parser("logs", help="what an instance printed, also after it died")
    logs.add_argument("instance", help="instance id, its unique prefix, or its name")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    backend = _backend(args)
    try:
        return _run(args, backend)
    except LookupError as error:
        print(f"yr: {error}", file=sys.stderr)
        return 1
    except grpc.RpcError as error:  # the session or instance went away while we asked
        print(f"yr: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1


def _backend(args: argparse.Namespace) -> Any:
    if args.kubernetes:
        from yr.cli.kube import KubernetesBackend

        return KubernetesBackend(namespace=args.namespace)
    from yr.cli.local import LocalBackend

    return LocalBackend()


def _run(args: argparse.Namespace, backend: Any) -> int:
    command = args.command or "tree"
    if command in ("list", "tree"):
        views = backend.views()
        if getattr(args, "json", False):
            print(json.dumps(_json(command, views), indent=2))
        elif not views:
            print(backend.nothing_found())
        elif command == "list":
            render.print_table(views)
        else:
            render.print_tree(views)
        return 0
    view, row = find_instance(backend.views(), args.instance)
    if command == "stack":
        reply = backend.stacks(view, row)
        print(f"instance {row['id']} pid={reply.pid}: {len(reply.threads)} thread(s)")
        for thread in reply.threads:
            print(f"\n--- thread {thread.name} ({thread.ident}) ---")
            print(thread.stack.rstrip())
        return 0
    after = 0
    while True:
        lines, ended = backend.logs(view, row, after=after)
        for number, text in lines:
            print(text, flush=True)
            after = number
        if ended or not args.follow:
            return 0
        time.sleep(FOLLOW_POLL_S)  # follows a live stream; nothing waits on this in tests


def _json(command: str, views: list[dict[str, Any]]) -> dict[str, Any]:
    if command == "list":
        return {"instances": [row for view in views for row in view["instances"]]}
    return {
        "sessions": [
            {
                "title": view.get("title", ""),
                "session": view.get("session", {}),
                "tree": render.tree_nodes(view["instances"]),
                "driver_waiting_on": view.get("driver_waiting_on", []),
                "deadlocks": view.get("deadlocks", []),
                "refused_deadlocks": view.get("refused_deadlocks", []),
                "resource_groups": view.get("resource_groups", []),
            }
            for view in views
        ]
    }


def find_instance(views: list[dict[str, Any]], wanted: str) -> tuple[dict, dict]:
    """The one instance whose id or name is ``wanted``, else whose id starts with it."""
    everything = [(view, row) for view in views for row in view["instances"]]
    for match in (
        lambda row: wanted in (row["id"], row.get("name")),
        lambda row: row["id"].startswith(wanted),
    ):
        found = [(view, row) for view, row in everything if match(row)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            ids = ", ".join(row["id"] for _, row in found)
            raise LookupError(f"{wanted!r} names more than one instance: {ids}")
    raise LookupError(f"no instance {wanted!r} (see `yr list`)")


if __name__ == "__main__":
    sys.exit(main())
