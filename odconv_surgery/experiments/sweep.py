"""Placement-policy sweeps: the paper's Table 9 (params, MAdds, top-1/top-5, CPU latency) for your model and data.

Two starting points (``SweepConfig``). From a trained model (the default, the lifecycle users live through): per
seed the static model is trained once (cached in ``<output>/pretrained/``) or loaded from the user's checkpoint;
every policy converts a copy with the function-preserving init (accuracy recorded right after conversion) and
fine-tunes it; the baseline row is the static model fine-tuned the same way. From scratch (``pretrain_epochs=0``):
every (policy, n, seed) builds a fresh model, converts it and trains it. Then each configuration is evaluated,
its params/MAdds counted (``accounting.py``) and its batch-1 CPU latency measured (ONNX Runtime, one thread, when
the export modules are importable; eager PyTorch otherwise; the backend is recorded). Each finished configuration
is appended to ``results.jsonl`` at once (flushed and fsynced): an interrupted sweep resumes and skips
configurations already done; a failing configuration is recorded with its error and traceback and the sweep goes
on (it is retried on the next resume).

Stability: with so few steps the temperature reaches 1 within a fraction of an epoch, and the attention's
BatchNorm over pooled features (small batch variance) can amplify gradients until training diverges; the sweep
therefore clips the gradient norm at 10 for every configuration, baseline included (``grad_clip``; the paper does
not clip). A configuration that still diverges is recorded as failed.

Initialisation and learning rates per mode are ``FINETUNE_DEFAULTS`` and ``SCRATCH_DEFAULTS``; the measurements
behind them are in ``benchmarks/sweep_digits_*`` and the README.

Scale-out: launch the whole sweep under ``torchrun``; every rank runs the same configurations in lock-step,
training uses DDP (gloo on CPU, nccl on GPU) with attention SyncBatchNorm, and rank 0 alone measures latency
and writes results.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from ..accounting import count_cost
from ..nn.odconv import INIT_MODES
from ..nn.optim import ATTENTION_LR_SCALE
from ..policies import PAPER_POLICIES
from .data import DataBundle, load_dataset
from .distributed import DistContext, init_distributed
from .dir_lock import DirectoryLock, DirectoryLocked
from .latency import measure_latency
from .model_spec import ModelSpec, parse_model_spec
from .pretrain import CACHE_DIR as PRETRAINED_DIR
from .pretrain import file_digest, trained_static_model
from .sweep_results import RESULTS_FILE, SweepResultsWarning, append_record, config_key, read_results
from .sweep_report import BASELINE, markdown_table, summarise, write_outputs
from .training import TrainConfig, evaluate, train_and_evaluate
from ..errors import SweepOutputError, SweepSettingsMismatch  # noqa: F401 - raised here, defined with every error

__all__ = [
    "BASELINE",
    "DEFAULT_POLICIES",
    "SweepConfig",
    "SweepResult",
    "SweepOutputError",
    "SweepResultsWarning",
    "SweepSettingsMismatch",
    "run_sweep",
    "read_results",
    "summarise",
    "markdown_table",
    "measure_latency",
]

DEFAULT_POLICIES = (BASELINE, *PAPER_POLICIES)

# Fine-tuning a trained model: the function-preserving init and a smaller learning rate. In both modes the attention
# branches train at a tenth of the learning rate (``nn/optim.py`` says why).
FINETUNE_DEFAULTS: dict[str, Any] = {"epochs": 3, "lr": 0.01, "attention_lr_scale": ATTENTION_LR_SCALE, "init": "pretrained"}
# From scratch: the paper's recipe scaled down; init see module docstring.
SCRATCH_DEFAULTS: dict[str, Any] = {"epochs": 5, "lr": 0.05, "attention_lr_scale": ATTENTION_LR_SCALE, "init": "neutral"}


@dataclass
class SweepConfig:
    """What to sweep. ``model`` is a spec string (see ``model_spec``); ``num_classes`` comes from the data.

    Two starting points. From a trained model (default, ``pretrain_epochs > 0`` or ``from_checkpoint``): per seed
    the static model is trained for ``pretrain_epochs`` (cached in the output directory) or loaded from the user's
    ``from_checkpoint``, then every policy converts it with the function-preserving init and fine-tunes it for
    ``epochs``; the baseline is the static model fine-tuned the same way. From scratch (``pretrain_epochs=0``):
    every configuration is built fresh and trained for ``epochs``. ``None`` settings take the mode's default
    (``FINETUNE_DEFAULTS`` / ``SCRATCH_DEFAULTS``).
    """

    model: str = "torchvision:mobilenet_v2?width_mult=0.5"
    policies: Sequence[str] = DEFAULT_POLICIES
    kernel_nums: Sequence[int] = (1,)
    seeds: Sequence[int] = (0, 1, 2)
    data: str | None = None  # None / "digits" or an ImageFolder root
    image_size: int | None = None  # digits: 32, ImageFolder: 64
    pretrain_epochs: int = 5
    pretrain_lr: float = 0.05
    from_checkpoint: str | None = None
    epochs: int | None = None
    batch_size: int = 64
    lr: float | None = None
    attention_lr_scale: float | None = None
    weight_decay: float = 4e-5
    grad_clip: float | None = 10.0  # see module docstring
    reduction: float = 1 / 16
    init: str | None = None
    attention_norm: str = "bn"
    latency: bool = True
    latency_runs: int = 30
    limit: int | None = None  # images per split (tests)
    max_steps_per_epoch: int | None = None  # tests
    quiet: bool = False
    allow_import: bool = False  # let ``model`` be 'module:callable' (see model_spec); not a setting of the results

    def __post_init__(self) -> None:
        if not self.policies:
            raise ValueError("no policies to sweep; pass at least one (e.g. baseline all_but_first)")
        if not self.seeds:
            raise ValueError("no seeds; pass at least one seed")
        if any(n < 1 for n in self.kernel_nums) or not self.kernel_nums:
            raise ValueError(f"kernel numbers must be >= 1, got {list(self.kernel_nums)}")
        if self.pretrain_epochs < 0:
            raise ValueError(f"pretrain_epochs must be >= 0 (0 trains every configuration from scratch), got {self.pretrain_epochs}")
        if self.from_checkpoint is not None:
            self.from_checkpoint = str(Path(self.from_checkpoint).expanduser().resolve())
        for key, value in (FINETUNE_DEFAULTS if self.from_trained else SCRATCH_DEFAULTS).items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.init not in INIT_MODES:
            raise ValueError(f"init must be one of {INIT_MODES}, got {self.init!r}")
        self.policies = tuple(self.policies)
        self.kernel_nums = tuple(int(n) for n in self.kernel_nums)
        self.seeds = tuple(int(s) for s in self.seeds)

    @property
    def from_trained(self) -> bool:
        """Whether configurations start from a trained static model (fine-tuning) rather than from scratch."""
        return self.pretrain_epochs > 0 or self.from_checkpoint is not None

    def train_config(self, seed: int) -> TrainConfig:
        """The recipe every configuration (baseline included) trains or fine-tunes with."""
        return TrainConfig(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
            grad_clip=self.grad_clip, attention_lr_scale=self.attention_lr_scale, seed=seed,
            max_steps_per_epoch=self.max_steps_per_epoch, progress=not self.quiet,
        )

    def pretrain_config(self, seed: int) -> TrainConfig:
        """The recipe that trains each seed's static starting point."""
        return TrainConfig(
            epochs=self.pretrain_epochs, batch_size=self.batch_size, lr=self.pretrain_lr, weight_decay=self.weight_decay,
            grad_clip=self.grad_clip, seed=seed, max_steps_per_epoch=self.max_steps_per_epoch, progress=not self.quiet,
        )

    def settings(self) -> dict[str, Any]:
        """Everything that changes a configuration's result; stored with each record and checked on resume."""
        keys = ("model", "data", "image_size", "pretrain_epochs", "pretrain_lr", "from_checkpoint", "epochs", "batch_size",
                "lr", "attention_lr_scale", "weight_decay", "grad_clip", "reduction", "init", "attention_norm", "limit",
                "max_steps_per_epoch")
        out = {k: getattr(self, k) for k in keys}
        out["data"] = None if self.data in (None, "digits") else str(Path(self.data).resolve())
        if self.from_checkpoint is not None:
            out["from_checkpoint_sha256"] = file_digest(self.from_checkpoint)
        return out

    def configurations(self) -> list[tuple[str, int, int]]:
        """(policy, n, seed) triples, seed-major (an interrupted sweep has every policy for the first seeds);
        the baseline runs once per seed with n = 0."""
        runs = []
        for seed in self.seeds:
            for policy in self.policies:
                for n in ((0,) if policy == BASELINE else self.kernel_nums):
                    runs.append((policy, n, seed))
        return runs


@dataclass
class SweepResult:
    """Records of this sweep (finished, failed) and where the outputs were written."""

    records: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    files: dict[str, Path] = field(default_factory=dict)
    skipped: int = 0

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("status") != "ok"]


# ---------------------------------------------------------------------------------------------- results file
def _latest(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Latest record per configuration key (a later success overrides an earlier failure)."""
    latest: dict[str, dict[str, Any]] = {}
    for rec in records:
        if "key" in rec:
            latest[rec["key"]] = rec
    return latest


# ---------------------------------------------------------------------------------------------- one configuration
ModelFactory = Callable[[int], nn.Module]


def _factory_from_spec(spec: ModelSpec) -> ModelFactory:
    return lambda num_classes: spec.build(num_classes=num_classes)


def _starting_model(seed: int, config: SweepConfig, data: DataBundle, factory: ModelFactory, ctx: DistContext,
                    cache_dir: Path) -> tuple[nn.Module, dict[str, Any]]:
    """A fresh model (from scratch) or a copy of the seed's trained static model, plus what to record about it."""
    if not config.from_trained:
        torch.manual_seed(seed)
        return factory(data.num_classes), {}
    model, top1 = trained_static_model(
        factory, data, seed, config.pretrain_config(seed) if config.pretrain_epochs else None, cache_dir, ctx,
        checkpoint=config.from_checkpoint,
    )
    return model, {"top1_static": top1}


def run_configuration(
    policy: str, n: int, seed: int, config: SweepConfig, data: DataBundle, factory: ModelFactory, ctx: DistContext,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Build (or load the trained static model), convert, train or fine-tune, evaluate and measure one
    configuration; returns its record (raises on failure)."""
    model, record = _starting_model(seed, config, data, factory, ctx, cache_dir or Path(PRETRAINED_DIR))
    example = data.test[0][0].unsqueeze(0)
    converted = 0
    if policy != BASELINE:
        from ..surgery import apply_odconv

        model, report = apply_odconv(
            model, policy, kernel_num=n, reduction=config.reduction, init=config.init,
            attention_norm=config.attention_norm, seed=seed, inplace=True,
        )
        converted = len(report.converted)
    if config.from_trained:  # what the user sees right after surgery, before any fine-tuning
        record["top1_converted"], _ = evaluate(model, data.test, device=ctx.device, num_classes=data.num_classes)
    cost = count_cost(model, example_input=example.to(next(model.parameters()).device))  # on ctx.device when trained first
    result = train_and_evaluate(model, data, config.train_config(seed), ctx)
    latency, backend = (None, "skipped")
    if config.latency and ctx.is_main:
        latency, backend = measure_latency(model, example, config.latency_runs)
    return {
        "status": "ok",
        "top1": result.top1,
        "top5": result.top5,
        **record,
        "final_loss": result.final_loss,
        "params": cost.params,
        "madds": cost.madds,
        "extra_madds": cost.extra_madds,
        "converted_layers": converted,
        "latency_ms": latency,
        "latency_backend": backend,
        "train_seconds": result.seconds,
        "steps": result.steps,
        "world_size": result.world_size,
        "sync_batchnorms": result.sync_batchnorms,
    }


# ---------------------------------------------------------------------------------------------- the sweep
def run_sweep(
    config: SweepConfig,
    output_dir: str | os.PathLike,
    *,
    model_factory: ModelFactory | None = None,
    data: DataBundle | None = None,
    ctx: DistContext | None = None,
    max_configs: int | None = None,
) -> SweepResult:
    """Run (or resume) a sweep into ``output_dir`` and write results.jsonl/csv/json, table.md and the plots.

    ``model_factory(num_classes)`` overrides ``config.model`` (which must then still describe it, for the
    record); ``data`` overrides ``config.data``. ``max_configs`` stops after that many new configurations
    (used to simulate an interruption). Raises ``SweepSettingsMismatch`` when ``output_dir`` holds results
    of a sweep with other settings, and ``DirectoryLocked`` when another sweep is writing to it (the lock is
    ``output_dir/.lock``, held by rank 0 for the whole run).
    """
    out = Path(output_dir).expanduser()
    results_path = out / RESULTS_FILE
    own_ctx = ctx is None
    ctx = ctx or init_distributed()
    lock = DirectoryLock(out, "sweep")
    try:
        _agree(ctx, lambda: prepare_output(out, lock))
        return _run_sweep(config, out, results_path, ctx, model_factory, data, max_configs)
    finally:
        lock.release()
        if own_ctx:
            ctx.close()


def prepare_output(out: Path, lock: DirectoryLock | None = None) -> None:
    """Create the directory, take its lock and check the results file can be appended to, before any training.

    Without ``lock`` the lock is only tried (taken and released): a probe for a launcher that starts the sweep
    in other processes.
    """
    results_path = out / RESULTS_FILE
    probe = lock is None
    lock = lock or DirectoryLock(out, "sweep")
    if out.exists() and not out.is_dir():
        raise SweepOutputError(f"{out} is not a directory; give the sweep an output directory (-o DIR) for its results")
    out.mkdir(parents=True, exist_ok=True)
    lock.acquire()
    try:
        if results_path.exists() and not results_path.is_file():
            raise SweepOutputError(f"{results_path} is not a regular file; move it away so the sweep can append its results")
        with open(results_path, "a", encoding="utf-8"):  # fails now (permissions, read-only disk), not after training
            pass
    finally:
        if probe:
            lock.release()


def _agree(ctx: DistContext, step: Callable[[], None]) -> None:
    """Run ``step`` on rank 0 and raise its error on every rank, so no rank waits at a barrier for a failed one."""
    error: BaseException | None = None
    if ctx.is_main:
        try:
            step()
        except (SweepOutputError, DirectoryLocked, OSError) as exc:
            error = exc
    if ctx.distributed:
        import torch.distributed as dist

        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if error is not None:
        raise error


def _run_sweep(config: SweepConfig, out: Path, results_path: Path, ctx: DistContext, model_factory: ModelFactory | None,
               data: DataBundle | None, max_configs: int | None) -> SweepResult:
    settings = config.settings()
    existing = read_results(results_path, warn=ctx.is_main)
    for rec in existing:
        if rec.get("settings") != settings:
            diff = {k: (rec.get("settings", {}).get(k), v) for k, v in settings.items() if rec.get("settings", {}).get(k) != v}
            raise SweepSettingsMismatch(
                f"{results_path} holds results of a sweep with other settings (recorded vs now: {diff}). "
                "Use another output directory, or move that results file away to start over."
            )
    done = {key for key, rec in _latest(existing).items() if rec.get("status") == "ok"}
    todo = [c for c in config.configurations() if config_key(*c) not in done]
    skipped = len(config.configurations()) - len(todo)
    ctx.barrier()  # every rank has read the file before rank 0 appends to it

    if data is None:
        data = load_dataset(config.data, config.image_size, limit=config.limit)
    factory = model_factory or _factory_from_spec(parse_model_spec(config.model, allow_import=config.allow_import))
    torch_threads = torch.get_num_threads()

    bar = None
    if ctx.is_main and not config.quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(config.configurations()), initial=skipped, desc="sweep", unit="cfg")
    try:
        for i, (policy, n, seed) in enumerate(todo):
            if max_configs is not None and i >= max_configs:
                break
            key = config_key(policy, n, seed)
            if bar is not None:
                bar.set_postfix_str(key)
            record: dict[str, Any] = {"key": key, "policy": policy, "kernel_num": n, "seed": seed, "settings": settings,
                                      "dataset": data.name}
            start = time.perf_counter()
            try:
                record.update(run_configuration(policy, n, seed, config, data, factory, ctx, out / PRETRAINED_DIR))
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # record and go on
                record.update({"status": "error", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
            finally:
                torch.set_num_threads(torch_threads)
            record["seconds"] = time.perf_counter() - start
            record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            if ctx.is_main:
                append_record(results_path, record)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    ctx.barrier()
    records = [rec for rec in _latest(read_results(results_path, warn=False)).values()]
    wanted = {config_key(*c) for c in config.configurations()}
    records = [rec for rec in records if rec["key"] in wanted]
    summary = summarise(records, config.policies)
    files: dict[str, Path] = {"results": results_path}
    if ctx.is_main:
        files.update(write_outputs(records, summary, out, config))
    return SweepResult(records, summary, files, skipped)
