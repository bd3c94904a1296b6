"""The tests import the installed package and their helpers properly: no path edits, nothing from conftest."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def test_no_path_tricks_in_tests():
    pattern = re.compile(r"^\s*(from conftest import|import conftest|sys\.path\.(insert|append))", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in TESTS.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == [], f"use tests/helpers (import helpers.NAME) instead: {offenders}"


def test_pytest_does_not_put_the_source_tree_on_sys_path():
    setting = re.search(r"^pythonpath\s*=\s*\[(.*)\]", (ROOT / "pyproject.toml").read_text(), re.M)  # 3.10: no tomllib
    entries = re.findall(r'"([^"]*)"', setting.group(1)) if setting else []
    assert not {".", "./", ""} & set(entries), "the tree's odconv_surgery would shadow the installed wheel"


def test_lab_code_is_not_in_the_package():
    package = ROOT / "odconv_surgery"
    lab_names = re.compile(r"PAPER_CPU_FPS|def static_model|def require_quiet|mobilenet_v2_0\.5")
    offenders = [str(p.relative_to(ROOT)) for p in package.rglob("*.py") if lab_names.search(p.read_text())]
    assert offenders == [], f"lab code belongs in benchmarks/lab: {offenders}"


def test_no_import_cycle_even_through_function_level_imports():
    """#20: the package's modules import each other without a cycle, counting imports inside functions too
    (package ``__init__`` re-exports aside)."""
    import ast

    import networkx as nx

    import odconv_surgery

    root = Path(odconv_surgery.__file__).parent
    modules = {}
    for f in root.rglob("*.py"):
        parts = ("odconv_surgery",) + f.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = f
    graph = nx.DiGraph()
    for name, f in modules.items():
        package = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("odconv_surgery"):
                target = node.module
            else:
                continue
            for alias in node.names:
                dest = f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target
                if dest in modules and dest != name and modules[dest].name != "__init__.py" and f.name != "__init__.py":
                    graph.add_edge(name, dest)
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, [" -> ".join(c) for c in cycles[:5]]
