"""The driver's own user-facing lines (what it started, where): printed, not logged.

The library's loggers carry only a NullHandler, so diagnostics follow the application's logging
configuration; these few lines are output of the program the user ran and always show.
"""

from __future__ import annotations

import sys


def notice(text: str) -> None:
    """One line to the driver's stderr; never fails the caller over a closed stream."""
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
