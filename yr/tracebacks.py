"""Remote tracebacks as users read them: their own frames and files, one section per hop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import traceback

# Frames in these directories are yr's and the standard library's plumbing, not the user's.
_INTERNAL_DIRECTORIES = tuple(
    os.path.dirname(os.path.abspath(path)) + os.sep
    for path in (__file__, concurrent.futures.__file__, asyncio.__file__)
    if path
)
HOP_SEPARATOR = "\n\nThe caller did not catch it; its own traceback:\n"


def _is_internal(frame: traceback.FrameSummary) -> bool:
    return frame.filename.startswith(_INTERNAL_DIRECTORIES)


def _user_frames(stack: traceback.StackSummary) -> traceback.StackSummary:
    """The user's frames; all of them when none is the user's (then yr itself failed)."""
    kept = [frame for frame in stack if not _is_internal(frame)]
    return traceback.StackSummary.from_list(kept) if kept else stack


def _strip_internal(summary: traceback.TracebackException) -> None:
    seen: set[int] = set()
    pending = [summary]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        current.stack = _user_frames(current.stack)
        pending.extend(x for x in (current.__cause__, current.__context__) if x is not None)


def format_error(error: BaseException) -> str:
    """``error``'s traceback (with its causes) without yr's frames."""
    summary = traceback.TracebackException(type(error), error, error.__traceback__)
    _strip_internal(summary)
    return "".join(summary.format())


def format_hop(error: BaseException, shown: BaseException) -> str:
    """This process's part of an error that came from a callee: its frames, then ``shown``
    (the callee's original exception) in one line, since the callee's section has the rest."""
    stack = _user_frames(traceback.extract_tb(error.__traceback__))
    return (
        "Traceback (most recent call last):\n"
        + "".join(stack.format())
        + "".join(traceback.format_exception_only(type(shown), shown))
    )


def join_hops(inner: str, outer: str) -> str:
    """Sections innermost first: where the error was raised, then each caller it crossed."""
    return f"{inner.rstrip()}{HOP_SEPARATOR}{outer}" if inner else outer
