"""A fake installed plugin package (entry points) and the model specs that must never run code."""

from __future__ import annotations


def write_plugin_package(root, module: str, source: str, entry_points: dict[str, str], dist: str = "fake-odconv-plugin") -> None:
    """A module plus an installed-distribution record declaring ``entry_points`` in the odconv_surgery.models group.

    Put ``root`` on sys.path (or PYTHONPATH) and importlib.metadata finds the entry points as if pip had installed it.
    """
    import pathlib

    root = pathlib.Path(root)
    (root / f"{module}.py").write_text(source)
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[odconv_surgery.models]\n{lines}")


# Specs that would run a command or delete a file if a model spec could call any Python callable ({f}: a path).
DANGEROUS_SPECS = [
    "os:system?command=touch {f}",
    "subprocess:check_output?args=touch {f}&shell=True",
    "subprocess:run?args=touch {f}&shell=True",
    "os:remove?path={f}",
]
