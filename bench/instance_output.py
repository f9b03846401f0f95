"""Driver CPU spent forwarding an instance's output: newline-ended lines vs progress-bar frames.

``python bench/instance_output.py [--mib 32]``: an instance writes the given amount as 8-byte
pieces ended by ``\\n``, then by ``\\r``; prints the driver's CPU time for each (the instance's
output goes to /dev/null here, so only the forwarding is measured).
"""

from __future__ import annotations

import argparse
import os
import sys

import yr


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class Printer:
    def write(self, pieces: int, end: str) -> None:
        for piece in range(pieces):
            sys.stdout.write(f"{piece:>7}{end}")
        sys.stdout.write("done\n")
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=32, help="output per run (default 32)")
    args = parser.parse_args()
    real_stdout = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the forwarded output, not the terminal, is what we measure
    yr.init(yr.Config(num_cpus=2))
    try:
        printer = Printer.invoke()
        yr.get(printer.write.invoke(1, "\n"))
        for end in ("\n", "\r"):
            before = os.times()
            yr.get(printer.write.invoke(args.mib * 2**20 // 8, end), timeout=900)
            after = os.times()
            cpu = after.user - before.user + after.system - before.system
            os.write(
                real_stdout, f"{args.mib} MiB ended by {end!r}: driver CPU {cpu:.2f} s\n".encode()
            )
    finally:
        yr.finalize()


if __name__ == "__main__":
    main()
