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
