"""The Pareto front of issue #19: accuracy against measured latency, the paper's Table 9 placements beside budgeted
placements (``place_under_budget``) of the same trained models, per seed (``odconv_surgery.experiments.pareto``).

Per seed: the static model is trained (cached in OUT/pretrained), every Table 9 policy and the baseline convert
and fine-tune it (the sweep's recipe) and are timed beside it; the all_but_first model then goes through
``place_under_budget`` at every budget and at each policy's measured ratio ('at POLICY'), with every value measure
asked for (dynamism, the fold drops). Writes
OUT/pareto.md (table), OUT/pareto.png (plot), OUT/pareto.json (raw results, command, machine, wall time, the
rank correlation of dynamism with the fold drops), rewritten after each seed.

    python benchmarks/pareto_budget.py --data textures                       # 3 seeds, the six budgets
    python benchmarks/pareto_budget.py --quick --out /tmp/pareto_quick        # smoke: 1 seed, 2 budgets, few steps

It times: run it alone on the machine. It refuses to start above a load of 0.5 per core (``--allow-busy``).
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import time
from pathlib import Path

from lab.machine_load import BusyMachineError, describe_load, load_average, require_quiet
from odconv_surgery.deploy.machine import describe_cpu
from odconv_surgery.errors import ODConvError
from odconv_surgery.experiments.dir_lock import DirectoryLock
from odconv_surgery.experiments.pareto import DEFAULT_BUDGETS, DEFAULT_VALUES, VALUE_CHOICES, ParetoConfig, run_pareto
from odconv_surgery.experiments.pareto_report import write_pareto
from odconv_surgery.experiments.sweep_config import SweepConfig

QUICK = {"seeds": 1, "budgets": ("1.2x", "unlimited"), "pretrain_epochs": 1, "epochs": 1, "max_steps": 2,
         "limit": 160, "calibration_batches": 2, "drop_samples": 64, "policies": ("baseline", "all_but_first", "1x1")}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits", help="data set: 'digits', 'textures[?ARGS]' or an ImageFolder root "
                                                    "(default %(default)s)")
    p.add_argument("--model", default=SweepConfig.model, help="model spec (default %(default)s)")
    p.add_argument("--image-size", type=int, default=None, help="input size (default: the data's)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..S-1 (default %(default)s)")
    p.add_argument("--pretrain-epochs", type=int, default=SweepConfig.pretrain_epochs,
                   help="static model's training epochs per seed (default %(default)s)")
    p.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs of every policy (default: the sweep's, 3)")
    p.add_argument("--budgets", nargs="+", default=list(DEFAULT_BUDGETS), help="budgets (default %(default)s)")
    p.add_argument("--values", nargs="+", default=list(DEFAULT_VALUES), choices=VALUE_CHOICES,
                   help="value measures to place with, each at every budget (default %(default)s)")
    p.add_argument("--policies", nargs="+", default=None, help="Table 9 rows (default: baseline and the paper's four)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads of every timing (default %(default)s)")
    p.add_argument("--holdout", type=float, default=0.1,
                   help="fraction of the training set kept out of training for the fold drops (0: the test set; "
                        "default %(default)s)")
    p.add_argument("--calibration-batches", type=int, default=8, help="training batches for values and folds "
                                                                       "(default %(default)s)")
    p.add_argument("--drop-samples", type=int, default=None, help="held-out samples per fold drop at most (default all)")
    p.add_argument("--no-match-policies", dest="match_policies", action="store_false",
                   help="do not add a budget at each Table 9 policy's measured ratio (labelled 'at POLICY')")
    p.add_argument("--max-steps", type=int, default=None, help="cap training steps per epoch (smoke runs)")
    p.add_argument("--limit", type=int, default=None, help="use only this many images per split (smoke runs)")
    p.add_argument("--out", default=None, help="output directory (default benchmarks/pareto_DATA)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 seed, budgets 1.2x and unlimited, 3 policies, 1 epoch of 2 steps, 160 images")
    p.add_argument("--allow-busy", action="store_true", help="time even when the load average says the machine is busy")
    args = p.parse_args(argv)
    if args.quick:
        explicit = {a.lstrip("-").split("=")[0].replace("-", "_") for a in (argv or sys.argv[1:]) if a.startswith("--")}
        for key, value in QUICK.items():
            if key not in explicit:
                setattr(args, key, value)
    return args


def config_from(args: argparse.Namespace) -> ParetoConfig:
    """The sweep's settings from the options (``SweepSettingsError`` naming a bad one, before anything runs)."""
    if args.seeds < 1:
        raise SystemExit("error: --seeds must be >= 1")
    recipe = SweepConfig(
        model=args.model, data=args.data, image_size=args.image_size, seeds=tuple(range(args.seeds)),
        pretrain_epochs=args.pretrain_epochs, epochs=args.epochs, limit=args.limit,
        max_steps_per_epoch=args.max_steps, quiet=True,
        **({"policies": tuple(args.policies)} if args.policies else {}),
    )
    return ParetoConfig(recipe=recipe, budgets=tuple(args.budgets), values=tuple(args.values), threads=args.threads,
                        calibration_batches=args.calibration_batches, holdout=args.holdout,
                        drop_samples=args.drop_samples, match_policies=args.match_policies)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = config_from(args)
    except ODConvError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        load_start = require_quiet(args.allow_busy)
    except BusyMachineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out or Path(__file__).resolve().parent / f"pareto_{re.sub(r'[^A-Za-z0-9]+', '_', args.data)}")
    command = "python benchmarks/pareto_budget.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    machine = describe_cpu()
    print(f"machine: {machine}; {describe_load(load_start)}\nwriting to {out}", flush=True)
    began = time.perf_counter()

    def write(result, final: bool = False) -> None:
        wall = time.perf_counter() - began
        seeds = f"{len(result.layers)} of {len(config.recipe.seeds)} seed(s)"
        meta = {"command": command, "machine": machine,
                "wall time": f"{wall / 60:.1f} min ({seeds}{'' if final else ', running'})",
                "load": f"{describe_load(load_start)} at start, {describe_load(load_average())} now",
                "wall_seconds": round(wall, 1), "load_start": load_start, "load_end": load_average(),
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "complete": final}
        write_pareto(result, config, out, meta)

    lock = DirectoryLock(out, "Pareto sweep")
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock.acquire()
        result = run_pareto(config, out, on_seed=write, progress=lambda text: print(text, flush=True))
        write(result, final=True)
    except (ODConvError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        lock.release()
    agreement = result.agreement()
    for item in agreement.values():
        print(item.summary())
    print(f"wall time {(time.perf_counter() - began) / 60:.1f} min; wrote {out}/pareto.md, pareto.png, pareto.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
