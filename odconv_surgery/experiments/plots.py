"""PNG plots of a sweep summary: top-1 vs CPU latency and top-1 vs params (matplotlib, headless)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

from .sweep_manifest import write_owned

__all__ = ["plot_sweep"]


def _scatter(summary: Sequence[dict[str, Any]], x_key: str, x_err: str | None, x_label: str, x_scale: float, out: Path,
             name: str, title: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = [r for r in summary if r.get("runs") and r.get(x_key) is not None and r.get("top1_mean") is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for row in rows:
        variant = row.get("variant", "odconv")
        label = "baseline" if row["policy"] == "baseline" else f"{row['policy']} {variant} ({row['kernel_num']}x)"
        x = row[x_key] / x_scale
        xerr = (row.get(x_err) or 0) / x_scale if x_err else None
        ax.errorbar(x, row["top1_mean"], xerr=xerr, yerr=row.get("top1_std") or 0, fmt="none", capsize=3,
                    marker="s" if row["policy"] == "baseline" else "o", label=label)
        ax.annotate(label, (x, row["top1_mean"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(x_label)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")  # rendered in memory, written by the careful writer
    plt.close(fig)
    return write_owned(out, name, lambda fh: fh.write(buffer.getvalue()), "png")


def plot_sweep(summary: Sequence[dict[str, Any]], out_dir: str | Path) -> dict[str, Path]:
    """Write ``acc_vs_latency.png`` (when latency was measured) and ``acc_vs_params.png`` into files the sweep owns
    (``sweep_manifest``); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    backend = next((r.get("latency_backend") for r in summary if r.get("latency_backend")), "")
    lat = _scatter(summary, "latency_ms_mean", "latency_ms_std", "CPU latency, batch 1 (ms)", 1.0,
                   out, "acc_vs_latency.png", f"Accuracy vs latency ({backend})")
    if lat:
        files["plot_latency"] = lat
    params = _scatter(summary, "params", None, "parameters (M)", 1e6, out, "acc_vs_params.png", "Accuracy vs parameters")
    if params:
        files["plot_params"] = params
    return files
