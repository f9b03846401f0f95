"""Instance output in the driver's terminal: prefixed lines, and progress bars drawn in place."""

from __future__ import annotations

import sys

import yr
from tests.support import wait_for
from yr.runtime.local.output import LineSplitter


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class ProgressBar:
    def draw(self, frames: int, width: int) -> None:
        """Draw ``frames`` frames the way tqdm does: a carriage return, never a newline."""
        for done in range(frames):
            sys.stdout.write(f"\r{done:>{width}}")
        sys.stdout.write(f"\rlast frame {frames}\r")
        sys.stdout.flush()


def _captured_until(capsys, text: str) -> str:
    seen: list[str] = []

    def printed() -> bool:
        seen.append(capsys.readouterr().out)
        return text in "".join(seen)

    wait_for(printed, timeout=60, what=f"{text!r} in the driver's output")
    return "".join(seen)


def test_progress_bar_frames_reach_the_driver_before_any_newline(local_runtime, capsys):
    bar = ProgressBar.invoke()
    # 8 MiB of frames and no newline: held until a newline, they would also cost quadratic CPU.
    yr.get(bar.draw.invoke(1 << 20, 7))
    out = _captured_until(capsys, "last frame")
    frame = next(piece for piece in out.split("\r") if "last frame" in piece)
    assert frame.endswith(f") last frame {1 << 20}")
    assert frame.startswith(f"({bar.instance_id} pid=")


def test_a_line_shows_its_last_carriage_return_frame_as_a_terminal_would():
    splitter = LineSplitter()
    assert splitter.feed(b"\r 10%\r 20%\r 30%\n") == [(b" 30%", b"\n")]


def test_frames_completed_by_one_read_collapse_to_the_newest():
    splitter = LineSplitter()
    assert splitter.feed(b"\r 10%\r 20%\r 30%") == [(b" 20%", b"\r")]


def test_a_newline_after_a_shown_frame_ends_the_line_with_that_frame():
    splitter = LineSplitter()
    splitter.feed(b"\r 90%\r")
    assert splitter.feed(b"\n") == [(b" 90%", b"\n")]


def test_crlf_line_endings_are_plain_newlines():
    splitter = LineSplitter()
    assert splitter.feed(b"one\r\ntwo\r\n") == [(b"one", b"\n"), (b"two", b"\n")]


def test_output_without_a_final_newline_is_flushed_at_end_of_stream():
    splitter = LineSplitter()
    assert splitter.feed(b"partial") == []
    assert splitter.finish() == [(b"partial", b"\n")]
