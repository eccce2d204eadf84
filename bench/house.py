"""The house's shape as JSON: package cycles, in-function imports of our own code, big files.

    .venv/bin/python bench/house.py [--list]

A *package* is a sub-package of ``appliance`` (``appliance.auth``) or a top-level one
(``ingest``, ``models``); each face module (a domain's ``routes.py``/``cli.py``, and
``deps``, ``main``, ``pages``, ``middleware``, ``cli``, ``wiring``, ``models_registry``,
``migrations`` and each module inside those) is a node of its own, because faces may
import anything.
A cycle is a strongly connected set of two or more nodes. An in-function import is an
``import``/``from`` of appliance, ingest or models inside a function body; the ones that
carry a comment (``# start-up cost``/``# optional dependency``) are counted apart.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = ("appliance", "models", "ingest")
TOP_FACES = {"deps", "main", "pages", "middleware", "cli", "wiring", "models_registry"}
TOP_FACES |= {"operator_socket"}
TOP_FACES |= {"migrations", "__main__"}
FACE_FILES = {"routes", "admin_routes", "cli"}
REASONS = ("# start-up cost", "# optional dependency")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _node(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "appliance" or len(parts) == 1:
        return parts[0]
    if parts[1] in TOP_FACES:
        return module
    if len(parts) > 2 and parts[2] in FACE_FILES:
        return ".".join(parts[:3])
    return ".".join(parts[:2])


def _sccs(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def measure() -> dict[str, object]:
    """Walk the three packages and compute the figures."""
    graph: dict[str, set[str]] = defaultdict(set)
    in_function: list[dict[str, object]] = []
    big: dict[str, int] = {}
    files = [p for pkg in OURS for p in sorted((ROOT / pkg).rglob("*.py"))]
    for path in files:
        if "versions" in path.parts:
            continue
        source = path.read_text()
        lines = source.splitlines()
        if len(lines) > 400:
            big[str(path.relative_to(ROOT))] = len(lines)
        module = _module(path)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for fn in ast.walk(ast.parse(source)):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                target = _target(node, package)
                if target and target.split(".")[0] in OURS:
                    above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
                    if not above.startswith(REASONS):
                        above = ""
                    in_function.append(
                        {
                            "where": f"{path.relative_to(ROOT)}:{node.lineno}",
                            "imports": target,
                            "why": above[1:].strip() if above.startswith("#") else None,
                        }
                    )
        for node in ast.walk(ast.parse(source)):
            target = _target(node, package)
            if target and target.split(".")[0] in OURS:
                a, b = _node(module), _node(target)
                if a != b:
                    graph[a].add(b)
    unexplained = [i for i in in_function if not i["why"]]
    return {
        "package_cycles": _sccs(graph),
        "in_function_imports_of_ours": len(in_function),
        "in_function_imports_without_a_reason": len(unexplained),
        "files_over_400_lines": dict(sorted(big.items(), key=lambda kv: -kv[1])),
        "_in_function": in_function,
    }


def _target(node: ast.AST, package: str) -> str | None:
    if isinstance(node, ast.Import):
        return node.names[0].name
    if isinstance(node, ast.ImportFrom):
        if not node.level:
            return node.module
        base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        return ".".join([*base, *([node.module] if node.module else [])])
    return None


def main() -> None:
    """Print the figures as JSON (``--list`` adds each in-function import)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="list every in-function import")
    args = parser.parse_args()
    figures = measure()
    listed = figures.pop("_in_function")
    if args.list:
        figures["in_function_imports"] = listed
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
