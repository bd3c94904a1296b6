"""The README's examples run as written, its commands exist, its links resolve, and the API reference in docs/api/
renders every public name of ``odconv_surgery``. (``make docs`` / CI build the site itself with ``--strict``.)"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

import odconv_surgery
from odconv_surgery import errors
from odconv_surgery.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
API_DIR = ROOT / "docs" / "api"


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def shell_lines(path: Path) -> list[str]:
    """The commands of a page's bash blocks, continuation lines joined, comments dropped."""
    blocks = [block.replace("\\\n", " ") for block in code_blocks(path.read_text(), "bash")]
    return [cmd for block in blocks for line in block.splitlines() if (cmd := line.split("#")[0].strip())]


PYTHON_BLOCKS = code_blocks(README.read_text(), "python")


def test_readme_is_short_and_has_examples():
    assert len(README.read_text().splitlines()) <= 150
    assert len(PYTHON_BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_readme_python_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write their files (checkpoint, model.onnx, runs/) where they run
    code = compile(PYTHON_BLOCKS[index], f"README.md python block {index + 1}", "exec")
    exec(code, {"__name__": "__readme__"})


def check_command(argv: list[str]) -> bool:
    """Whether ``argv`` is a make target of the Makefile or a command line the CLI parses; False if neither kind."""
    if argv[0] == "make":
        make_targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
        assert set(argv[1:]) <= make_targets, argv
        return True
    if argv[0] == "odconv-surgery":
        build_parser().parse_args(argv[1:])  # exits (a test failure) on an unknown command or option
        return True
    return False


def test_readme_shell_commands_exist():
    commands = shell_lines(README)
    assert commands
    for line in commands:
        assert check_command(shlex.split(line)), f"README shell line not checked: {line!r}"


def test_docs_shell_commands_exist():
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for line in shell_lines(page):
            check_command(shlex.split(line))  # other commands (pip, python scripts) are not checked


def test_readme_links_resolve():
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text()):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links to missing {target}"


def _rendered_objects() -> set[int]:
    """ids of the objects the ``::: path`` directives of docs/api/*.md render (a module renders its members)."""
    rendered: set[int] = set()
    for page in sorted(API_DIR.glob("*.md")):
        for path in re.findall(r"^::: ([\w.]+)\s*$", page.read_text(), flags=re.M):
            module_name, _, attr = path.rpartition(".")
            try:
                obj = importlib.import_module(path)
            except ImportError:
                obj = getattr(importlib.import_module(module_name), attr)
            rendered.add(id(obj))
            if obj is errors:
                rendered.update(id(getattr(errors, name)) for name in errors.PUBLIC_ERRORS)
    return rendered


def test_api_reference_renders_every_public_name():
    rendered = _rendered_objects()
    missing = [name for name in odconv_surgery.__all__ if id(getattr(odconv_surgery, name)) not in rendered]
    assert not missing, f"public names without a '::: path' in docs/api/*.md: {missing}"
