"""What the cluster's commands share: the process-lifetime flags and the log format."""

from __future__ import annotations

import argparse
import logging


def add_process_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--exit-with-stdin",
        action="store_true",
        help="stop when stdin reaches EOF (the parent died)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")


def configure_logging(args: argparse.Namespace) -> None:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
