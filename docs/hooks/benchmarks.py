"""MkDocs hook: publish the repository's benchmarks/*.md (and their figures) under benchmarks/ in the site.

The measured figures live beside the scripts that produce them, not in docs/; this hook adds them to the build
so the docs link them as ordinary pages and ``mkdocs build --strict`` checks those links.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = {".md", ".png"}


def on_files(files: Files, config) -> Files:
    for path in sorted((ROOT / "benchmarks").rglob("*")):
        if path.is_file() and path.suffix in SUFFIXES:
            rel = path.relative_to(ROOT).as_posix()
            files.append(File(rel, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files
