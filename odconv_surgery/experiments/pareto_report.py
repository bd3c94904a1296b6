"""The Pareto sweep's outputs: mean ± std over seeds per point (``summarise``), each Table 9 policy against the best
budgeted placement no slower than it (``compare_at_policies``), the value measures against each other
(``compare_values``), and the files: ``pareto.md`` (the table), ``pareto.png`` (accuracy against the measured
latency ratio, both families), ``pareto.json`` (everything, raw records included), each written atomically.
"""

from __future__ import annotations

import io
import json
import math
import textwrap
from pathlib import Path
from typing import Any, Sequence

from ..placement.place import NOISE_TOLERANCE
from .pareto import BUDGET, POLICY, ParetoConfig, ParetoResult
from .sweep_manifest import write_owned
from .sweep_report import _mean_std, _pm

__all__ = ["compare_at_policies", "compare_values", "markdown_report", "plot_pareto", "summarise", "write_pareto"]

FILES = {"markdown": "pareto.md", "plot": "pareto.png", "json": "pareto.json"}
_RATIO_TICKS = (0.5, 0.8, 1, 1.1, 1.2, 1.3, 1.5, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50)


def _family_label(family: str, value_measure: str | None) -> str:
    """'Table 9' for the policies, 'budget (VALUE)' for the budgeted placements."""
    return "Table 9" if family == POLICY else f"budget ({value_measure})"


def summarise(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (family, value measure, budget or policy), in the records' order: mean ± std over seeds of the
    latency ratio, the static model's ms, the placed model's ms and top-1, the mean dynamic layers, and for budgets
    how many seeds met the budget."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec["family"], rec.get("value_measure"), rec["label"]), []).append(rec)
    rows = []
    for (family, value, label), recs in groups.items():
        row: dict[str, Any] = {"family": family, "value_measure": value, "label": label, "runs": len(recs)}
        for key in ("ratio", "static_ms", "latency_ms", "top1", "dynamic_layers"):
            row[f"{key}_mean"], row[f"{key}_std"] = _mean_std([rec.get(key) for rec in recs])
        row["met"] = sum(bool(rec.get("met")) for rec in recs) if family == BUDGET else None
        rows.append(row)
    return rows


def compare_at_policies(summary: Sequence[dict[str, Any]], tolerance: float = NOISE_TOLERANCE) -> list[dict[str, Any]]:
    """Per Table 9 policy (the baseline aside) and value measure: the budgeted row with the best mean top-1 among
    those whose mean ratio is no more than the policy's (plus ``tolerance``, timing noise), and the top-1 difference
    (positive: the budgeted placement is more accurate at no more latency). ``within_spread``: the difference is
    positive or smaller than the larger of the two standard deviations."""
    out = []
    policies = [r for r in summary if r["family"] == POLICY and r["label"] != "baseline" and r["ratio_mean"] is not None]
    measures = list(dict.fromkeys(r["value_measure"] for r in summary if r["family"] == BUDGET))
    for policy in policies:
        for measure in measures:
            limit = policy["ratio_mean"] * (1 + tolerance)
            candidates = [r for r in summary if r["family"] == BUDGET and r["value_measure"] == measure
                          and r["ratio_mean"] is not None and r["ratio_mean"] <= limit and r["top1_mean"] is not None]
            best = max(candidates, key=lambda r: r["top1_mean"], default=None)
            row = {"policy": policy["label"], "value_measure": measure, "policy_ratio": policy["ratio_mean"],
                   "policy_top1": policy["top1_mean"], "policy_top1_std": policy["top1_std"], "budget": None,
                   "budget_ratio": None, "budget_top1": None, "budget_top1_std": None, "difference": None,
                   "within_spread": None}
            if best is not None:
                difference = best["top1_mean"] - policy["top1_mean"]
                spread = max(policy["top1_std"] or 0.0, best["top1_std"] or 0.0)
                row.update(budget=best["label"], budget_ratio=best["ratio_mean"], budget_top1=best["top1_mean"],
                           budget_top1_std=best["top1_std"], difference=difference,
                           within_spread=difference >= 0 or -difference <= spread)
            out.append(row)
    return out


def compare_values(records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The value measures against the first one (``config.values[0]``): per other measure, the mean ± std over
    (seed, budget) pairs of its top-1 minus the first's, and which measure placed better on average (``better``;
    None on a tie). None with a single measure."""
    budget = [r for r in records if r["family"] == BUDGET]
    measures = list(dict.fromkeys(r["value_measure"] for r in budget))
    if len(measures) < 2:
        return None
    by_key = {(r["value_measure"], r["seed"], r["label"]): r["top1"] for r in budget}
    reference, out = measures[0], {"reference": measures[0], "against": {}}
    means = {reference: 0.0}
    for other in measures[1:]:
        diffs = [by_key[(other, s, b)] - top1 for (m, s, b), top1 in by_key.items()
                 if m == reference and (other, s, b) in by_key]
        mean, std = _mean_std(diffs)
        out["against"][other] = {"mean_difference": mean, "std": std, "pairs": len(diffs)}
        means[other] = mean if mean is not None else -math.inf
    best = max(means.values())
    winners = [measure for measure, mean in means.items() if mean == best]
    out["better"] = winners[0] if len(winners) == 1 else None
    return out


def markdown_report(result: ParetoResult, config: ParetoConfig, meta: dict[str, Any]) -> str:
    """``pareto.md``: what ran, where, the table of both families, the comparison at each policy's latency, the
    value measures' rank agreement and head-to-head."""
    summary = summarise(result.records)
    recipe = config.recipe
    lines = [
        "# Pareto front: accuracy against measured latency, Table 9 policies and budgeted placements", "",
        f"{recipe.title(result.data)}; seeds {', '.join(map(str, recipe.seeds))}; budgets start from "
        f"{config.start} and get a brief fine-tuning after folding (1 epoch, lr 0.005, temperature 1).",
        f"Latency: the exported file (onnxruntime, CPU, batch 1, {config.threads} thread(s)) timed beside the static "
        "model's in the same run; the ratio is placed / static.", "",
        *(f"{key}: `{value}`" if key == "command" else f"{key}: {value}"
          for key, value in meta.items() if key in ("machine", "command", "wall time", "load")), "",
        "| family | budget / policy | latency ratio | static ms | top-1 % | dynamic layers | budget met |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        met = "" if row["met"] is None else f"{row['met']}/{row['runs']}"
        lines.append(f"| {_family_label(row['family'], row['value_measure'])} | {row['label']} | "
                     f"{_pm(row['ratio_mean'], row['ratio_std'])} | {_pm(row['static_ms_mean'], None, 3)} | "
                     f"{_pm(row['top1_mean'], row['top1_std'])} | {_pm(row['dynamic_layers_mean'], None, 1)} | {met} |")
    lines += ["", "Mean ± std over seeds.", "", "## At each Table 9 policy's latency", "",
              "The budgeted placement with the best mean top-1 among those no slower than the policy (+2 % noise).", "",
              "| policy | ratio | top-1 % | value measure | best budget no slower | its ratio | its top-1 % | difference | "
              "within the seed spread or better |", "|---|---|---|---|---|---|---|---|---|"]
    for row in compare_at_policies(summary):
        if row["budget"] is None:
            lines.append(f"| {row['policy']} | {row['policy_ratio']:.2f} | {_pm(row['policy_top1'], row['policy_top1_std'])} "
                         f"| {row['value_measure']} | none | | | | |")
            continue
        lines.append(f"| {row['policy']} | {row['policy_ratio']:.2f} | {_pm(row['policy_top1'], row['policy_top1_std'])} | "
                     f"{row['value_measure']} | {row['budget']} | {row['budget_ratio']:.2f} | "
                     f"{_pm(row['budget_top1'], row['budget_top1_std'])} | {row['difference']:+.2f} | "
                     f"{'yes' if row['within_spread'] else 'no'} |")
    lines += ["", "## Value measures", ""]
    for agreement in result.agreement().values():
        lines.append(f"- {agreement.summary()}")
    versus = compare_values(result.records)
    if versus is not None:
        for other, diff in versus["against"].items():
            lines.append(f"- top-1 of budgets placed by {other} minus by {versus['reference']}: "
                         f"{_pm(diff['mean_difference'], diff['std'])} points over {diff['pairs']} (seed, budget) pairs")
        lines.append(f"- better on average: **{versus['better'] or 'neither (a tie)'}**")
    return "\n".join(lines) + "\n"


def plot_pareto(summary: Sequence[dict[str, Any]], title: str = "") -> bytes:
    """A PNG: mean top-1 against the mean measured latency ratio (log scale), error bars one std; the Table 9
    policies as labelled squares, each value measure's budgets as a line."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.6), dpi=120)
    policies = [r for r in summary if r["family"] == POLICY and r["ratio_mean"] is not None]
    if policies:
        ax.errorbar([r["ratio_mean"] for r in policies], [r["top1_mean"] for r in policies],
                    xerr=[r["ratio_std"] or 0 for r in policies], yerr=[r["top1_std"] or 0 for r in policies],
                    fmt="s", color="black", capsize=3, label="Table 9 policies")
        for r in policies:
            ax.annotate(r["label"], (r["ratio_mean"], r["top1_mean"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
    for measure in dict.fromkeys(r["value_measure"] for r in summary if r["family"] == BUDGET):
        rows = sorted((r for r in summary if r["family"] == BUDGET and r["value_measure"] == measure
                       and r["ratio_mean"] is not None), key=lambda r: r["ratio_mean"])
        ax.errorbar([r["ratio_mean"] for r in rows], [r["top1_mean"] for r in rows],
                    xerr=[r["ratio_std"] or 0 for r in rows], yerr=[r["top1_std"] or 0 for r in rows],
                    fmt="o-", capsize=3, label=f"budgets ({measure})")
        for r in rows:
            ax.annotate(r["label"], (r["ratio_mean"], r["top1_mean"]), textcoords="offset points", xytext=(4, -10),
                        fontsize=6)
    ax.set_xscale("log")
    ratios = [r["ratio_mean"] for r in summary if r["ratio_mean"] is not None]
    if ratios:
        low, high = min(ratios), max(ratios)
        ax.set_xticks(_ticks(low, high))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _pos: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("measured latency / static model (onnxruntime CPU, batch 1)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("\n".join(textwrap.wrap(title, 100)), fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _ticks(low: float, high: float, most: int = 8) -> list[float]:
    """Round ratios across ``[low, high]`` (log axis), 1x among them when in range, no two closer than an eighth of
    the range's log span."""
    step = max((high * 1.1) / (low / 1.1), 1.0) ** (1 / most) * 0.999
    candidates = [t for t in _RATIO_TICKS if low / 1.1 <= t <= high * 1.1]
    if not candidates:
        return [low, high]
    anchor = 1 if 1 in candidates else candidates[0]
    ticks = [anchor]
    for tick in candidates:  # upwards from the anchor
        if tick / ticks[-1] >= step:
            ticks.append(tick)
    for tick in reversed(candidates):  # downwards from it
        if ticks[0] / tick >= step:
            ticks.insert(0, tick)
    return ticks


def write_pareto(result: ParetoResult, config: ParetoConfig, out_dir: str | Path, meta: dict[str, Any]) -> dict[str, Path]:
    """Write ``pareto.md``, ``pareto.png`` and ``pareto.json`` into ``out_dir`` (atomically, recorded in its
    manifest); ``meta``: what to record beside the results (command, machine, wall time, load)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(result.records)
    payload = {
        **meta, "settings": config.settings(), "data": result.data, "summary": summary,
        "at_policies": compare_at_policies(summary), "value_measures": compare_values(result.records),
        "rank_agreement": {name: a.to_dict() for name, a in result.agreement().items()},
        "records": result.records, "layers": {str(seed): layers for seed, layers in result.layers.items()},
    }
    text = json.dumps(_finite(payload), indent=1, allow_nan=False).encode("utf-8")
    markdown = markdown_report(result, config, meta).encode("utf-8")
    png = plot_pareto(summary, config.recipe.title(result.data))
    return {
        "json": write_owned(out, FILES["json"], lambda fh: fh.write(text), "json"),
        "markdown": write_owned(out, FILES["markdown"], lambda fh: fh.write(markdown), "text"),
        "plot": write_owned(out, FILES["plot"], lambda fh: fh.write(png), "png"),
    }


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: NaN becomes None, an infinity the string 'inf' / '-inf'."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
