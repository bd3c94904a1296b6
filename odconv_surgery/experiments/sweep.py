"""Placement-policy sweeps: the paper's Table 9 (params, MAdds, top-1/top-5, CPU latency) for your model and data.

Two starting points (``SweepConfig``). From a trained model (the default, the lifecycle users live through): per
seed the static model is trained once (cached in ``<output>/pretrained/``) or loaded from the user's checkpoint;
every policy converts a copy with the function-preserving init (accuracy recorded right after conversion) and
fine-tunes it; the baseline row is the static model fine-tuned the same way. From scratch (``pretrain_epochs=0``):
every (policy, n, seed) builds a fresh model, converts it and trains it. Then each configuration is evaluated,
its params/MAdds counted (``accounting.py``) and its batch-1 CPU latency measured (ONNX Runtime, one thread, when
the export modules are importable; eager PyTorch otherwise; the backend is recorded) and, with ``stats``, its
attention statistics written (``sweep_stats``). Each finished configuration
is appended to ``results.jsonl`` at once (flushed and fsynced): an interrupted sweep resumes and skips
configurations already done; a failing configuration is recorded with its error and traceback and the sweep goes
on (it is retried on the next resume).

Stability: with so few steps the temperature reaches 1 within a fraction of an epoch, and the attention's
BatchNorm over pooled features (small batch variance) can amplify gradients until training diverges; the sweep
therefore clips the gradient norm at 10 for every configuration, baseline included (``grad_clip``; the paper does
not clip). A configuration that still diverges (a non-finite loss, or non-finite weights after any step) is
recorded with ``status: "diverged"``.

Safety: every setting is checked before anything is trained or written (``SweepConfig`` and ``preflight``), and
the sweep writes only files it owns (``sweep_manifest``), through the careful writer (``atomic_file``).

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
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..accounting import count_cost
from ..atomic_file import open_for_append
from .data import DataBundle, load_dataset
from .distributed import DistContext, init_distributed
from .dir_lock import DirectoryLock, DirectoryLocked  # noqa: F401 - DirectoryLocked re-exported (run_sweep raises it)
from .latency import measure_latency
from .model_spec import ModelSpec, parse_model_spec
from .pretrain import CACHE_DIR as PRETRAINED_DIR
from .pretrain import load_static_checkpoint, trained_static_model
from .sweep_config import BASELINE, DEFAULT_POLICIES, FINETUNE_DEFAULTS, SCRATCH_DEFAULTS, SweepConfig
from .sweep_manifest import STATS_DIR, foreign_outputs, record_owned
from .sweep_results import RESULTS_FILE, SweepResultsWarning, append_record, config_key, read_results
from .sweep_variants import DEFAULT_VARIANT, parse_variant
from .sweep_report import markdown_table, summarise, write_outputs
from .sweep_stats import configuration_stats, warn_missing_stats
from .training import evaluate, train_and_evaluate
from ..errors import (  # noqa: F401 - raised here, defined with every error
    ODConvError,
    SweepOutputError,
    SweepSettingsError,
    SweepSettingsMismatch,
    TrainingDivergedError,
)

__all__ = [
    "BASELINE",
    "DEFAULT_POLICIES",
    "FINETUNE_DEFAULTS",
    "SCRATCH_DEFAULTS",
    "SweepConfig",
    "SweepResult",
    "SweepOutputError",
    "SweepResultsWarning",
    "SweepSettingsError",
    "SweepSettingsMismatch",
    "preflight",
    "run_sweep",
    "read_results",
    "summarise",
    "markdown_table",
    "measure_latency",
]

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


def starting_model(seed: int, config: SweepConfig, data: DataBundle, factory: ModelFactory, ctx: DistContext,
                   cache_dir: Path) -> tuple[nn.Module, dict[str, Any]]:
    """A fresh model (from scratch) or a copy of the seed's trained static model, plus what to record about it."""
    if not config.from_trained:
        torch.manual_seed(seed)
        return factory(data.num_classes), {}
    model, top1 = trained_static_model(
        factory, data, seed, config.pretrain_config(seed) if config.pretrain_epochs else None, cache_dir, ctx,
        checkpoint=config.from_checkpoint, identity=config.pretrain_settings(),
    )
    return model, {"top1_static": top1}


def convert_in_place(model: nn.Module, policy: str, n: int, seed: int, config: SweepConfig,
                     variant: str = DEFAULT_VARIANT) -> int:
    """Convert ``model`` in place under ``policy`` with the sweep's init and layer settings (``BASELINE``: leave it
    static); returns how many layers were converted."""
    if policy == BASELINE:
        return 0
    from ..surgery import apply_odconv

    _, report = apply_odconv(model, policy, init=config.init, seed=seed, inplace=True,
                             **parse_variant(variant).apply_kwargs(n, config.reduction, config.attention_norm))
    return len(report.converted)


def run_configuration(
    policy: str, n: int, seed: int, config: SweepConfig, data: DataBundle, factory: ModelFactory, ctx: DistContext,
    cache_dir: Path | None = None, variant: str = DEFAULT_VARIANT, out: Path | None = None,
) -> dict[str, Any]:
    """Build (or load the trained static model), convert, train or fine-tune, evaluate and measure one
    configuration; returns its record (raises on failure). With ``config.stats``, the trained model's attention
    statistics go into ``out`` (the sweep's directory; ``sweep_stats``)."""
    model, record = starting_model(seed, config, data, factory, ctx, cache_dir or Path(PRETRAINED_DIR))
    example = data.test[0][0].unsqueeze(0)
    converted = convert_in_place(model, policy, n, seed, config, variant)
    if config.from_trained:  # what the user sees right after surgery, before any fine-tuning
        record["top1_converted"], _ = evaluate(model, data.test, device=ctx.device, num_classes=data.num_classes)
    cost = count_cost(model, example_input=example.to(next(model.parameters()).device))  # on ctx.device when trained first
    result = train_and_evaluate(model, data, config.train_config(seed), ctx)
    latency, backend = (None, "skipped")
    if config.latency and ctx.is_main:
        latency, backend = measure_latency(model, example, config.latency_runs)
    if config.stats and converted and ctx.is_main and out is not None:
        record.update(configuration_stats(
            model, data, out, (policy, n, seed, variant), batch_size=config.batch_size,
            title=f"{config.model}, {policy}, {parse_variant(variant).label(n)}, seed {seed}, on {data.name}"))
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
    (used to simulate an interruption). Before anything is trained or written: the output directory is checked
    (``check_output``: ``SweepOutputError``, ``DirectoryLocked`` when another sweep is writing to it,
    ``SweepSettingsMismatch`` when it holds results of other settings) and every setting that needs the model is
    tried on it (``preflight``: ``SweepSettingsError``). The lock is ``output_dir/.lock``, held by rank 0.
    """
    out = Path(output_dir).expanduser()
    results_path = out / RESULTS_FILE
    own_ctx = ctx is None
    ctx = ctx or init_distributed()
    lock = DirectoryLock(out, "sweep")
    try:
        _agree(ctx, lambda: check_output(out, config))
        if data is None:
            data = load_dataset(config.data, config.image_size, limit=config.limit)
        factory = model_factory or _factory_from_spec(parse_model_spec(config.model, allow_import=config.allow_import))
        preflight(config, data, factory)
        _agree(ctx, lambda: prepare_output(out, lock))
        return _run_sweep(config, out, results_path, ctx, factory, data, max_configs)
    finally:
        lock.release()
        if own_ctx:
            ctx.close()


def check_output(out: Path, config: SweepConfig | None = None) -> None:
    """Refuse an output directory the sweep cannot or must not write to, without writing anything: a file where
    the directory should be, a results path that is not a regular file, a lock held by another sweep, files the
    sweep did not write at its output paths (``sweep_manifest``), results of other settings (with ``config``)."""
    results_path = out / RESULTS_FILE
    if os.path.lexists(out) and not out.is_dir():
        raise SweepOutputError(f"{out} is not a directory; give the sweep an output directory (-o DIR) for its results")
    if os.path.lexists(results_path) and (results_path.is_symlink() or not results_path.is_file()):
        raise SweepOutputError(f"{results_path} is not a regular file; move it away so the sweep can append its results")
    DirectoryLock(out, "sweep").check_free()
    _refuse_foreign(out)
    if config is not None:
        _check_settings(read_results(results_path, warn=False), config.settings(), results_path)


def _refuse_foreign(out: Path) -> None:
    foreign = foreign_outputs(out)
    if foreign:
        raise SweepOutputError(
            f"{out} holds files the sweep did not write at its output paths ({', '.join(foreign[:8])}"
            f"{' ...' if len(foreign) > 8 else ''}); they were not touched. Use another output directory (-o), or "
            "move them away"
        )


def _check_settings(existing: list[dict[str, Any]], settings: dict[str, Any], results_path: Path) -> None:
    for rec in existing:
        if rec.get("settings") != settings:
            diff = {k: (rec.get("settings", {}).get(k), v) for k, v in settings.items() if rec.get("settings", {}).get(k) != v}
            raise SweepSettingsMismatch(
                f"{results_path} holds results of a sweep with other settings (recorded vs now: {diff}). "
                "Use another output directory, or move that results file away to start over."
            )


def preflight(config: SweepConfig, data: DataBundle, factory: ModelFactory) -> None:
    """Try every setting that only the model can check, before any training: build the model, load ``--from``
    into it, and convert a copy for every (policy, n). Raises ``SweepSettingsError`` naming the setting."""
    import copy

    from ..surgery import apply_odconv

    torch.manual_seed(0)
    model = factory(data.num_classes)
    if config.from_checkpoint is not None:
        load_static_checkpoint(model, config.from_checkpoint)
    for policy, n, _, variant in config.configurations():
        if policy == BASELINE:
            continue
        try:
            apply_odconv(copy.deepcopy(model), policy, init=config.init, seed=0, inplace=True,
                         **parse_variant(variant).apply_kwargs(n, config.reduction, config.attention_norm))
        except (ValueError, TypeError, KeyError, RuntimeError, MemoryError) as exc:
            raise SweepSettingsError(
                f"sweep settings policy {policy!r} with kernel number {n} and variant {variant!r} (--policies, -n, "
                f"--variants) cannot convert {config.model}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            ) from exc


def prepare_output(out: Path, lock: DirectoryLock | None = None) -> None:
    """Create the directory, take its lock and check the results file can be appended to, before any training.

    Without ``lock`` the lock is only tried (taken and released): a probe for a launcher that starts the sweep
    in other processes.
    """
    results_path = out / RESULTS_FILE
    probe = lock is None
    lock = lock or DirectoryLock(out, "sweep")
    check_output(out)
    out.mkdir(parents=True, exist_ok=True)
    lock.acquire()
    try:
        _refuse_foreign(out)  # again, now that no other sweep can write here
        if not probe:
            with open_for_append(results_path):  # fails now (permissions, read-only disk, a link), not after training
                pass
            record_owned(out, results_path)
    finally:
        if probe:
            lock.release()


def _agree(ctx: DistContext, step: Callable[[], None]) -> None:
    """Run ``step`` on rank 0 and raise its error on every rank, so no rank waits at a barrier for a failed one."""
    error: BaseException | None = None
    if ctx.is_main:
        try:
            step()
        except (ODConvError, OSError) as exc:  # output, lock, settings-mismatch and foreign-file refusals
            error = exc
    if ctx.distributed:
        import torch.distributed as dist

        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if error is not None:
        raise error


def _run_sweep(config: SweepConfig, out: Path, results_path: Path, ctx: DistContext, factory: ModelFactory,
               data: DataBundle, max_configs: int | None) -> SweepResult:
    settings = config.settings()
    existing = read_results(results_path, warn=ctx.is_main)
    _check_settings(existing, settings, results_path)
    done = {key for key, rec in _latest(existing).items() if rec.get("status") == "ok"}
    todo = [c for c in config.configurations() if config_key(*c) not in done]
    if config.stats and ctx.is_main:
        warn_missing_stats(rec for key, rec in _latest(existing).items() if key in done)
    skipped = len(config.configurations()) - len(todo)
    ctx.barrier()  # every rank has read the file before rank 0 appends to it

    torch_threads = torch.get_num_threads()

    bar = None
    if ctx.is_main and not config.quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(config.configurations()), initial=skipped, desc="sweep", unit="cfg")
    try:
        for i, (policy, n, seed, variant) in enumerate(todo):
            if max_configs is not None and i >= max_configs:
                break
            key = config_key(policy, n, seed, variant)
            if bar is not None:
                bar.set_postfix_str(key)
            record: dict[str, Any] = {"key": key, "policy": policy, "kernel_num": n, "seed": seed, "settings": settings,
                                      "dataset": data.name}
            if variant != DEFAULT_VARIANT:
                record["variant"] = variant
            start = time.perf_counter()
            try:
                record.update(run_configuration(policy, n, seed, config, data, factory, ctx, out / PRETRAINED_DIR,
                                                variant, out))
            except KeyboardInterrupt:
                raise
            except TrainingDivergedError as exc:  # recorded as such, not as an ok row at chance accuracy
                record.update({"status": "diverged", "error": f"{type(exc).__name__}: {exc}"})
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
    summary = summarise(records, config.policies, config.variants)
    files: dict[str, Path] = {"results": results_path}
    if ctx.is_main:
        dataset = records[0].get("dataset", data.name) if records else data.name
        files.update(write_outputs(records, summary, out, settings=settings, title=config.title(dataset)))
        if config.stats and (out / STATS_DIR).is_dir():
            files["stats"] = out / STATS_DIR
    return SweepResult(records, summary, files, skipped)
