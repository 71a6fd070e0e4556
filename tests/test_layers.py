"""The house plan holds: each folder of edgelm/ imports only from folders above it, and no modules import each
other in a circle. Every import statement counts, also those inside functions; `if TYPE_CHECKING:` blocks do
not (they never run), nor does stage discovery by module-name strings (importlib)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edgelm"
LAYERS = ("core", "data", "models", "train", "export", "runtimes", "verify", "measure", "techniques", "stages",
          "pipeline", "deliver")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    base = PACKAGE.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and ast.unparse(test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def import_nodes(tree: ast.AST):
    """Every Import / ImportFrom, at any depth, outside `if TYPE_CHECKING:` bodies (their else branch counts)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        children = node.orelse if _is_type_checking(node) else ast.iter_child_nodes(node)
        stack.extend(children)


def imported(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool) -> set[str]:
    """The edgelm modules an import statement loads: `from a.b import c` is a.b.c when that is a module."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name.split(".")[0] == "edgelm"}
    base = node.module or ""
    if node.level:
        anchor = importer.split(".")[:len(importer.split(".")) - node.level + is_package]
        base = ".".join(anchor + ([base] if base else []))
    if base.split(".")[0] != "edgelm":
        return set()
    return {f"{base}.{a.name}" if is_module(f"{base}.{a.name}") else base for a in node.names}


def module_imports() -> dict[str, set[str]]:
    """Every edgelm module -> the other edgelm modules it imports."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        tree = ast.parse(path.read_text(), str(path))
        targets = set().union(*(imported(n, name, path.name == "__init__.py") for n in import_nodes(tree)))
        graph[name] = targets - {name}
    return graph


def layer(module: str) -> int | None:
    """Index of the module's folder in LAYERS; None for edgelm itself and the top-level modules (cli, consumer,
    __main__), which may import anything."""
    parts = module.split(".")
    if len(parts) == 1 or (len(parts) == 2 and parts[1] not in LAYERS):
        return None
    assert parts[1] in LAYERS, f"{module}: edgelm/{parts[1]}/ is not a folder of the house plan (LAYERS)"
    return LAYERS.index(parts[1])


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for importer, targets in sorted(graph.items()):
        own = layer(importer)
        for target in sorted(targets):
            theirs = layer(target)
            if own is not None and target != "edgelm" and (theirs is None or theirs > own):
                where = "top level" if theirs is None else LAYERS[theirs]
                bad.append(f"{importer} ({LAYERS[own]}) imports {target} ({where}, below it)")
    return bad


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per group of modules that all reach each other, as a path that returns to its start."""
    reach = {v: reachable(graph, v) for v in graph}
    groups = {frozenset(w for w in reach[v] if v in reach.get(w, ())) for v in graph if v in reach[v]}
    return sorted(circle_in(graph, set(g)) for g in groups)


def circle_in(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group (breadth-first)."""
    start = min(group)
    paths = {start: [start]}
    queue = [start]
    for v in queue:
        for w in sorted(graph[v] & group):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    raise AssertionError(f"no circle through {start} in {sorted(group)}")


def test_every_folder_imports_only_from_folders_above_it():
    bad = layer_violations(module_imports())
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_no_import_circles():
    circles = [" -> ".join(c) for c in cycles(module_imports())]
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_imports_inside_functions_count_and_type_checking_blocks_do_not():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import edgelm.deliver.report\n"
                     "else:\n    import edgelm.data\ndef f():\n    from edgelm.verify import parity\n")
    found = set().union(*(imported(n, "edgelm.core.x", False) for n in import_nodes(tree)))
    assert found == {"edgelm.data", "edgelm.verify.parity"}


def test_the_checks_can_fail():
    graph = {"edgelm.core.a": {"edgelm.deliver.b", "edgelm"}, "edgelm.deliver.b": {"edgelm.core.a", "edgelm.cli"},
             "edgelm.cli": set()}
    assert layer_violations(graph) == ["edgelm.core.a (core) imports edgelm.deliver.b (deliver, below it)",
                                       "edgelm.deliver.b (deliver) imports edgelm.cli (top level, below it)"]
    assert cycles(graph) == [["edgelm.core.a", "edgelm.deliver.b", "edgelm.core.a"]]
