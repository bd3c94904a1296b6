"""The sweep's attention statistics (``--stats``): each converted configuration's trained model measured on the
test set right after training (``attention_statistics``), written as ``stats/POLICY-nN-seedS.json`` and ``.png``
(``stats_name``: ``POLICY-VARIANT-nN-seedS`` for a variant other than the default)
in the sweep's directory, files the sweep owns (``sweep_manifest``). The sweep keeps no fine-tuned model, so a
configuration that finished without ``--stats`` gets none on a resume; ``warn_missing_stats`` says so."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

from torch import nn
from torch.utils.data import DataLoader

from ..attention_stats import attention_statistics
from .data import DataBundle
from .sweep_manifest import STATS_DIR, write_owned
from .sweep_variants import DEFAULT_VARIANT

__all__ = ["SweepStatsWarning", "configuration_stats", "stats_name", "warn_missing_stats"]


class SweepStatsWarning(UserWarning):
    """A configuration's attention statistics could not be written, or finished configurations have none."""


def stats_name(policy: str, n: int, seed: int, variant: str = DEFAULT_VARIANT) -> str:
    """The files' path in the sweep's directory, without the suffix: ``stats/POLICY[-VARIANT]-nN-seedS``, the
    policy and variant quoted (``last:2`` is ``last%3A2``); the default variant adds nothing."""
    tag = "" if variant == DEFAULT_VARIANT else f"-{quote(variant, safe='')}"
    return f"{STATS_DIR}/{quote(policy, safe='')}{tag}-n{n}-seed{seed}"


def configuration_stats(model: nn.Module, data: DataBundle, out: Path, configuration: tuple[str, int, int, str], *,
                        batch_size: int, title: str) -> dict[str, Any]:
    """Measure ``model`` (the trained ``configuration``: policy, n, seed, variant) on ``data.test`` and write its
    statistics and figure; returns what to add to the record:
    ``{"stats": path of the JSON}``, or ``{"stats_error": ...}`` (with a warning) when that failed, so a trained
    configuration's results are never lost to its statistics."""
    from .attention_plot import attention_figure

    name = stats_name(*configuration)
    try:
        device = next(model.parameters()).device
        batches = ((x.to(device), y) for x, y in DataLoader(data.test, batch_size=batch_size, shuffle=False))
        stats = attention_statistics(model, batches)
        text = stats.to_json().encode("utf-8")
        write_owned(out, f"{name}.json", lambda fh: fh.write(text), "json")
        figure = attention_figure(stats, f"{title}: attention statistics over {stats.samples} test samples")
        write_owned(out, f"{name}.png", lambda fh: fh.write(figure), "png")
    except Exception as exc:  # the trained configuration is recorded either way
        error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        warnings.warn(f"attention statistics {name} were not written ({error})",
                      SweepStatsWarning, stacklevel=2)
        return {"stats_error": error}
    return {"stats": f"{name}.json"}


def warn_missing_stats(records: Iterable[dict[str, Any]]) -> None:
    """Warn once when finished converted configurations have no statistics (they ran without ``--stats``)."""
    missing = [r["key"] for r in records if r.get("converted_layers") and not r.get("stats")]
    if missing:
        warnings.warn(
            f"{len(missing)} finished configuration(s) have no attention statistics ({', '.join(missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''}): the sweep keeps no fine-tuned model to measure. Run the sweep "
            "with --stats into a new output directory to get them", SweepStatsWarning, stacklevel=2)
