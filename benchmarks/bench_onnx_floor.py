"""How low can an ODConv model go in onnxruntime with standard ops? Floors measured beside the ODConv export.

Every ODConv layer must pool its input and run its attention (trunk + heads) before its conv can run. This times,
in the same interleaved rounds (CPU, one thread, batch 1):

* ``static``: the static model (the denominator of every ratio),
* ``+pool``: the static model plus one GlobalAveragePool of each converted layer's input (collected into an
  extra output so nothing is pruned): about the floor of any graph that pools each layer's input with its own node,
* ``+attention``: the static model plus each layer's whole attention branch (pool, fc + ReLU, all heads in one
  Gemm + Sigmoid), computed but not applied: about the floor of any graph that computes the attentions with
  standard nodes (the attention BatchNorm folded, as our export does),
* ``odconv``: our default export of the converted model (``target="auto"``).

The floors are approximate: onnxruntime lays the floor models out with its own NCHWc transformer (a reorder
behind every pooled tensor), while our export chains its NCHWc layers itself, so ``odconv`` can read slightly
below ``+attention``. ``odconv - +attention`` is about what applying the attentions costs; ``+pool`` against the
paper's ratio says whether a standard-op graph can reach it at all on this runtime.

    python benchmarks/bench_onnx_floor.py                          # Table 9 rows on mobilenet_v2 0.5, + 1.0, resnets
    python benchmarks/bench_onnx_floor.py --cases mobilenet_v2_0.5:1x1 --md out.md

Run it alone on the machine: it refuses to start above a load of 0.5 per core (``--allow-busy`` overrides).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys

import torch
from torch import nn

from lab.bench_cli import add_timing_args, loads_line, quiet_start
from lab.onnx_tables import write_markdown
from lab.paper import paper_cpu_ratio, static_model
from odconv_surgery.deploy.benchmark import ratios_to, time_variant_rounds
from odconv_surgery.deploy.export import export_onnx
from odconv_surgery.nn import ODConv2d
from odconv_surgery.surgery import apply_odconv

DEFAULT_CASES = (
    "mobilenet_v2_0.5:all_but_first", "mobilenet_v2_0.5:1x1", "mobilenet_v2_0.5:3x3", "mobilenet_v2_0.5:last:6",
    "mobilenet_v2_1.0:all_but_first", "resnet18:all_but_first", "resnet50:all_but_first",
)
REGIME = ("cpu-b1-t1", "cpu", 1, 1)


def attention_branch(layer: ODConv2d) -> nn.Sequential:
    """The layer's attention as the fewest standard ops: pool, fc + ReLU, one Gemm for every head, Sigmoid."""
    att = layer.attention
    heads = [fc for fc in (att.channel_fc, att.filter_fc, att.spatial_fc, att.kernel_fc) if fc is not None]
    width = sum(fc.out_channels for fc in heads)
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
        nn.Linear(layer.in_channels, att.hidden_channels), nn.ReLU(),
        nn.Linear(att.hidden_channels, width), nn.Sigmoid(),
    )


class WithSideBranches(nn.Module):
    """``model`` plus a branch on the input of each named conv; the branches' outputs form a second output."""

    def __init__(self, model: nn.Module, branches: dict[str, nn.Module]) -> None:
        super().__init__()
        self.model = model
        self.branches = nn.ModuleList(branches.values())
        self._collected: list[torch.Tensor] = []
        for branch, name in zip(self.branches, branches):
            model.get_submodule(name).register_forward_pre_hook(self._hook(branch))

    def _hook(self, branch: nn.Module):
        def collect(_module, args):
            self._collected.append(branch(args[0]).flatten(1))
        return collect

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._collected = []
        y = self.model(x)
        side, self._collected = torch.cat(self._collected, 1), []
        return y, side


def floor_models(static: nn.Module, converted: nn.Module) -> dict[str, nn.Module]:
    layers = {name: m for name, m in converted.named_modules() if isinstance(m, ODConv2d)}
    if not layers:
        raise ValueError("the converted model holds no ODConv2d layer: nothing to bound")
    return {
        "+pool": WithSideBranches(copy.deepcopy(static), {n: nn.AdaptiveAvgPool2d(1) for n in layers}).eval(),
        "+attention": WithSideBranches(copy.deepcopy(static), {n: attention_branch(m) for n, m in layers.items()}).eval(),
    }


def run_case(model_name: str, policy: str, *, input_size: int, repeats: int, rounds: int) -> dict[str, float]:
    """The static model's median ms (``static_ms``) and every variant's median per-round ratio to it."""
    static = static_model(model_name)
    converted, _ = apply_odconv(static, policy=policy, kernel_num=1)
    converted.eval()
    x = torch.randn(1, 3, input_size, input_size)
    protos = {"static": export_onnx(static, None, x, check=False)}
    protos.update({k: export_onnx(m, None, x, check=False) for k, m in floor_models(static, converted).items()})
    protos["odconv"] = export_onnx(converted, None, x, check=False)
    per_round = time_variant_rounds(protos, REGIME, repeats, rounds)
    return {"static_ms": statistics.median(per_round["static"]) * 1e3, **ratios_to(per_round)}


def render(results: dict[str, dict[str, float]]) -> str:
    lines = [
        "| model | policy | static ms | +pool | +attention | odconv (default export) | applying (odconv - +attention) | paper CPU |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case, r in results.items():
        model_name, policy = case.split(":", 1)
        paper = paper_cpu_ratio(model_name, policy, 1)
        lines.append(
            f"| {model_name} | {policy} | {r['static_ms']:.2f} | {r['+pool']:.2f}x | {r['+attention']:.2f}x | "
            f"{r['odconv']:.2f}x | {r['odconv'] - r['+attention']:+.2f} | {'-' if paper is None else f'{paper:.2f}'} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), help="model:policy pairs (n = 1)")
    p.add_argument("--input-size", type=int, default=224)
    add_timing_args(p, repeats=20, rounds=5)
    args = p.parse_args(argv)
    for case in args.cases:
        if ":" not in case:
            p.error(f"case {case!r} is not model:policy, e.g. mobilenet_v2_0.5:1x1")
    go_on, load_start = quiet_start(args)
    if not go_on:
        return 2
    results = {}
    for case in args.cases:
        model_name, policy = case.split(":", 1)
        results[case] = run_case(model_name, policy, input_size=args.input_size, repeats=args.repeats, rounds=args.rounds)
        print(case, {k: round(v, 3) for k, v in results[case].items()}, flush=True)
    loads = loads_line(load_start)
    table = render(results)
    print(f"\n{loads}\n\n{table}")
    if args.md:
        command = f"python benchmarks/bench_onnx_floor.py {' '.join(argv if argv is not None else sys.argv[1:])}"
        write_markdown(args.md, f"Floors of an ODConv model in onnxruntime (CPU, 1 thread, batch 1, {args.input_size} px)",
                       command, loads, "Ratios: the median over rounds of each variant's time over the static model's in the same round.", table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
