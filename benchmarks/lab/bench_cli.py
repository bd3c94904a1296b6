"""The command line every timing benchmark shares: repeats, rounds, a markdown file, and the quiet-machine guard."""

from __future__ import annotations

import argparse

from lab.machine_load import BusyMachineError, describe_load, load_average, require_quiet


def add_timing_args(p: argparse.ArgumentParser, repeats: int, rounds: int) -> None:
    """``--repeats``, ``--rounds``, ``--md`` and ``--allow-busy``."""
    p.add_argument("--repeats", type=int, default=repeats, help="timed runs per round")
    p.add_argument("--rounds", type=int, default=rounds, help="interleaved rounds (ratios: the median of the per-round ratios)")
    p.add_argument("--md", default=None, help="also write the table and the machine's load to this markdown file")
    p.add_argument("--allow-busy", action="store_true", help="time even when the load average says the machine is busy")


def quiet_start(args: argparse.Namespace) -> tuple[bool, float | None]:
    """(whether to go on, the load average at the start): refuses a busy machine unless ``--allow-busy``."""
    try:
        return True, require_quiet(args.allow_busy)
    except BusyMachineError as err:
        print(f"error: {err}")
        return False, None


def loads_line(load_start: float | None) -> str:
    """The machine (CPU, ISA, block, onnxruntime) and its load average at the start and now, for a table's header."""
    from odconv_surgery.deploy.machine import describe_cpu

    return f"machine: {describe_cpu()}; {describe_load(load_start)} at start, {describe_load(load_average())} at the end"
