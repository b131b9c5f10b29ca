"""The layout shows the architecture: imports point down the layers, and nothing imports in a circle.

Layers, lowest first (docs/DEVELOPING.md draws them): the base modules; ``git`` and ``meter`` (pure
parsers); ``ledger`` (its notes backend and checkpoints run git); ``rules`` (pure; it consults the
ledger's protocols and backend names); the services (``services``, ``report``, ``beads``, ``sim``,
``viz``); the entry points (``api``, ``agents``, ``hooks``, ``cli``).  Every import counts, the ones
inside functions too (a lazy import is still a dependency), except those under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "token_exchange"
LAYERS = [
    {"__init__", "amounts", "errors", "clock", "storage"},
    {"git", "meter"},
    {"ledger"},
    {"rules"},
    {"services", "report", "beads", "sim", "viz"},
    {"api", "agents", "hooks", "cli", "__main__"},
]
RANK = {name: n for n, layer in enumerate(LAYERS) for name in layer}
# Peers in one layer may use each other only this way round (no package circle); the base modules
# may use each other freely (the circle test still holds them).
PEERS = {("report", "services"), ("beads", "services"), ("sim", "services"), ("sim", "viz"), ("sim", "report"),
         ("viz", "services"), ("agents", "api"), ("cli", "api"), ("cli", "agents"), ("cli", "hooks"),
         ("__main__", "cli")}
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def typing_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (annotations only: never run)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            out.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return out


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    found: set[str] = set()
    tree = ast.parse(path.read_text("utf-8"))
    skip = typing_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("token_exchange"):
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("token_exchange"))
    return {m for m in found if m in known}


def package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(p, known) - {m} for m, p in known.items()}


def test_every_package_has_a_layer() -> None:
    assert {package(m) for m in modules()} <= set(RANK)


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for m, deps in graph().items():
        for d in deps:
            a, b = package(m), package(d)
            if a == b or b == "__init__":
                continue
            if RANK[b] > RANK[a] or (RANK[a] == RANK[b] != 0 and (a, b) not in PEERS):
                wrong.append(f"{m} -> {d}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_no_import_circles() -> None:
    g = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(g[m]):
            if d.startswith(m + "."):  # a package importing its own submodule is not a circle
                continue
            if state.get(d) == 1 and not m.startswith(d + "."):
                cycles.append([*stack[stack.index(d):], d] if d in stack else [m, d])
            elif d not in state:
                visit(d, [*stack, d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_long_module_without_a_reason() -> None:
    """A module over ~400 lines says why in its docstring (the word "long" in its first paragraph)."""
    long = []
    for m, p in modules().items():
        lines = p.read_text("utf-8").count("\n")
        doc = ast.get_docstring(ast.parse(p.read_text("utf-8"))) or ""
        if lines > MAX_LINES and "long" not in doc.lower():
            long.append(f"{m}: {lines} lines")
    assert not long, "split these, or say in the docstring why they are long:\n" + "\n".join(sorted(long))
