"""GPU eager (or compiled) speed of ODConv models vs the static torchvision model (issue #11's table).

Per model: the static model, our converted model (``apply_odconv``) and the official code's formulation
(``reference_odconv``: one per-sample kernel and a batch-folded grouped conv in every layer, on the same
parameters); inference at batch 200 (eval, no_grad) and a training step at batch 64 (forward, backward, SGD), at
224 px, in fp32 and under bf16 autocast. CUDA-event timing, warmup, medians of --repeats runs; every row carries
the static model's absolute time from the same run and the ratio to it. Writes NAME.md and NAME.json (NAME
``eager`` or ``compile``) to --out, rewritten after every row so an interrupted run keeps what it measured.

    PYTHONPATH=. python benchmarks/bench_gpu.py                 # the full table (needs CUDA)
    PYTHONPATH=. python benchmarks/bench_gpu.py --quick         # fewer repeats (the device script's setting)
    PYTHONPATH=. python benchmarks/bench_gpu.py --compile --models resnet50 mobilenet_v2_1.0 --kernel-nums 1
    PYTHONPATH=. python benchmarks/bench_gpu.py --device cpu --smoke --out /tmp/x   # CI's check that it runs

Exit status: 0 when every row ran, 1 when some row failed (its error is in the table), 2 without CUDA or on a busy
machine (``benchmarks/lab/machine_load.py``; --allow-busy times anyway).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from lab.machine_load import BusyMachineError, load_average, require_quiet
from lab.reference_odconv import use_reference_formulation
from lab.timing import Timing, measure, release
from odconv_surgery import apply_odconv
from odconv_surgery.experiments.model_spec import build_model
from odconv_surgery.methods import DEFAULT_METHOD, METHOD_POLICY, METHODS
from odconv_surgery.policies import PAPER_POLICIES

ROOT = Path(__file__).resolve().parents[1]
SPECS = {
    "resnet18": "torchvision:resnet18",
    "resnet50": "torchvision:resnet50",
    "mobilenet_v2_1.0": "torchvision:mobilenet_v2",
    "mobilenet_v2_0.5": "torchvision:mobilenet_v2?width_mult=0.5",
}
POLICY_MODEL = "mobilenet_v2_0.5"  # the paper's Table 9 runs every placement policy on it, n = 1
DTYPES = {"fp32": None, "bf16": torch.bfloat16}
MODES = ("inference", "train")
# GPU ratios the paper reports (Tables 8, 9, 17), as quoted in issue #11: (model, method, n, policy) -> (inference, train).
PAPER_RATIOS = {
    ("resnet50", "odconv", 1, "all_but_first"): (2.22, 2.37),
    ("resnet50", "odconv", 4, "all_but_first"): (4.27, None),
    ("mobilenet_v2_1.0", "odconv", 1, "all_but_first"): (1.41, 2.66),
    ("mobilenet_v2_1.0", "odconv", 4, "all_but_first"): (2.39, None),
    ("mobilenet_v2_0.5", "odconv", 1, "all_but_first"): (1.55, None),
    ("mobilenet_v2_0.5", "odconv", 1, "1x1"): (1.36, None),
    ("mobilenet_v2_0.5", "odconv", 1, "3x3"): (1.38, None),
    ("mobilenet_v2_0.5", "odconv", 1, "last:6"): (1.51, None),
    # Table 8's other methods (GPU FPS ratios), each with its own placement and kernel number
    ("resnet50", "condconv", 8, "default"): (652.2 / 425.1, None),
    ("resnet50", "dyconv", 4, "default"): (652.2 / 326.6, None),
    ("mobilenet_v2_1.0", "condconv", 8, "default"): (1452.3 / 1076.9, None),
    ("mobilenet_v2_1.0", "dyconv", 4, "default"): (1452.3 / 918.2, None),
}
TABLE8_MODELS = ("resnet50", "mobilenet_v2_1.0")


@dataclass
class Measurement:
    """One (mode, dtype) timing of a variant, with the static model's from the same run."""

    static_ms: float | None = None
    ms: float | None = None
    ratio: float | None = None
    static_peak_gib: float | None = None
    peak_gib: float | None = None
    compile_s: float | None = None
    error: str | None = None


@dataclass
class Row:
    model: str
    formulation: str
    kernel_num: int
    policy: str
    dtype: str
    compiled: bool
    inference: Measurement = field(default_factory=Measurement)
    train: Measurement = field(default_factory=Measurement)
    rel_diff_vs_ours: float | None = None  # official rows: logits vs ours on one small fp32 batch
    method: str = DEFAULT_METHOD


def cases_for(model: str, kernel_nums: list[int], methods: list[str]) -> list[tuple[str, str, int]]:
    """(method, policy, n) cases: ODConv under all_but_first for each n; on mobilenet_v2 0.5 every Table 9 policy at
    n = 1; on Table 8's models also its other methods, each with its own placement and kernel number."""
    if model == POLICY_MODEL:
        return [(DEFAULT_METHOD, p, 1) for p in PAPER_POLICIES]
    cases = [(DEFAULT_METHOD, "all_but_first", n) for n in kernel_nums]
    if model in TABLE8_MODELS:
        cases += [(m, METHOD_POLICY, METHODS[m].kernel_num) for m in methods]
    return cases


def convert(static: nn.Module, method: str, policy: str, kernel_num: int, official: bool) -> dict[str, nn.Module]:
    """Our conversion of a copy of the CPU ``static`` model and, if asked, a copy of it in the official
    formulation (ODConv's only): the same parameters, so their outputs must agree."""
    ours, _ = apply_odconv(static, policy, method=method, kernel_num=kernel_num, init="scratch")
    if not official or method != DEFAULT_METHOD:  # the official formulation is ODConv's
        return {"ours": ours}
    reference = copy.deepcopy(ours)
    use_reference_formulation(reference)
    return {"ours": ours, "official": reference}


def official_diff(ours: nn.Module, official: nn.Module, args, device: torch.device) -> float:
    """Largest |logit difference| of the official formulation vs ours on a batch of 4 (fp32, eval), relative to
    the largest |logit|: the two compute one function, so this is rounding (TF32 convs on a GPU)."""
    x = torch.randn(4, 3, args.size, args.size, device=device)
    with torch.no_grad():
        expected = ours.eval()(x)
        return ((official.eval()(x) - expected).abs().max() / expected.abs().max()).item()


def describe_error(exc: BaseException) -> str:
    kind = "out of memory" if isinstance(exc, torch.cuda.OutOfMemoryError) else type(exc).__name__
    return f"{kind}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


def run(args, device: torch.device, write) -> list[Row]:
    rows: list[Row] = []
    timing = Timing(args.size, args.infer_batch, args.train_batch, args.repeats, args.warmup,
                    args.compile_backend if args.compile else None)
    for model_name in args.models:
        static = build_model(SPECS[model_name]).eval()
        static_dev = copy.deepcopy(static).to(device)
        static_times: dict[tuple[str, str], Measurement] = {}
        for dtype_name in args.dtypes:
            row = Row(model_name, "static", 0, "—", dtype_name, args.compile)
            for mode in args.modes:
                m = getattr(row, mode)
                try:
                    m.static_ms, m.static_peak_gib, m.compile_s = measure(static_dev, mode, timing, device, DTYPES[dtype_name])
                except Exception as exc:  # noqa: BLE001 - recorded in the table, the run goes on
                    m.error = "static " + describe_error(exc)
                static_times[dtype_name, mode] = m
            rows.append(row)
        write(rows)
        del static_dev
        for method, policy, kernel_num in cases_for(model_name, args.kernel_nums, args.methods):
            try:
                models = {f: m.to(device) for f, m in
                          convert(static, method, policy, kernel_num, args.official and not args.compile).items()}
                diff = official_diff(models["ours"], models["official"], args, device) if "official" in models else None
            except Exception as exc:  # noqa: BLE001 - recorded in the table, the run goes on
                error = Measurement(error="conversion " + describe_error(exc))
                rows += [Row(model_name, "ours", kernel_num, policy, d, args.compile, error, error, method=method)
                         for d in args.dtypes]
                write(rows)
                release(device)
                continue
            for formulation, model in models.items():
                for dtype_name in args.dtypes:
                    row = Row(model_name, formulation, kernel_num, policy, dtype_name, args.compile,
                              rel_diff_vs_ours=diff if formulation == "official" else None, method=method)
                    for mode in args.modes:
                        m, static_m = getattr(row, mode), static_times[dtype_name, mode]
                        m.static_ms, m.static_peak_gib = static_m.static_ms, static_m.static_peak_gib
                        try:
                            m.ms, m.peak_gib, m.compile_s = measure(model, mode, timing, device, DTYPES[dtype_name])
                            m.ratio = m.ms / m.static_ms if m.static_ms else None
                        except Exception as exc:  # noqa: BLE001 - recorded in the table, the run goes on
                            m.error = describe_error(exc)
                    rows.append(row)
                    write(rows)
            del models
            release(device)
    return rows


def environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    try:
        env["commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                       text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["commit"] = None
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cudnn=torch.backends.cudnn.version(),
                   cudnn_benchmark=torch.backends.cudnn.benchmark, cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                   matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    else:
        env["threads"] = torch.get_num_threads()
    return env


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "—" if value is None else format(value, spec)


def _cell(m: Measurement, static: bool) -> str:
    if m.error:
        return f"error: {m.error}"
    if static:
        return f"{_fmt(m.static_ms, '.1f')} ms"
    return f"{_fmt(m.ratio)} ({_fmt(m.ms, '.1f')} ms)"


def _paper(row: Row, modes: list[str]) -> str:
    ratios = PAPER_RATIOS.get((row.model, row.method, row.kernel_num, row.policy))
    if row.formulation != "ours" or ratios is None:
        return ""
    return " / ".join(_fmt(ratios[MODES.index(mode)]) for mode in modes)


def _vs_official(row: Row, official: Row | None, modes: list[str]) -> str:
    """ours / official time per mode (below 1: ours is faster)."""
    if row.formulation != "ours" or official is None:
        return ""
    cells = []
    for mode in modes:
        a, b = getattr(row, mode).ms, getattr(official, mode).ms
        cells.append(_fmt(a / b if a and b else None))
    return " / ".join(cells)


def render_markdown(rows: list[Row], args, env: dict) -> str:
    modes = list(args.modes)
    title = f"compiled (torch.compile, {args.compile_backend})" if args.compile else "eager"
    lines = [
        f"# ODConv GPU speed, {title}",
        "",
        f"{env.get('gpu', env['device'])}, torch {env['torch']}, cuDNN {env.get('cudnn', '—')} "
        f"(benchmark={env.get('cudnn_benchmark', '—')}, conv TF32={env.get('cudnn_allow_tf32', '—')}), "
        f"commit {env.get('commit') or '—'}, {env['date']}. {args.size} px; inference batch {args.infer_batch} "
        f"(eval, no_grad), training step batch {args.train_batch} (forward, backward, SGD); medians of "
        f"{args.repeats} timed runs after {args.warmup} warmup. Ratio = variant / static model in the same run; "
        "static rows give the static model's absolute time; peak = max GPU memory allocated during the measurement.",
        "",
        "| model | method | variant | n | policy | dtype | " + " | ".join(f"{m} ratio (ms)" for m in modes)
        + " | peak GiB (" + " / ".join(modes) + ") | ours / official (" + " / ".join(modes) + ") | paper ratio (" + " / ".join(modes) + ") |",
        "|---|---|---|---|---|---|" + "---|" * len(modes) + "---|---|---|",
    ]
    key = lambda r: (r.model, r.method, r.kernel_num, r.policy, r.dtype)  # noqa: E731
    officials = {key(r): r for r in rows if r.formulation == "official"}
    for row in rows:
        static = row.formulation == "static"
        ms = [getattr(row, m) for m in modes]
        peaks = " / ".join(_fmt(m.static_peak_gib if static else m.peak_gib, ".1f") for m in ms)
        n = "—" if static else str(row.kernel_num)
        method = "—" if static else METHODS[row.method].title
        lines.append(f"| {row.model} | {method} | {row.formulation} | {n} | {row.policy} | {row.dtype} | "
                     + " | ".join(_cell(m, static) for m in ms) + f" | {peaks} | {_vs_official(row, officials.get(key(row)), modes)} | {_paper(row, modes)} |")
    diffs = [r.rel_diff_vs_ours for r in rows if r.rel_diff_vs_ours is not None]
    if diffs:
        lines += ["", f"Official formulation vs ours on a batch of 4 (fp32): largest |logit difference| "
                  f"{max(diffs):.1e} of the largest |logit|."]
    compile_s = [m.compile_s for r in rows for m in (r.inference, r.train) if m.compile_s is not None]
    if compile_s:
        lines += ["", f"First (compiling) call: {min(compile_s):.0f}–{max(compile_s):.0f} s."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(SPECS), choices=list(SPECS))
    p.add_argument("--kernel-nums", nargs="+", type=int, default=[1, 4], help=f"n for every model but {POLICY_MODEL}")
    p.add_argument("--methods", nargs="*", default=["condconv", "dyconv"], choices=["condconv", "dyconv"],
                   help=f"Table 8's other methods, on {' and '.join(TABLE8_MODELS)} (none: skip)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    p.add_argument("--no-official", dest="official", action="store_false", help="skip the official formulation")
    p.add_argument("--compile", action="store_true", help="torch.compile static and ours (the official formulation is skipped)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend with --compile")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--infer-batch", type=int, default=200)
    p.add_argument("--train-batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="5 timed runs after 2 warmup (the device script's setting)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--smoke", action="store_true",
                   help="tiny configuration (resnet18 n=1, 32 px, batch 2, 1 run) that checks the script runs; the only CPU use")
    p.add_argument("--allow-busy", action="store_true", help="time even when the load average says the machine is busy")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "gpu_results"), help="folder for NAME.md and NAME.json")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 5, 2
    if args.smoke:
        args.models, args.kernel_nums, args.size = ["resnet18"], [1], 32
        args.infer_batch = args.train_batch = 2
        args.repeats, args.warmup = 1, 0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cpu" and not args.smoke:
        print("bench_gpu.py: --device cpu only runs the --smoke configuration; CPU timings are "
              "benchmarks/bench_eager.py's job", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu.py: no CUDA device (torch.cuda.is_available() is False). Run it on a GPU machine "
              "(see README, 'GPU checks'), or check that it runs with --device cpu --smoke", file=sys.stderr)
        return 2
    try:  # --smoke only checks that the script runs: its timings mean nothing anyway
        load_start = None if args.smoke else require_quiet(args.allow_busy)
    except BusyMachineError as err:
        print(f"bench_gpu.py: {err}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    torch.manual_seed(0)
    env = environment(device)
    env["load_start"] = load_start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "compile" if args.compile else "eager"

    def write(rows: list[Row]) -> None:
        (out / f"{name}.json").write_text(json.dumps(
            {"environment": env, "settings": vars(args), "paper_ratios": {"|".join(map(str, k)): v for k, v in PAPER_RATIOS.items()},
             "rows": [asdict(r) for r in rows]}, indent=1))
        (out / f"{name}.md").write_text(render_markdown(rows, args, env))

    rows = run(args, device, write)
    env["load_end"] = load_average()
    write(rows)
    print((out / f"{name}.md").read_text())
    failed = [r for r in rows if r.inference.error or r.train.error]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
