"""`yr-operator`: parse the command line and run the kopf operator with our handlers."""

from __future__ import annotations

import argparse
import logging

import kopf

from .leases import grace_seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="yr-operator", description="Run the yr operator (YRInstance -> Pod)."
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (default)"
    )
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)"
    )
    parser.add_argument("--liveness", metavar="URL", help="e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics on /metrics there, e.g. 0.0.0.0:9090 (port 0: any)",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--standalone",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run without peering (default); --no-standalone enables kopf peering",
    )
    args = parser.parse_args(argv)
    try:  # the operator's env knobs: a bad value stops it here, named, before it runs
        grace_seconds()
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.PLAIN)
    if not args.verbose:
        # One INFO line per handler per instance is noise at a hundred instances a second.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    from . import handlers  # noqa: F401  (registers the handlers with kopf)

    if args.metrics:
        from . import metrics

        metrics.serve(args.metrics)

    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=args.standalone,
        liveness_endpoint=args.liveness,
    )
    return 0
