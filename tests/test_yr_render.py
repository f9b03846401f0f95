"""How the `yr` command prints: rich in a terminal, plain text otherwise (same facts)."""

from __future__ import annotations

import io

from yr.cli import render

ROW = {
    "id": "top-1",
    "class": "m.Top",
    "state": "ready",
    "reason": "",
    "cpu": 100,
    "custom_resources": {"gpu": 1.0},
    "restarts": 0,
    "owner": "driver",
    "age_s": 3.0,
    "node": "local",
    "pid": 42,
    "concurrency": 1,
}
VIEW = {
    "title": "driver pid=1 (job.py)",
    "instances": [
        {**ROW, "waiting_on": [{"target": "w-2", "method": "train", "seconds": 12.34}]},
        {**ROW, "id": "w-2", "class": "m.W", "owner": "top-1", "concurrency": 2},
    ],
    "deadlocks": [["top-1", "w-2", "top-1"]],
}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_tree_without_a_terminal_is_plain_text():
    out = io.StringIO()
    render.print_tree([VIEW], out)
    assert "\x1b[" not in out.getvalue()
    assert out.getvalue().splitlines()[:3] == [
        "driver pid=1 (job.py)",
        "└── top-1 (Top) ready  waiting 12.3 s on w-2.train  DEADLOCK: top-1 -> w-2 -> top-1",
        "    └── w-2 (W) ready  DEADLOCK: top-1 -> w-2 -> top-1",
    ]


def test_tree_in_a_terminal_marks_deadlocked_instances_in_colour():
    out = Terminal()
    render.print_tree([VIEW], out)
    assert "\x1b[1;31m" in out.getvalue()  # bold red
    assert "waiting 12.3 s on w-2.train" in out.getvalue()


def test_a_terminal_without_rich_gets_plain_text(monkeypatch):
    monkeypatch.setattr(render, "_rich", lambda: None)
    out = Terminal()
    render.print_tree([VIEW], out)
    assert "\x1b[" not in out.getvalue()


def test_table_lists_resources_and_where_it_runs():
    out = io.StringIO()
    render.print_table([VIEW], out)
    header, first, _ = out.getvalue().splitlines()
    assert header.split() == list(render.COLUMNS)
    assert first.split() == [
        "top-1",
        "Top",
        "ready",
        "100m",
        "gpu=1",
        "0",
        "driver",
        "3s",
        "local",
        "pid=42",
    ]
