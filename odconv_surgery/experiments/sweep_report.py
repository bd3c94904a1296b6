"""The sweep's outputs: mean ± std per (policy, variant, n) over seeds (``summarise``), the paper's Table 9 in markdown
(``markdown_table``), and the files: results.csv, summary.json, table.md and the plots (``write_outputs``)."""

from __future__ import annotations

import io
import json
import math
import statistics
from pathlib import Path
from typing import Any, Sequence

from ..accounting import format_count
from ..methods import METHOD_POLICY
from .sweep_config import BASELINE
from .sweep_variants import DEFAULT_VARIANT, parse_variant
from .sweep_manifest import write_owned

POLICY_LABELS = {
    "all_but_first": "all conv layers except the first",
    "1x1": "all 1x1 conv layers",
    "3x3": "all 3x3 conv layers",
    "all": "all conv layers",
}


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(records: Sequence[dict[str, Any]], policies: Sequence[str] | None = None,
              variants: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Mean ± std over seeds per (policy, variant, n), with ratios to the baseline; failed runs are counted, not
    averaged. Rows follow the order of ``policies``, then of ``variants``."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec["policy"], rec.get("variant", DEFAULT_VARIANT), rec["kernel_num"]), []).append(rec)
    policy_order, variant_order = list(policies or []), list(variants or [DEFAULT_VARIANT])

    def position(key: tuple[str, str, int]) -> tuple:
        policy, variant, n = key
        return (policy_order.index(policy) if policy in policy_order else len(policy_order), policy,
                variant_order.index(variant) if variant in variant_order else len(variant_order), variant, n)

    rows = []
    for (policy, variant, n), recs in sorted(groups.items(), key=lambda kv: position(kv[0])):
        ok = [r for r in recs if r.get("status") == "ok"]
        row: dict[str, Any] = {"policy": policy, "variant": variant, "kernel_num": n, "runs": len(ok),
                               "failed": len(recs) - len(ok)}
        for metric in ("top1", "top5", "top1_static", "top1_converted", "latency_ms", "train_seconds"):
            row[f"{metric}_mean"], row[f"{metric}_std"] = _mean_std([r.get(metric) for r in ok])
        for metric in ("params", "madds", "extra_madds", "converted_layers"):
            row[metric] = ok[0].get(metric) if ok else None
        backends = sorted({str(r.get("latency_backend")) for r in ok})
        row["latency_backend"] = ", ".join(backends) if backends else None
        row["errors"] = sorted({r.get("error", "") for r in recs if r.get("status") != "ok"})
        rows.append(row)
    base = next((r for r in rows if r["policy"] == BASELINE and r["runs"]), None)
    base_top1 = {r.get("seed"): r.get("top1") for r in records
                 if r["policy"] == BASELINE and r.get("status") == "ok" and r.get("top1") is not None}
    for row in rows:
        row["latency_ratio"] = (
            row["latency_ms_mean"] / base["latency_ms_mean"]
            if base and base.get("latency_ms_mean") and row.get("latency_ms_mean") else None
        )
        row["top1_gain"] = row["top1_mean"] - base["top1_mean"] if base and row["top1_mean"] is not None else None
        row["top1_gain_std"], row["paired_seeds"] = None, 0
        paired = [r["top1"] - base_top1[r.get("seed")] for r in groups[row["policy"], row["variant"], row["kernel_num"]]
                  if r.get("status") == "ok" and r.get("top1") is not None and r.get("seed") in base_top1]
        if row["policy"] != BASELINE and len(paired) > 1:  # each seed against its own baseline: the pretraining's spread cancels
            row["top1_gain"], row["top1_gain_std"] = _mean_std(paired)
            row["paired_seeds"] = len(paired)
    return rows


def _gain(row: dict[str, Any]) -> str:
    """The top-1 change against the baseline: ``+0.30`` (difference of means), ``+0.30 ± 0.41`` (mean ± std over
    seeds of each seed's change against its own baseline), '-' when there is none."""
    if row.get("top1_gain") is None or row["policy"] == BASELINE:
        return "-"
    std = row.get("top1_gain_std")
    return f"{row['top1_gain']:+.2f}" + (f" ± {std:.2f}" if std is not None else "")


def _label(policy: str, n: int, variant: str = DEFAULT_VARIANT) -> str:
    if policy == BASELINE:
        return "baseline"
    if policy.startswith("last:"):
        where = f"last {policy.split(':', 1)[1]} blocks"
    elif policy == METHOD_POLICY:
        where = "its paper's layers"
    else:
        where = POLICY_LABELS.get(policy, policy)
    return f"+ {parse_variant(variant).label(n)} to {where}"


def row_label(row: dict[str, Any]) -> str:
    """A summary row's label: ``+ DyConv (4x) to its paper's layers``, ``+ ODConv (1x) to all 1x1 conv layers``."""
    return _label(row["policy"], row["kernel_num"], row.get("variant", DEFAULT_VARIANT))


def _pm(mean: float | None, std: float | None, digits: int = 2) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std else f"{mean:.{digits}f}"


def markdown_table(summary: Sequence[dict[str, Any]], title: str = "") -> str:
    """Table 9's shape: params, MAdds, top-1, top-5, CPU latency and its ratio to the baseline; from-trained
    sweeps add the top-1 right after conversion (before fine-tuning)."""
    at_conversion = any(row.get("top1_converted_mean") is not None for row in summary)
    lines = [f"### {title}", ""] if title else []
    extra_head, extra_rule = (" Top-1 at conversion (%) |", "---:|") if at_conversion else ("", "")
    lines += [
        f"| Model | Params | MAdds |{extra_head} Top-1 (%) | Top-5 (%) | CPU latency (ms, batch 1) | Latency ratio | runs |",
        f"|---|---:|---:|{extra_rule}---:|---:|---:|---:|---:|",
    ]
    for row in summary:
        top1 = _pm(row["top1_mean"], row["top1_std"])
        if row.get("top1_gain") is not None and row["policy"] != BASELINE:
            top1 += f" ({_gain(row)})"
        extra = f" {_pm(row.get('top1_converted_mean'), row.get('top1_converted_std'))} |" if at_conversion else ""
        lines.append(
            "| {label} | {params} | {madds} |{extra} {top1} | {top5} | {lat} | {ratio} | {runs}{failed} |".format(
                label=row_label(row),
                params=format_count(row["params"]) if row["params"] is not None else "-",
                madds=format_count(row["madds"]) if row["madds"] is not None else "-",
                extra=extra,
                top1=top1,
                top5=_pm(row["top5_mean"], row["top5_std"]),
                lat=_pm(row["latency_ms_mean"], row["latency_ms_std"], 3),
                ratio=f"{row['latency_ratio']:.2f}x" if row.get("latency_ratio") else "-",
                runs=row["runs"],
                failed=f" ({row['failed']} failed)" if row["failed"] else "",
            )
        )
    backends = sorted({row["latency_backend"] for row in summary if row.get("latency_backend")})
    if backends:
        lines += ["", f"Latency backend: {'; '.join(backends)}. Mean ± std over seeds."]
    if any(row.get("paired_seeds") for row in summary):
        lines += ["", PAIRED_NOTE]
    errors = [(row, e) for row in summary for e in row["errors"]]
    if errors:
        lines += ["", "Failed configurations:"] + [f"- {row_label(r)}: {e}" for r, e in errors]
    return "\n".join(lines)


#: How the top-1 change reads once several seeds pair a configuration with its own baseline.
PAIRED_NOTE = ("Top-1 change: mean ± std over seeds of each seed's top-1 minus the baseline's of the same seed (both "
               "start from that seed's static model, so the spread between pretrained models cancels).")

ATTENTION_SYMBOLS = {"spatial": "α_s", "channel": "α_c", "filter": "α_f", "kernel": "α_w"}


def attention_table(summary: Sequence[dict[str, Any]], title: str = "") -> str | None:
    """Table 7's shape (which attentions: params, MAdds, top-1, top-5, mean ± std over seeds) when the sweep's
    variants differ in their attentions; None otherwise. The kernel attention counts only with n > 1."""
    rows = []
    for row in summary:
        if row["policy"] == BASELINE:
            rows.append((row, None))
            continue
        options = parse_variant(row.get("variant", DEFAULT_VARIANT)).options(row["kernel_num"], 1 / 16, "bn")
        used = {name for name in options.attentions if name != "kernel" or options.kernel_num > 1}
        rows.append((row, used))
    if len({frozenset(used) for _, used in rows if used is not None}) < 2:
        return None
    lines = [f"### {title}", ""] if title else []
    lines += ["| Model | " + " | ".join(ATTENTION_SYMBOLS.values())
              + " | Params | MAdds | Top-1 (%) | Top-1 change | Top-5 (%) | runs |",
              "|---|" + ":-:|" * len(ATTENTION_SYMBOLS) + "---:|---:|---:|---:|---:|---:|"]
    for row, used in rows:
        marks = ["-"] * len(ATTENTION_SYMBOLS) if used is None else ["✓" if a in used else "-" for a in ATTENTION_SYMBOLS]
        lines.append(f"| {row_label(row)} | {' | '.join(marks)} | "
                     f"{format_count(row['params']) if row['params'] is not None else '-'} | "
                     f"{format_count(row['madds']) if row['madds'] is not None else '-'} | "
                     f"{_pm(row['top1_mean'], row['top1_std'])} | {_gain(row)} | {_pm(row['top5_mean'], row['top5_std'])} | "
                     f"{row['runs']} |")
    if any(row.get("paired_seeds") for row, _ in rows):
        lines += ["", PAIRED_NOTE]
    return "\n".join(lines)


def write_outputs(records: Sequence[dict[str, Any]], summary: Sequence[dict[str, Any]], out: Path, *,
                  settings: dict[str, Any], title: str) -> dict[str, Path]:
    """results.csv (per run), summary.json (``settings`` and the summary), table.md (headed ``title``) and the PNG
    plots, each through the careful writer into a file the sweep owns (``sweep_manifest``)."""
    import csv

    files: dict[str, Path] = {}
    columns = ["key", "policy", "variant", "kernel_num", "seed", "status", "top1", "top5", "top1_static", "top1_converted", "params", "madds", "extra_madds",
               "latency_ms", "latency_backend", "train_seconds", "seconds", "error"]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for rec in sorted(records, key=lambda r: r["key"]):
        writer.writerow({c: rec.get(c, DEFAULT_VARIANT if c == "variant" else None) for c in columns})
    csv_bytes = text.getvalue().encode("utf-8")
    files["csv"] = write_owned(out, "results.csv", lambda fh: fh.write(csv_bytes), "text")
    summary_bytes = json.dumps({"settings": settings, "summary": list(summary)}, indent=2, default=str).encode("utf-8")
    files["json"] = write_owned(out, "summary.json", lambda fh: fh.write(summary_bytes), "json")
    table_bytes = (markdown_table(summary, title) + "\n").encode("utf-8")
    files["table"] = write_owned(out, "table.md", lambda fh: fh.write(table_bytes), "text")
    attentions = attention_table(summary, title)
    if attentions is not None:
        attention_bytes = (attentions + "\n").encode("utf-8")
        files["attention_table"] = write_owned(out, "table_attentions.md", lambda fh: fh.write(attention_bytes), "text")
    if any(row["runs"] for row in summary):
        from .plots import plot_sweep

        files.update(plot_sweep(summary, out))
    return files
