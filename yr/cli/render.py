"""Tables and trees for the ``yr`` command: ``rich`` in a terminal, plain text otherwise.

Both backends hand over the same rows (one dict per instance, see
yr/runtime/local/snapshot.py), so both print the same facts the same way.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

COLUMNS = ("INSTANCE", "CLASS", "STATE", "CPU", "RESOURCES", "RESTARTS", "OWNER", "AGE", "WHERE")


def short_class(row: dict[str, Any]) -> str:
    return row["class"].rsplit(".", 1)[-1]


def state_text(row: dict[str, Any]) -> str:
    return f"{row['state']} ({row['reason']})" if row.get("reason") else row["state"]


def age_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def waiting_text(row: dict[str, Any]) -> str:
    return ", ".join(
        f"waiting {wait['seconds']:.1f} s on {wait['target']}"
        + (f".{wait['method']}" if wait.get("method") else "")
        for wait in row.get("waiting_on", ())
    )


def table_cells(row: dict[str, Any]) -> list[str]:
    resources = ",".join(f"{k}={v:g}" for k, v in sorted(row.get("custom_resources", {}).items()))
    where = row.get("pod") or row.get("node") or ""
    if row.get("pid"):
        where = f"{where} pid={row['pid']}"
    return [
        row["id"],
        short_class(row),
        state_text(row),
        f"{row['cpu']}m",
        resources or "-",
        str(row["restarts"]),
        row["owner"],
        age_text(row["age_s"]),
        where.strip(),
    ]


def tree_nodes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows nested by owner: each node gains ``children``; the roots are returned."""
    nodes = {row["id"]: {**row, "children": []} for row in rows}
    roots = []
    for node in nodes.values():
        owner = nodes.get(node["owner"])
        (owner["children"] if owner is not None else roots).append(node)
    for node in nodes.values():
        node["children"].sort(key=lambda child: child["age_s"], reverse=True)
    roots.sort(key=lambda node: node["age_s"], reverse=True)
    return roots


def tree_line(node: dict[str, Any], deadlocked: dict[str, list[str]]) -> str:
    line = f"{node['id']} ({short_class(node)}) {state_text(node)}"
    waiting = waiting_text(node)
    if waiting:
        line += f"  {waiting}"
    if node["id"] in deadlocked:
        line += f"  DEADLOCK: {' -> '.join(deadlocked[node['id']])}"
    return line


def _deadlocked(view: dict[str, Any]) -> dict[str, list[str]]:
    return {member: cycle for cycle in view.get("deadlocks", ()) for member in cycle}


def print_table(views: list[dict[str, Any]], out: TextIO = sys.stdout) -> None:
    rows = [table_cells(row) for view in views for row in view["instances"]]
    if out.isatty() and _rich() is not None:
        from rich.console import Console
        from rich.table import Table

        table = Table(*COLUMNS, box=None, header_style="bold")
        for cells in rows:
            table.add_row(*cells)
        Console(file=out).print(table)
        return
    widths = [max([len(c), *(len(cells[i]) for cells in rows)]) for i, c in enumerate(COLUMNS)]
    for cells in [list(COLUMNS), *rows]:
        out.write(
            "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
        )
        out.write("\n")


def print_tree(views: list[dict[str, Any]], out: TextIO = sys.stdout) -> None:
    for view in views:
        deadlocked = _deadlocked(view)
        title = view.get("title", "driver")
        driver_waiting = waiting_text({"waiting_on": view.get("driver_waiting_on", ())})
        if driver_waiting:
            title += f"  {driver_waiting}"
        roots = tree_nodes(view["instances"])
        if out.isatty() and _rich() is not None:
            from rich.console import Console
            from rich.tree import Tree

            tree = Tree(title)
            _grow_rich(tree, roots, deadlocked)
            Console(file=out).print(tree)
        else:
            out.write(f"{title}\n")
            _write_plain(out, roots, deadlocked, prefix="")
        for cycle in view.get("deadlocks", ()):
            out.write(f"deadlock: {' -> '.join(cycle)}\n")
        for group in view.get("resource_groups", ()):
            out.write(group_line(group) + "\n")
        for refused in view.get("refused_deadlocks", ()):
            out.write(
                f"deadlock refused {refused['seconds_ago']:.1f} s ago (yr.get raised in "
                f"{refused['cycle'][0]}): {' -> '.join(refused['cycle'])}\n"
            )


def group_line(group: dict[str, Any]) -> str:
    """One resource group: its state, its bundles and who is placed in which."""
    bundles = len(group["bundles"])
    cpu = sum(bundle["CPU"] for bundle in group["bundles"])
    members = ", ".join(f"{member}@{index}" for member, index in group["members"].items())
    return (
        f"resource group {group['name']} ({group['strategy']}) {group['state']}: {bundles} "
        f"bundle(s), {cpu}m CPU, owner {group['owner']}, members: {members or 'none'}"
    )


def _grow_rich(parent: Any, nodes: list[dict[str, Any]], deadlocked: dict) -> None:
    from rich.markup import escape

    for node in nodes:
        style = "bold red" if node["id"] in deadlocked else ""
        text = escape(tree_line(node, deadlocked))
        _grow_rich(
            parent.add(f"[{style}]{text}[/]" if style else text), node["children"], deadlocked
        )


def _write_plain(out: TextIO, nodes: list[dict[str, Any]], deadlocked: dict, prefix: str) -> None:
    for index, node in enumerate(nodes):
        last = index == len(nodes) - 1
        out.write(f"{prefix}{'└── ' if last else '├── '}{tree_line(node, deadlocked)}\n")
        _write_plain(out, node["children"], deadlocked, prefix + ("    " if last else "│   "))


def _rich() -> Any:
    try:
        import rich
    except ImportError:  # an optional extra: plain text serves as well
        return None
    return rich
