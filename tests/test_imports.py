"""Importing the core packages never imports torch (only validate/ may, lazily)."""

import subprocess
import sys


def test_core_packages_do_not_import_torch():
    code = "import sys, einsum, workloads, simulator, mappers, attnscope.api; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


LAYERS = ("einsum", "workloads", "simulator", "mappers", "validate", "attnscope")
"""Each package may import only those before it (lazy imports inside functions included)."""


def _imports():
    """(module, imported module, line) for every import of one of the layers, at any depth of the code."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    modules = {}
    for pkg in LAYERS:
        for f in (root / pkg).rglob("*.py"):
            name = ".".join(f.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = f
    for name, f in modules.items():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for target in targets:
                if target.split(".")[0] in LAYERS:
                    yield name, target, node.lineno, target in modules


def test_no_package_imports_a_higher_layer():
    rank = {pkg: i for i, pkg in enumerate(LAYERS)}
    upward = [
        f"{m}:{line} imports {t}" for m, t, line, _ in _imports() if rank[t.split(".")[0]] > rank[m.split(".")[0]]
    ]
    assert upward == []


def test_no_import_cycles_between_modules():
    import networkx as nx

    graph = nx.DiGraph()
    for module, target, _, is_module in _imports():
        if is_module and target != module and not module.startswith(target + "."):
            graph.add_edge(module, target)
    assert list(nx.simple_cycles(graph)) == []
