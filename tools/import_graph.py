"""The import graph of wbc_utils, read from the source (nothing is imported).

    python tools/import_graph.py            # module -> the package modules it imports
    python tools/import_graph.py --cycles   # exit 1 and list them when the graph has a cycle

Counts imports anywhere in a module (top level and inside functions alike): a loop
held together by an import inside a function is still a loop.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "wbc_utils"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(current: str, is_pkg: bool, node: ast.ImportFrom) -> list[str]:
    base = current.split(".") if is_pkg else current.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    if not prefix.startswith("wbc_utils"):
        return []
    return [prefix] + [f"{prefix}.{a.name}" for a in node.names]


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: {package modules it imports}}, submodules of wbc_utils only (the package itself excluded)."""
    files = {module_name(p, package): p for p in package.rglob("*.py")}
    out: dict[str, set[str]] = {}
    for name, path in files.items():
        deps: set[str] = set()
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                targets = _resolve(name, path.name == "__init__.py", node)
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("wbc_utils")]
            for t in targets:
                # `from . import x` names either a submodule or an attribute: keep what exists
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t and t != name and t != "wbc_utils":
                    deps.add(t)
        out[name] = deps
    return out


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
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
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", action="store_true", help="only report cycles (exit 1 if any)")
    args = ap.parse_args()
    g = graph()
    found = cycles(g)
    if not args.cycles:
        for m in sorted(g):
            deps = ", ".join(d.removeprefix("wbc_utils.") for d in sorted(g[m])) or "-"
            print(f"{m.removeprefix('wbc_utils.'):24s} {deps}")
    for c in found:
        print("cycle: " + " <-> ".join(c))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
