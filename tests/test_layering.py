"""The seams between the packages: one direction of imports, no cycles, light client commands."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("indexer", "retrieval")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """First-party modules that ``path`` imports (at import time only, when asked)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes: list[ast.AST] = list(tree.body) if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}  # from pkg import module
    return {m for m in out if m.split(".")[0] in PACKAGES}


def _graph(*, top_level_only: bool) -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "v1" not in p.parts]
    modules = {_module_name(p): p for p in files}
    return {
        name: {m for m in _imports(path, top_level_only=top_level_only) if m in modules}
        for name, path in modules.items()
    }


def test_indexer_never_imports_retrieval() -> None:
    for module, deps in _graph(top_level_only=False).items():
        if module.startswith("indexer"):
            assert not {d for d in deps if d.startswith("retrieval")}, module


def test_no_import_cycles() -> None:
    graph = _graph(top_level_only=True)
    # package __init__ files import nothing of their own at import time (lazy exports)
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(node) :], node]))
        if node in done:
            return
        for dep in sorted(graph[node]):
            if dep != node and not node.startswith(dep + "."):  # a module's own package
                visit(dep, [*path, node])
        done.add(node)

    for module in sorted(graph):
        visit(module, [])


def test_a_client_command_loads_neither_faiss_nor_torch() -> None:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "retrieval.cli", "pause", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert "--advertisers" in out.stdout
    loaded = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines()}
    assert loaded & {"faiss", "torch", "sentence_transformers"} == set()
    assert "grpc" in loaded  # the measurement itself works
