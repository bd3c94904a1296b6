"""The ``odconv-surgery`` command: list, apply, export, bench, place, stats and sweep.

MODEL is a spec from a registered source (``torchvision:mobilenet_v2?width_mult=0.5``, ``timm:NAME``,
``entrypoint:NAME``); ``package.module:callable?key=value`` only with ``--allow-import``, which is also the only way
a ``module:callable`` spec read from ``CKPT.model.json`` is accepted. Every error is printed as one line naming the
fix, with a non-zero exit code (2 for usage errors, 1 otherwise); warnings are one line each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings
from pathlib import Path
from typing import NoReturn, Sequence

from .atomic_file import atomic_write, check_target, open_for_read
from .deploy.targets import TARGET_HELP, ExportTarget
from .nn.odconv import INIT_MODES
from .methods import DEFAULT_METHOD, METHOD_POLICY, METHODS
from .nn.options import LAYER_KEYS, LayerOptions
from .policies import PAPER_POLICIES
from .errors import CliError, ODConvError

__all__ = ["main", "build_parser"]

SPEC_HELP = (
    "model spec: 'torchvision:NAME[?key=value&...]' (e.g. 'torchvision:mobilenet_v2?width_mult=0.5'), 'timm:NAME', "
    "'entrypoint:NAME' (a package's odconv_surgery.models entry point), or 'package.module:callable[?...]' with --allow-import"
)
ALLOW_IMPORT_HELP = (
    "allow a MODEL of the form 'package.module:callable' (also when the spec is read from CKPT.model.json): this runs "
    "arbitrary code (the module's import and the call, with your permissions); no check makes it safe, so only for "
    "specs you trust"
)


def _spec(text: str, args: argparse.Namespace):
    from .experiments.model_spec import parse_model_spec

    return parse_model_spec(text, allow_import=args.allow_import)


def _input_shape(args: argparse.Namespace) -> tuple[int, ...]:
    """The batch-1 input; refuses (``KernelBankMemoryError``) an --image-size whose activations cannot fit."""
    from .nn.validation import check_memory

    shape = (1, args.in_channels, args.image_size, args.image_size)
    check_memory(4 * args.in_channels * args.image_size**2 * ACTIVATION_FACTOR, "cpu",
                 f"a {args.image_size}x{args.image_size} input ({args.in_channels} channels) and its activations",
                 "lower --image-size")
    return shape


def _example(args: argparse.Namespace):
    import torch

    return torch.randn(*_input_shape(args))


def _float(text: str) -> float:
    """Accepts 0.0625 or 1/16."""
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number such as 0.0625 or 1/16, got {text!r}") from None


def _int_in(low: int, high: int):
    """An argparse type: an integer in [low, high], refused in one line naming the range otherwise."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer in [{low}, {high}], got {text[:40]!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer in [{low}, {high}], got {value}")
        return value

    parse.__name__ = "integer"
    return parse


MAX_IMAGE_SIZE = 4096
ACTIVATION_FACTOR = 64  # a CNN's activations at batch 1 are tens of times its input; checked before allocating


def _spec_sidecar(ckpt: Path) -> Path:
    return ckpt.with_name(ckpt.name + ".model.json")


def _build_from_sidecar(sidecar: Path, allow_import: bool, overrides: dict):
    """The base model recorded beside a checkpoint; the spec is checked like one typed in, errors name the file."""
    from .experiments.model_sources import ImportNotAllowedError, ModelSpecError, check_kwargs
    from .experiments.model_spec import parse_model_spec

    fix = "fix it, or pass --base MODEL (the spec given to 'apply')"
    try:
        with open_for_read(sidecar) as fh:  # a FIFO is refused, never blocked on
            meta = json.loads(fh.read(1 << 20).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CliError(f"cannot read {sidecar} ({type(exc).__name__}: {exc}); {fix}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), str):
        raise CliError(f"{sidecar} must be a JSON object with a string \"model\" (a model spec); {fix}")
    try:
        kwargs = check_kwargs(meta.get("kwargs") or {}, str(sidecar)) | overrides
        return parse_model_spec(meta["model"], allow_import=allow_import).build(**kwargs)
    except ImportNotAllowedError as exc:
        raise CliError(f"the model spec in {sidecar} was refused: {exc}; or pass --base MODEL") from exc
    except ModelSpecError as exc:
        raise CliError(f"bad model spec in {sidecar}: {exc}; {fix}") from exc


def _classes(args: argparse.Namespace) -> dict:
    return {} if getattr(args, "num_classes", None) is None else {"num_classes": args.num_classes}


def _load_model_or_checkpoint(args: argparse.Namespace):
    """A model from a spec, or a converted model from a checkpoint (base model from --base or the sidecar)."""
    target, path = args.model, Path(args.model).expanduser()
    kwargs = _classes(args)
    if path.suffix in (".pt", ".pth", ".ckpt") or path.is_file():
        if not path.is_file():
            raise CliError(f"checkpoint {path} does not exist; write one with 'odconv-surgery apply MODEL -o {path}'")
        if args.base is None:
            sidecar = _spec_sidecar(path)
            if not sidecar.is_file():
                raise CliError(f"cannot tell which model {path} was made from; pass --base MODEL (the spec given to 'apply')")
            base = _build_from_sidecar(sidecar, args.allow_import, kwargs)
        else:
            base = _spec(args.base, args).build(**kwargs)
        from .checkpoint import load

        return load(base, path)
    return _spec(target, args).build(**kwargs)


def _checked_policies(policies: Sequence[str]) -> list[str]:
    """Known placement policies, each once (``CliError`` naming --policies otherwise)."""
    from .policies import get_policy

    repeated = sorted({p for p in policies if list(policies).count(p) > 1})
    if repeated:
        raise CliError(f"--policies lists {', '.join(repeated)} more than once; give each policy once")
    for policy in policies:
        try:
            get_policy(policy)
        except (ValueError, TypeError) as exc:
            raise CliError(f"--policies: {exc}") from None
    return list(policies)


# --------------------------------------------------------------------------------------------- commands
def cmd_list(args: argparse.Namespace) -> int:
    from .surgery import list_candidates

    policies = _checked_policies(args.policies) if args.policies else None
    model = _spec(args.model, args).build(**_classes(args))
    if policies:
        list_candidates(model, policies=policies)
    else:
        list_candidates(model)
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    from .accounting import count_cost, format_count
    from .checkpoint import save
    from .surgery import apply_odconv

    spec = _spec(args.model, args)
    out = check_target(args.output, replaces="checkpoint")  # refusals before the work, not after it
    check_target(_spec_sidecar(out), replaces="json")
    model = spec.build(**_classes(args))
    before = count_cost(model, _input_shape(args))
    settings = {key: getattr(args, key) for key in LAYER_KEYS if hasattr(args, key)}  # only the flags given
    model, report = apply_odconv(model, args.policy, method=args.method, init=args.init, inplace=True, **settings)
    after = count_cost(model, _input_shape(args))
    save(model, out)
    sidecar = json.dumps({"model": str(spec), "kwargs": _classes(args)}).encode()
    atomic_write(_spec_sidecar(out), lambda fh: fh.write(sidecar), replaces="json")
    if not args.quiet:
        print(report.summary())
        print(
            f"params {format_count(before.params)} -> {format_count(after.params)}, MAdds at {args.image_size}px "
            f"{format_count(before.madds)} -> {format_count(after.madds)}"
        )
        print(f"saved {out} (weights + recipe; load with odconv_surgery.load(base_model, '{out}'))")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    try:
        from .deploy.export import export_onnx
        from .deploy.schema import META_TARGET, metadata
    except ImportError as exc:
        raise CliError(f"ONNX export is not available ({exc}); install the extras: pip install 'odconv-surgery[onnx]'") from exc
    out = Path(args.output).expanduser()
    inputs = [Path(args.model).expanduser()]
    check_target(out, inputs=inputs + [_spec_sidecar(inputs[0])], replaces="onnx")  # before any work (`-o m.pt` on m.pt)
    model = _load_model_or_checkpoint(args).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    proto = export_onnx(model, out, _example(args), dynamic_batch=not args.static_batch, fuse=not args.no_fuse,
                        target=args.target, tune=args.tune, threads=args.threads)
    if not args.quiet:
        target = metadata(proto).get(META_TARGET, args.target)
        print(f"wrote {out} ({'static' if args.static_batch else 'dynamic'} batch, {'unfused' if args.no_fuse else 'fused'}, target {target})")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Static vs naive vs fused ONNX latency per policy (the ONNX issue's table) for any model spec."""
    try:
        import torch

        from .deploy.benchmark import Case, render_markdown, run_case, write_json
    except ImportError as exc:
        raise CliError(f"the ONNX benchmark is not available ({exc}); install the extras: pip install 'odconv-surgery[onnx]'") from exc

    _checked_policies(args.policies)
    if len(set(args.kernel_num)) != len(args.kernel_num):
        raise CliError(f"-n lists a kernel number twice ({' '.join(map(str, args.kernel_num))}); give each once")
    if args.json:
        check_target(args.json, replaces="json")  # `--json ck.pt` is refused before the benchmark, not after it
    static = _spec(args.model, args).build(**_classes(args)).eval()
    x = torch.randn(*_input_shape(args))
    rows = []
    for policy in args.policies:
        for n in args.kernel_num:
            rows += run_case(Case(args.model, policy, n), static=static, example_input=x, repeats=args.repeats,
                             rounds=args.rounds, include_b8=args.batch8, include_cuda=False)
            if not args.quiet:
                print(f"# {policy} n={n} done", file=sys.stderr)
    print(render_markdown(rows))
    if args.json:
        write_json(rows, args.json, {"model": args.model, "image_size": args.image_size})
    return 0


def cmd_place(args: argparse.Namespace) -> int:
    """Budgeted placement of a converted checkpoint: fold the layers worth least per microsecond, check the budget
    on the exported file, save the placed model (+ its spec side file) and a JSON report."""
    try:
        import torch

        from .deploy.export import export_onnx  # noqa: F401 - the check below needs the ONNX extras
    except ImportError as exc:
        raise CliError(f"placement times ONNX files ({exc}); install the extras: pip install 'odconv-surgery[onnx]'") from exc
    from dataclasses import replace

    from torch.utils.data import DataLoader

    from .checkpoint import save
    from .experiments.data import load_dataset
    from .nn.odconv import ODConv2d
    from .placement import brief_finetune, place_under_budget

    ckpt = Path(args.model).expanduser()
    inputs = [ckpt, _spec_sidecar(ckpt)]
    out = check_target(args.output, inputs=inputs, replaces="checkpoint")  # every refusal before the work
    report_path = check_target(args.report or out.with_suffix(".json"), inputs=inputs + [out], replaces="json")
    check_target(_spec_sidecar(out), inputs=inputs, replaces="json")
    model = _load_model_or_checkpoint(args).eval()
    if not any(isinstance(m, ODConv2d) for m in model.modules()):
        raise CliError(f"{args.model} has no ODConv layer to place: convert it first ('odconv-surgery apply MODEL "
                       "--policy all_but_first -o ckpt.pt') and fine-tune it, then place the checkpoint")
    bundle = load_dataset(args.data, args.image_size, limit=args.limit)
    x = torch.randn(1, bundle.in_channels, bundle.image_size, bundle.image_size)
    with torch.no_grad():
        classes = model(x).shape[-1]
    if classes != bundle.num_classes:
        raise CliError(f"the model outputs {classes} classes and {bundle.name} has {bundle.num_classes}; give --data "
                       "with the model's classes")
    finetune = False if args.finetune_epochs == 0 else replace(
        brief_finetune(), epochs=args.finetune_epochs, lr=args.finetune_lr, batch_size=args.batch_size,
        max_steps_per_epoch=args.max_steps, progress=not args.quiet)
    placed, result = place_under_budget(
        model, DataLoader(bundle.train, batch_size=args.batch_size), args.budget, example_input=x,
        threads=args.threads, value=args.value, labelled=bundle, finetune=finetune, target=args.target,
        tune=args.tune, max_batches=args.calibration_batches, tolerance=args.tolerance, max_checks=args.max_checks)
    save(placed, out)
    sidecar = _read_sidecar(inputs[1]) if args.base is None else {"model": args.base, "kwargs": _classes(args)}
    atomic_write(_spec_sidecar(out), lambda fh: fh.write(json.dumps(sidecar).encode()), replaces="json")
    report = {**result.to_dict(), "checkpoint": str(ckpt), "data": bundle.describe(), "command": args.argv}
    text = json.dumps(report, indent=2).encode("utf-8")
    atomic_write(report_path, lambda fh: fh.write(text), replaces="json")
    if not args.quiet:
        print(result.summary())
        print(f"saved {out} (weights + recipe, folded layers included) and {report_path}")
    if not result.met:
        print(f"odconv-surgery: budget {result.budget} not met; the closest placement was saved ({result.note})",
              file=sys.stderr)
        return 1
    return 0


def _read_sidecar(path: Path) -> dict:
    """The ``{"model", "kwargs"}`` record beside a checkpoint (already read and checked by the model's load)."""
    with open_for_read(path) as fh:
        return json.loads(fh.read(1 << 20).decode("utf-8"))


def _budget(text: str):
    """An argparse type: a latency budget, refused in one line naming the accepted forms."""
    from .placement import parse_budget

    try:
        return parse_budget(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


STATS_FILES = ("stats.json", "stats.png")


def cmd_stats(args: argparse.Namespace) -> int:
    """Attention statistics of a converted model on data: DIR/stats.json and DIR/stats.png."""
    import torch

    from .attention_stats import attention_statistics
    try:
        from .experiments.attention_plot import plot_attention_stats
        from .experiments.data import load_dataset
    except ImportError as exc:
        raise CliError(f"'stats' needs the sweep extras ({exc}); install them: pip install 'odconv-surgery[sweep]'") from exc

    out = Path(args.output).expanduser()
    inputs = [Path(args.model).expanduser(), _spec_sidecar(Path(args.model).expanduser())]
    json_path, png_path = (check_target(out / name, inputs=inputs, replaces=name.rsplit(".", 1)[1]) for name in STATS_FILES)
    model = _load_model_or_checkpoint(args)
    bundle = load_dataset(args.data, args.image_size)
    split = bundle.test if args.split == "test" else bundle.train
    loader = torch.utils.data.DataLoader(split, batch_size=args.batch_size, shuffle=False)
    stats = attention_statistics(model, loader, max_batches=args.max_batches)
    stats.write(json_path, inputs=inputs)
    plot_attention_stats(stats, png_path, inputs=inputs, title=f"{args.model} on {bundle.name} ({args.split}): "
                         f"ODConv attention statistics over {stats.samples} samples")
    if not args.quiet:
        print(stats.summary())
        print(f"wrote {json_path} and {png_path}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .experiments.sweep import check_output, prepare_output, run_sweep

    config = sweep_config_from_args(args)  # every setting checked before anything runs or is written
    _spec(config.model, args)  # fail fast on a bad spec
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        out = Path(args.output).expanduser()
        check_output(out, config)  # one-line errors here rather than from every torchrun worker
        prepare_output(out)
        return _relaunch_torchrun(args.nproc, args.argv)
    result = run_sweep(config, Path(args.output).expanduser())
    if int(os.environ.get("RANK", "0")) == 0:
        if not args.quiet:
            print(Path(result.files["table"]).read_text() if "table" in result.files else "")
            print("outputs: " + ", ".join(str(p) for p in result.files.values()))
        if result.failures:
            print(f"odconv-surgery: {len(result.failures)} configuration(s) failed; see {result.files['results']} "
                  "(they are retried when you run the same command again)", file=sys.stderr)
            return 1
    return 0


def _safe_path_flag() -> str:
    """The interpreter flag that keeps the working directory off ``sys.path``: ``-P`` (3.11+), else ``-I``."""
    return "-P" if sys.version_info >= (3, 11) else "-I"


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """The command that re-runs this CLI under torchrun with ``nproc`` workers.

    Neither the launcher nor the workers put the working directory on ``sys.path`` (``python -P``, and
    ``--no-python`` so torchrun starts the workers with that same flag): a ``networkx.py`` or ``tqdm.py`` in the
    directory the user runs from is never imported.
    """
    child: list[str] = []
    skip = False
    for arg in argv:  # drop --nproc N / --nproc=N: torchrun's own parser would take it for --nproc-per-node
        if skip:
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        if arg.startswith("--nproc="):
            continue
        child.append(arg)
    safe = _safe_path_flag()
    return [sys.executable, safe, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "--no-python", sys.executable, safe, "-m", "odconv_surgery.cli", *child]


def _relaunch_torchrun(nproc: int, argv: Sequence[str]) -> int:
    """Re-run this same command under torchrun with ``nproc`` processes (DDP training)."""
    import subprocess

    env = dict(os.environ, PYTHONSAFEPATH="1")  # children of the workers inherit it too
    return subprocess.call(torchrun_command(nproc, argv), env=env)


# --------------------------------------------------------------------------------------------- parser
class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (exit status 2), like every other error of the command; the
    subcommands' parsers are of this class too (``add_subparsers`` makes them with the parent's class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def layer_option_args(parser: argparse.ArgumentParser) -> None:
    """One option per ``LayerOptions`` field (``--kernel-num``, ...), with its help, short flag and choices read
    from the field, so a new layer setting needs no change here. A flag left out is absent from the namespace
    (``--method`` then supplies it); the help shows ODConv's default."""
    for f in dataclasses.fields(LayerOptions):
        flags = [f"--{f.name.replace('_', '-')}", *([f.metadata["short"]] if "short" in f.metadata else [])]
        kwargs: dict = {"default": argparse.SUPPRESS, "dest": f.name, "metavar": f.name.split("_")[-1].upper()}
        if isinstance(f.default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
            del kwargs["metavar"]
            shown = "on" if f.default else "off"
        elif isinstance(f.default, tuple):  # a list setting: comma-separated on the command line
            kwargs["type"] = str
            shown = ",".join(f.default)
        else:
            kwargs["type"] = _float if isinstance(f.default, float) else type(f.default)
            shown = f"{f.default:g}" if isinstance(f.default, float) else str(f.default)
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
                del kwargs["metavar"]  # argparse shows the choices
        kwargs["help"] = f"{f.metadata['help']} (ODConv default {shown})"
        parser.add_argument(*flags, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="odconv-surgery",
        description="Convert CNNs to ODConv (ICLR 2022), export them to ONNX, benchmark and sweep placement policies.",
        epilog="Run 'odconv-surgery COMMAND --help' for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def model_arg(p: argparse.ArgumentParser, metavar: str = "MODEL", help: str = SPEC_HELP, **kwargs: object) -> None:
        p.add_argument("model", metavar=metavar, help=help, **kwargs)
        p.add_argument("--allow-import", action="store_true", help=ALLOW_IMPORT_HELP)

    def common(p: argparse.ArgumentParser, image_size: int = 224) -> None:
        p.add_argument("--num-classes", type=_int_in(1, 1 << 20), default=None, help="override the model's number of classes")
        p.add_argument("--image-size", type=_int_in(1, MAX_IMAGE_SIZE), default=image_size, help=f"input height/width (default {image_size})")
        p.add_argument("--in-channels", type=_int_in(1, 1 << 16), default=3, help="input channels (default 3)")
        p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")

    p = sub.add_parser("list", help="conv candidates and which policy converts each", description="Show every convolution and which placement policy would convert it.")
    model_arg(p)
    p.add_argument("--policies", nargs="+", default=None, help="policies to show (default: the built-in ones)")
    p.add_argument("--num-classes", type=_int_in(1, 1 << 20), default=None, help="override the model's number of classes")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("apply", help="convert and save weights + recipe", description="Convert MODEL with a placement policy and save a checkpoint (weights + recipe).")
    model_arg(p)
    p.add_argument("--method", choices=tuple(METHODS), default=DEFAULT_METHOD,
                   help="dynamic-convolution method: its layer settings and placement (flags below replace them)")
    p.add_argument("--policy", "-p", default=METHOD_POLICY,
                   help="placement policy (all_but_first, 1x1, 3x3, last:K, all, all_but_stem, condconv); default: the method's")
    layer_option_args(p)
    p.add_argument("--init", choices=INIT_MODES, default="pretrained", help="function-preserving (default), neutral (no kernel rescaling, for training from scratch) or the paper's scratch init")
    p.add_argument("-o", "--output", required=True, help="checkpoint path to write (e.g. model.pt)")
    common(p)
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("export", help="export a model or checkpoint to ONNX", description="Export MODEL (a spec) or a checkpoint from 'apply' to ONNX.")
    model_arg(p, metavar="MODEL|CKPT", help=SPEC_HELP + ", or a checkpoint written by 'apply'")
    p.add_argument("-o", "--output", required=True, help="ONNX file to write")
    p.add_argument("--base", default=None, help="model spec the checkpoint was made from (default: read from CKPT.model.json)")
    p.add_argument("--no-fuse", action="store_true", help="skip the ONNX fusion passes")
    p.add_argument("--static-batch", action="store_true", help="fix the batch dimension to 1")
    p.add_argument("--target", choices=[t.value for t in ExportTarget], default=ExportTarget.AUTO.value,
                   help="; ".join(f"{t.value}{' (default)' if t is ExportTarget.AUTO else ''}: {TARGET_HELP[t]}" for t in ExportTarget))
    p.add_argument("--tune", action=argparse.BooleanOptionalAction, default=None,
                   help="ort-cpu: choose each layer's NCHWc form by timing it on this machine (cached; default on "
                        "unless ODCONV_TUNE=0); --no-tune uses the calibrated cost model")
    p.add_argument("--threads", type=_int_in(1, 1 << 10), default=1,
                   help="onnxruntime intra-op threads of the deployment, for the tuning's timings (default 1)")
    common(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="ONNX latency table: static vs naive vs fused export per policy",
                       description="Export MODEL statically and with ODConv (naive and fused) and time them in onnxruntime.")
    model_arg(p)
    p.add_argument("--policies", nargs="+", default=list(PAPER_POLICIES), help="policies to benchmark (default: the paper's Table 9 set)")
    p.add_argument("-n", "--kernel-num", type=_int_in(1, 1 << 16), nargs="+", default=[1], help="kernel numbers (default 1)")
    p.add_argument("--repeats", type=_int_in(1, 1 << 20), default=10, help="timed runs per round (default 10)")
    p.add_argument("--rounds", type=_int_in(1, 1 << 16), default=5, help="interleaved rounds (default 5)")
    p.add_argument("--batch8", action="store_true", help="also time CPU batch 8 with all threads")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    common(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("place", help="keep ODConv where it is worth its latency within a budget, fold the rest",
                       description="From a checkpoint converted under 'all' or 'all_but_first' (and fine-tuned), keep "
                                   "dynamic the layers worth the most per microsecond within --budget, fold the rest "
                                   "back into plain convs, check the budget on the exported file in onnxruntime, "
                                   "fine-tune briefly, and save the placed model with a JSON report.")
    _place_options(p, model_arg)
    p.set_defaults(func=cmd_place)

    p = sub.add_parser("stats", help="attention statistics of a converted model on data (stats.json, stats.png)",
                       description="Run a converted model (a checkpoint from 'apply' or your own save()) on data in eval "
                                   "mode at temperature 1 and write, per converted layer, the mean and spread across "
                                   "samples of every attention and the kernel dynamism: DIR/stats.json and DIR/stats.png.")
    model_arg(p, metavar="CKPT|MODEL", help="a checkpoint written by 'apply' or odconv_surgery.save, or " + SPEC_HELP)
    p.add_argument("--base", default=None, help="model spec the checkpoint was made from (default: read from CKPT.model.json)")
    p.add_argument("--data", default=None, help="ImageFolder root (class folders, or train/ and val/); default: sklearn digits")
    p.add_argument("--split", choices=("test", "train"), default="test", help="which split to run on (default %(default)s)")
    p.add_argument("--image-size", type=_int_in(8, MAX_IMAGE_SIZE), default=None, help="input size (default 32 for digits, 64 for ImageFolder)")
    p.add_argument("--batch-size", type=_int_in(1, 1 << 16), default=64, help="batch size (default %(default)s)")
    p.add_argument("--max-batches", type=_int_in(1, 1 << 31), default=None, help="stop after this many batches (default: the whole split)")
    p.add_argument("--num-classes", type=_int_in(1, 1 << 20), default=None, help="override the model's number of classes")
    p.add_argument("-o", "--output", required=True, help="directory to write stats.json and stats.png into")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("sweep", help="placement-policy sweep (accuracy + speed, the paper's Table 9)",
                       description="Train and evaluate MODEL under several placement policies and seeds; resumable. "
                                   "Every setting is checked before anything is trained or written.")
    _sweep_options(p, model_arg)
    p.set_defaults(func=cmd_sweep)
    return parser


def _place_options(p: argparse.ArgumentParser, model_arg) -> None:
    """The options of ``place``; the fine-tuning defaults are read from ``placement.brief_finetune``."""
    from .placement import NOISE_TOLERANCE, brief_finetune
    from .placement.values import VALUE_MEASURES

    brief = brief_finetune()
    model_arg(p, metavar="CKPT", help="a checkpoint written by 'apply' (converted, ideally fine-tuned)")
    p.add_argument("--budget", required=True, type=_budget,
                   help="'1.2x' (latency ratio to the static model, measured in the same run), '3.5ms' or '800us' "
                        "(batch 1, this machine) or 'unlimited'")
    p.add_argument("-o", "--output", required=True, help="checkpoint of the placed model to write (weights + recipe)")
    p.add_argument("--report", default=None, help="JSON report to write (default: OUTPUT with the suffix .json)")
    p.add_argument("--base", default=None, help="model spec the checkpoint was made from (default: read from CKPT.model.json)")
    p.add_argument("--data", default=None, help="ImageFolder root with the model's classes (calibration, fine-tuning, "
                                                "accuracy); default: sklearn digits")
    p.add_argument("--image-size", type=_int_in(8, MAX_IMAGE_SIZE), default=None,
                   help="input height/width, for the data and the timed files (default: the data's, 32 for digits)")
    p.add_argument("--limit", type=_int_in(2, 1 << 30), default=None, help="use only this many images per split (smoke runs)")
    p.add_argument("--calibration-batches", type=_int_in(1, 1 << 20), default=8,
                   help="training batches for the value measure and the folds (default %(default)s)")
    p.add_argument("--batch-size", type=_int_in(2, 1 << 16), default=brief.batch_size, help="batch size (default %(default)s)")
    p.add_argument("--value", default="dynamism", help=f"value measure: {', '.join(sorted(VALUE_MEASURES))} (default %(default)s)")
    p.add_argument("--threads", type=_int_in(1, 1 << 10), default=1, help="onnxruntime intra-op threads of the deployment (default 1)")
    p.add_argument("--target", choices=[t.value for t in ExportTarget], default=ExportTarget.AUTO.value,
                   help="export target of the timed files (default auto)")
    p.add_argument("--tune", action=argparse.BooleanOptionalAction, default=None,
                   help="ort-cpu: time each layer's NCHWc forms (default on unless ODCONV_TUNE=0)")
    p.add_argument("--finetune-epochs", type=_int_in(0, 10_000), default=brief.epochs,
                   help="fine-tuning epochs after folding, temperature 1 (0: none; default %(default)s)")
    p.add_argument("--finetune-lr", type=_float, default=brief.lr, help="fine-tuning learning rate (default %(default)s)")
    p.add_argument("--max-steps", type=_int_in(1, 1 << 30), default=None, help="cap fine-tuning steps per epoch (smoke runs)")
    p.add_argument("--max-checks", type=_int_in(1, 1000), default=10,
                   help="measurements of the placed file at most, each folding more while over budget (default %(default)s)")
    p.add_argument("--tolerance", type=_float, default=NOISE_TOLERANCE,
                   help="fraction over the budget still counted within it: timing noise (default %(default)s)")
    p.add_argument("--num-classes", type=_int_in(1, 1 << 20), default=None, help="override the model's number of classes")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def _sweep_options(p: argparse.ArgumentParser, model_arg) -> None:
    """The sweep's options, made from ``SweepConfig``'s fields (flags, types and help in their metadata, defaults
    read from the dataclass): no default is restated here. Options left out keep the dataclass default."""
    from dataclasses import fields

    from .experiments.sweep_config import SweepConfig, cli_fields, cli_help

    default_model = next(f.default for f in fields(SweepConfig) if f.name == "model")
    model_arg(p, nargs="?", default=None, help=SPEC_HELP + f" (default {default_model})")
    types = {"fraction": _float}
    for f in cli_fields():
        meta = dict(f.metadata)
        kwargs: dict = {"dest": f.name, "default": None, "help": cli_help(f)}
        if "const" in meta:
            kwargs.update(action="store_const", const=meta["const"])
        else:
            kwargs["type"] = types.get(meta["type"], meta["type"]) or str
            for key in ("nargs", "choices", "metavar"):
                if key in meta:
                    kwargs[key] = meta[key]
        p.add_argument(*meta["flags"], **kwargs)
    p.add_argument("--seeds", type=_int_in(1, 10_000), default=None, dest="seed_count", metavar="S", help="use the seeds 0..S-1 (short for --seed-list 0 1 ... S-1)")
    p.add_argument("--nproc", type=_int_in(1, 1024), default=1, help="train with DDP on this many processes (re-launches under torchrun)")
    p.add_argument("-o", "--output", default="results", help="output directory (results.jsonl, csv, json, table.md, PNGs; default %(default)s)")


def sweep_config_from_args(args: argparse.Namespace):
    """The ``SweepConfig`` an ``odconv-surgery sweep`` command line asks for (validated: ``SweepSettingsError``)."""
    from .experiments.sweep_config import SweepConfig, cli_fields

    given = {f.name: getattr(args, f.name) for f in cli_fields() if getattr(args, f.name, None) is not None}
    if args.model is not None:
        given["model"] = args.model
    if args.seed_count is not None:
        if "seeds" in given:
            raise CliError("give --seeds S or --seed-list, not both")
        given["seeds"] = list(range(args.seed_count))
    return SweepConfig(**given, allow_import=args.allow_import)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _print_warning
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("odconv-surgery: interrupted (a sweep resumes where it stopped when re-run)", file=sys.stderr)
        return 130
    except ODConvError as exc:  # the user's mistake, named with its fix
        if os.environ.get("ODCONV_DEBUG"):
            raise
        print(f"odconv-surgery: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:  # the file system said no (missing file, permissions, full disk): not a bug
        if os.environ.get("ODCONV_DEBUG"):
            raise
        print(f"odconv-surgery: error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: still one line, the traceback on request
        if os.environ.get("ODCONV_DEBUG"):
            raise
        print(f"odconv-surgery: internal error (this is a bug, please report it): {type(exc).__name__}: "
              f"{_one_line(exc)}; set ODCONV_DEBUG=1 for the traceback", file=sys.stderr)
        return 1


def _print_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
    print(f"odconv-surgery: warning: {message}", file=sys.stderr)


MAX_MESSAGE = 600  # characters of an error line; the full text with ODCONV_DEBUG=1
_CUT = " ... (cut; ODCONV_DEBUG=1 shows all) ... "


def _one_line(exc: BaseException) -> str:
    """The message on one line, at most ``MAX_MESSAGE`` characters: a long one (a C++ backtrace, a huge value)
    keeps its start (what failed) and its end (the fix) around a marked cut."""
    raw = str(exc)
    if len(raw) > 8 * MAX_MESSAGE:
        raw = raw[: 4 * MAX_MESSAGE] + "\n" + raw[-4 * MAX_MESSAGE :]
    text = " ".join(raw.split()) or repr(exc)[:MAX_MESSAGE]
    if len(text) > MAX_MESSAGE:
        tail = (MAX_MESSAGE - len(_CUT)) // 3
        text = text[: MAX_MESSAGE - len(_CUT) - tail] + _CUT + text[-tail:]
    return text


if __name__ == "__main__":
    sys.exit(main())
