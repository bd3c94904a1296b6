"""The attention-statistics figure (matplotlib, headless): one panel per attention type and one for the kernel
dynamism, every converted layer along the x axis in the order the model runs them.

In an attention panel each layer gets a box of its elements' mean attention over samples (kernel positions,
kernels, channels or filters: quartiles in the box, minimum to maximum in the whiskers, the paper's Fig. 6) and,
beside it, how much the attention moves with the input: the mean attention, with a bar of the elements' mean
standard deviation across samples (``AttentionSummary.spread``). The bottom panel is the layer's kernel dynamism
(``LayerAttentionStats.dynamism``).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

from ..atomic_file import atomic_write
from ..attention_stats import KINDS, AttentionStats

__all__ = ["attention_figure", "plot_attention_stats"]

PANEL_TITLES = {
    "spatial": "spatial attention (per kernel position)",
    "kernel": "kernel attention (per kernel)",
    "channel": "channel attention (per input channel)",
    "filter": "filter attention (per filter)",
}
BOX_COLOUR = "#4C72B0"
SAMPLE_COLOUR = "#DD8452"
LOG_RATIO = 30  # the dynamism panel turns logarithmic when its largest value is this many times its smallest
LOG_FLOOR = 1e-6  # ... and shows values down to this fraction of its largest (below: round-off of a static layer)


def _box(distribution) -> dict:
    return {"med": distribution.median, "q1": distribution.q1, "q3": distribution.q3, "whislo": distribution.min,
            "whishi": distribution.max, "fliers": []}


def attention_figure(stats: AttentionStats, title: str | None = None) -> bytes:
    """The figure of ``stats`` as PNG bytes (``title``: its heading; default says how many samples)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    layers = stats.layers
    kinds = [kind for kind in KINDS if any(getattr(layer, kind) is not None for layer in layers)]
    count = max(len(layers), 1)
    fig, axes = plt.subplots(len(kinds) + 1, 1, sharex=True, squeeze=False, dpi=120,
                             figsize=(max(6.4, 1.6 + 0.22 * count), 1.9 * (len(kinds) + 1) + 1.2))
    axes = axes[:, 0]
    for ax, kind in zip(axes, kinds):
        _attention_panel(ax, stats, kind)
    _dynamism_panel(axes[-1], stats)
    axes[-1].set_xticks(range(len(layers)), [layer.name for layer in layers], rotation=90,
                        fontsize=6 if count > 20 else 7)
    axes[-1].set_xlim(-0.7, count - 0.3)
    axes[-1].set_xlabel("converted layer, in the order the model runs them")
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=BOX_COLOUR, alpha=0.45, edgecolor=BOX_COLOUR),
               plt.Line2D([], [], color=SAMPLE_COLOUR, marker="o", markersize=3)]
    fig.legend(handles, ["elements' mean over samples: quartiles, whiskers min to max",
                         "mean attention +- an element's std across samples (mean over elements)"],
               loc="upper right", fontsize=7, ncol=2, frameon=False)
    fig.suptitle(title or f"ODConv attention statistics over {stats.samples} samples (eval, temperature 1)",
                 fontsize=9, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _attention_panel(ax, stats: AttentionStats, kind: str) -> None:
    present = [(i, getattr(layer, kind)) for i, layer in enumerate(stats.layers) if getattr(layer, kind) is not None]
    positions = [i for i, _ in present]
    ax.bxp([_box(att.element_means) for _, att in present], positions=[p - 0.15 for p in positions], widths=0.35,
           showfliers=False, patch_artist=True, manage_ticks=False,
           boxprops={"facecolor": BOX_COLOUR, "alpha": 0.45, "edgecolor": BOX_COLOUR},
           medianprops={"color": BOX_COLOUR}, whiskerprops={"color": BOX_COLOUR}, capprops={"color": BOX_COLOUR})
    ax.errorbar([p + 0.2 for p in positions], [att.element_means.mean for _, att in present],
                yerr=[att.spread for _, att in present], fmt="o", markersize=3, capsize=2,
                color=SAMPLE_COLOUR, elinewidth=1)
    ax.set_title(PANEL_TITLES[kind], fontsize=8, loc="left")
    ax.set_ylabel("attention", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.grid(True, axis="y", alpha=0.3)


def _dynamism_panel(ax, stats: AttentionStats) -> None:
    values = [layer.dynamism for layer in stats.layers]
    known = [(i, v) for i, v in enumerate(values) if v is not None]
    ax.bar([i for i, _ in known], [v for _, v in known], width=0.6, color="#55A868")
    positive = [v for _, v in known if v > 0]
    log = bool(positive) and max(positive) > LOG_RATIO * min(positive)
    if log:  # layers orders of magnitude apart: bars down to a millionth of the largest stay visible
        ax.set_yscale("log")
        ax.set_ylim(bottom=max(min(positive), max(positive) * LOG_FLOOR) / 2)
    ax.set_title("kernel dynamism: RMS over samples of ||K - mean K|| / ||mean K|| (0: static, folds exactly)"
                 + (", log scale" if log else ""), fontsize=8, loc="left")
    ax.set_ylabel("dynamism", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.grid(True, axis="y", alpha=0.3)


def plot_attention_stats(stats: AttentionStats, path: str | os.PathLike, *, title: str | None = None,
                         inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Write ``attention_figure(stats)`` to the PNG file ``path`` atomically (an existing file that is not a PNG,
    or one of ``inputs``, is refused, never replaced)."""
    payload = attention_figure(stats, title)
    return atomic_write(path, lambda fh: fh.write(payload), inputs=inputs, replaces="png")
