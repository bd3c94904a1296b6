"""The ONNX benchmark's case list and tables (``bench_onnx.py``): the paper's cases, and one summary line per case
that puts the static model's time beside every variant's ratio and the paper's CPU ratio."""

from __future__ import annotations

from typing import Iterable, Sequence

from odconv_surgery.deploy.benchmark import VARIANTS, Case, Row, render_markdown, run_case
from odconv_surgery.methods import METHOD_POLICY, METHODS
from odconv_surgery.policies import PAPER_POLICIES

from .paper import MODELS, TABLE8_MODELS, paper_cpu_ratio, static_model


def default_cases(
    models: Sequence[str] = MODELS, kernel_nums: Sequence[int] = (1, 4), policy_model: str = "mobilenet_v2_0.5",
    policies: Sequence[str] = PAPER_POLICIES, methods: Sequence[str] = ("condconv", "dyconv"),
) -> list[Case]:
    """all_but_first for every model and kernel number, then ``policies`` (n = 1) on ``policy_model``, then Table 8's
    other ``methods`` (their own placement and kernel number) on the Table 8 models among ``models``."""
    cases = [Case(m, "all_but_first", n) for m in models for n in kernel_nums]
    cases += [Case(policy_model, p, 1) for p in policies if p != "all_but_first"]
    cases += [method_case(m, method) for m in models if m in TABLE8_MODELS for method in methods]
    return cases


def method_case(model: str, method: str) -> Case:
    """A case converting ``model`` with ``method``'s own placement and kernel number."""
    return Case(model, METHOD_POLICY, METHODS[method].kernel_num or 1, method)


def run_benchmark(cases: Iterable[Case], *, progress=print, **kwargs) -> list[Row]:
    """Every case's rows (``run_case``), its model built from its name (``paper.static_model``)."""
    rows: list[Row] = []
    for case in cases:
        if progress:
            progress(f"# {case.model} method={case.method} policy={case.policy} n={case.kernel_num}")
        rows += run_case(case, static=static_model(case.model), **kwargs)
        if progress:
            progress(render_markdown([r for r in rows if (r.model, r.method, r.policy, r.kernel_num)
                                      == (case.model, case.method, case.policy, case.kernel_num)]))
    return rows


def render_summary(rows: Sequence[Row]) -> str:
    """One line per case and regime: the static model's ms beside every variant's ratio to it (same run) and the
    paper's CPU ratio (batch-1 regimes only, where the paper has one)."""
    extra = sorted({r.variant for r in rows} - set(VARIANTS))
    columns = ["fused_ortcpu", "fused", "naive", *extra]
    titles = ["fused ort-cpu", "fused portable", "naive", *extra]
    head = (f"| model | policy | n | regime | static ms | {' | '.join(titles)} | paper CPU |\n"
            f"|---|---|---|---|---:|{'---:|' * len(columns)}---:|")
    lines = [head]
    groups: dict[tuple, dict[str, Row]] = {}
    for r in rows:
        groups.setdefault((r.model, r.method, r.policy, r.kernel_num, r.regime), {})[r.variant] = r
    for (model, method, policy, n, regime), by_variant in groups.items():
        paper = paper_cpu_ratio(model, policy, n, method) if regime.startswith("cpu-b1") else None
        policy = policy if method == "odconv" else f"{method} ({policy})"
        cells = [f"{by_variant[v].ratio_to_static:.2f}x" if v in by_variant else "" for v in columns]
        lines.append(f"| {model} | {policy} | {n} | {regime} | {by_variant['static'].ms:.2f} | {' | '.join(cells)} | "
                     f"{f'{paper:.2f}' if paper else '-'} |")
    return "\n".join(lines)


def write_markdown(path: str | os.PathLike, title: str, command: str, *sections: str) -> None:
    """A benchmark's markdown file: the title, the machine (CPU model, ISA, NCHWc block, onnxruntime version), the
    command that made it, then ``sections`` (load, tables)."""
    from odconv_surgery.deploy.machine import describe_cpu

    body = "\n\n".join([f"# {title}", f"Machine: {describe_cpu()}", f"Command: `{command}`", *sections])
    with open(path, "w") as fh:
        fh.write(body + "\n")
