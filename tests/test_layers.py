"""The import graph of ``yr/`` has no cycle and follows the layers of docs/layers.md."""

from __future__ import annotations

import ast
import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parent.parent
LAYERS_DOC = REPO / "docs" / "layers.md"


def _modules() -> dict[str, pathlib.Path]:
    modules = {}
    for path in (REPO / "yr").rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_main_block(node: ast.AST) -> bool:
    """``if __name__ == "__main__":`` runs only as a program, never on import."""
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
    )


def _imported_modules(module: str, path: pathlib.Path, modules: set[str]) -> set[str]:
    """Every yr module the file imports anywhere (lazy and TYPE_CHECKING imports included).

    ``from yr.x import name`` imports ``yr.x.name`` if that is a module, else ``yr.x``; as in
    import-linter, the packages above an imported module are not counted.
    """
    found: set[str] = set()
    pending: list[ast.AST] = [ast.parse(path.read_text())]
    while pending:
        node = pending.pop()
        if _is_main_block(node):
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package=path.name == "__init__.py")
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
        pending.extend(ast.iter_child_nodes(node))
    return {name for name in found if name in modules and name != module}


def _absolute(node: ast.ImportFrom, module: str, *, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    package = package[: len(package) - node.level + 1]
    return ".".join([*package, node.module] if node.module else package)


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        module: _imported_modules(module, path, set(modules)) for module, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_table() -> list[tuple[int, str, list[str]]]:
    rows = []
    for line in LAYERS_DOC.read_text().splitlines():
        match = re.match(r"\|\s*(\d+)\s*\|\s*([^|]+?)\s*\|([^|]+)\|", line)
        if match:
            rows.append((int(match[1]), match[2], re.findall(r"`(yr[\w.]*)`", match[3])))
    return rows


def placement(module: str, table: list[tuple[int, str, list[str]]]) -> tuple[int, str]:
    """The (layer, group) whose most specific name covers ``module``."""
    best: tuple[int, tuple[int, str]] | None = None
    for layer, group, names in table:
        for name in names:
            covers = module == name or module.startswith(name + ".")
            if covers and (best is None or len(name) > best[0]):
                best = (len(name), (layer, group))
    assert best is not None, f"{module} is in no layer of docs/layers.md: place it there"
    return best[1]


def test_yr_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_every_import_goes_down_the_layers_of_docs_layers_md():
    table = layer_table()
    assert len(table) >= 5, "docs/layers.md lost its table"
    violations = []
    for module, targets in sorted(import_graph().items()):
        layer, group = placement(module, table)
        for target in sorted(targets):
            target_layer, target_group = placement(target, table)
            if target_layer > layer or (target_layer == layer and target_group != group):
                violations.append(
                    f"{module} ({layer} {group}) imports {target} ({target_layer} {target_group})"
                )
    assert violations == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
