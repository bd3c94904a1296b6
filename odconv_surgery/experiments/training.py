"""Train / evaluate loop with the paper's recipe scaled down, single process or DistributedDataParallel.

Paper (Appendix A.2, MobileNetV2): SGD, momentum 0.9, weight decay 4e-5, lr 0.05 (batch 256) decayed to zero
in one cosine cycle, temperature annealed linearly 30 -> 1 over the first 10 of 150 epochs. Here: the same
optimiser, weight decay and cosine schedule per step, the temperature annealed over the first 10 % of steps,
and a few epochs on a small dataset. Under ``torchrun`` the model is wrapped in DDP (gloo on CPU, nccl on GPU)
and ODConv attention BatchNorms become SyncBatchNorm.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from ..errors import DatasetError, InvalidValueError, TrainingDivergedError
from ..nn.optim import ATTENTION_LR_SCALE, param_groups
from ..nn.temperature import TemperatureSchedule, set_temperature
from .data import DataBundle
from .distributed import DistContext, convert_attention_sync_batchnorm

__all__ = ["TrainConfig", "TrainResult", "train_and_evaluate", "evaluate"]


@dataclass
class TrainConfig:
    """Scaled-down paper recipe; ``max_steps_per_epoch`` caps steps for smoke tests."""

    epochs: int = 6
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    anneal_fraction: float = 0.1
    temperature_start: float = 30.0
    temperature_end: float = 1.0
    seed: int = 0
    max_steps_per_epoch: int | None = None
    grad_clip: float | None = None
    attention_lr_scale: float = ATTENTION_LR_SCALE  # the attention branches' lr relative to lr (param_groups)
    eval_batch_size: int = 256
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise InvalidValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise InvalidValueError(f"batch_size must be >= 2 (BatchNorm cannot train on one sample), got {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InvalidValueError(f"lr must be a finite number > 0, got {self.lr}")
        if not (math.isfinite(self.attention_lr_scale) and self.attention_lr_scale >= 0):
            raise InvalidValueError(f"attention_lr_scale must be a finite number >= 0, got {self.attention_lr_scale}")
        if not 0 <= self.anneal_fraction <= 1:
            raise InvalidValueError(f"anneal_fraction must be in [0, 1], got {self.anneal_fraction}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    top1: float
    top5: float | None
    final_loss: float
    steps: int
    seconds: float
    world_size: int = 1
    sync_batchnorms: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def _topk(logits: torch.Tensor, labels: torch.Tensor, k: int) -> int:
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return int((top == labels.unsqueeze(1)).any(dim=1).sum())


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 256, device: torch.device | str = "cpu", num_classes: int | None = None) -> tuple[float, float | None]:
    """Top-1 and top-5 accuracy in percent (top-5 is ``None`` when there are 5 classes or fewer)."""
    was_training = model.training
    model.eval()
    correct1 = correct5 = total = 0
    classes = num_classes
    try:
        for images, labels in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            images, labels = images.to(device), labels.to(device)
            logits = model(images)
            classes = classes or logits.shape[1]
            correct1 += _topk(logits, labels, 1)
            correct5 += _topk(logits, labels, 5)
            total += labels.numel()
    finally:
        model.train(was_training)
    if total == 0:
        raise DatasetError("the evaluation dataset is empty")
    top5 = 100.0 * correct5 / total if (classes or 0) > 5 else None
    return 100.0 * correct1 / total, top5


def train_and_evaluate(model: nn.Module, data: DataBundle, config: TrainConfig, ctx: DistContext | None = None) -> TrainResult:
    """Train ``model`` on ``data.train`` with the scaled-down recipe, then evaluate on ``data.test``.

    ``ctx`` from ``init_distributed()`` enables DDP; the returned accuracy is on the full test set (every
    rank evaluates the same, complete test set, so all ranks return the same numbers). The model is left in
    eval mode at temperature 1, unwrapped from DDP.
    """
    ctx = ctx or DistContext()
    device = ctx.device
    torch.manual_seed(config.seed)
    model.to(device)
    sync_bns = 0
    train_model: nn.Module = model
    if ctx.distributed:
        sync_bns = convert_attention_sync_batchnorm(model, device.type)
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    n_train = len(data.train)
    per_rank = max(1, n_train // ctx.world_size)
    batch_size = min(config.batch_size, per_rank)
    if batch_size < 2:
        raise DatasetError(f"training set too small: {n_train} images for {ctx.world_size} process(es); need >= 2 per process")
    generator = torch.Generator().manual_seed(config.seed)
    sampler = DistributedSampler(data.train, ctx.world_size, ctx.rank, shuffle=True, seed=config.seed, drop_last=True) if ctx.distributed else None
    loader = DataLoader(
        data.train, batch_size=batch_size, shuffle=sampler is None, sampler=sampler, drop_last=True, generator=generator if sampler is None else None
    )
    steps_per_epoch = len(loader) if config.max_steps_per_epoch is None else min(len(loader), config.max_steps_per_epoch)
    total_steps = steps_per_epoch * config.epochs
    schedule = TemperatureSchedule(math.ceil(config.anneal_fraction * total_steps), config.temperature_start, config.temperature_end)

    optimizer = torch.optim.SGD(
        param_groups(model, config.lr, config.weight_decay, config.attention_lr_scale), lr=config.lr, momentum=config.momentum
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps))))

    start = time.perf_counter()
    history, loss_value = _train_epochs(
        model, train_model, loader, sampler, optimizer, scheduler, schedule,
        config=config, steps_per_epoch=steps_per_epoch, device=device, show=config.progress and ctx.is_main,
    )
    seconds = time.perf_counter() - start
    set_temperature(model, config.temperature_end)
    top1, top5 = evaluate(model, data.test, batch_size=config.eval_batch_size, device=device, num_classes=data.num_classes)
    model.eval()
    return TrainResult(top1, top5, loss_value, total_steps, seconds, ctx.world_size, sync_bns, history)


def _train_epochs(
    model: nn.Module,
    train_model: nn.Module,
    loader: DataLoader,
    sampler: DistributedSampler | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    schedule: TemperatureSchedule,
    *,
    config: TrainConfig,
    steps_per_epoch: int,
    device: torch.device,
    show: bool,
) -> tuple[list[dict[str, float]], float]:
    """``config.epochs`` epochs of ``steps_per_epoch`` steps (temperature, clipping, LR schedule per step); the
    per-epoch history and the last epoch's mean loss. ``train_model`` is ``model`` or its DDP wrapper."""
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs, desc="epochs", leave=False, unit="ep")
    history: list[dict[str, float]] = []
    loss_value = float("nan")
    train_model.train()
    try:
        for epoch in range(config.epochs):
            if sampler is not None:
                sampler.set_epoch(epoch)
            running, seen = 0.0, 0
            for step, (images, labels) in enumerate(loader):
                if step >= steps_per_epoch:
                    break
                images, labels = images.to(device), labels.to(device)
                temperature = schedule.step(model)
                loss = F.cross_entropy(train_model(images), labels)
                if not torch.isfinite(loss):
                    raise TrainingDivergedError(f"training diverged (loss {loss.item()}) at epoch {epoch}, step {step}; lower the learning rate")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                _check_finite_weights(model, epoch, step)
                scheduler.step()
                running += float(loss.detach()) * labels.numel()
                seen += labels.numel()
            loss_value = running / max(seen, 1)
            history.append({"epoch": epoch + 1, "loss": loss_value, "temperature": temperature, "lr": scheduler.get_last_lr()[0]})
            if bar is not None:
                bar.set_postfix(loss=f"{loss_value:.3f}")
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return history, loss_value


def _check_finite_weights(model: nn.Module, epoch: int, step: int) -> None:
    """Raise ``TrainingDivergedError`` when a step left a non-finite parameter or buffer (one fused check)."""
    tensors = [t.detach() for t in (*model.parameters(), *model.buffers()) if t.is_floating_point() and t.numel()]
    if tensors and not bool(torch.stack([t.float().sum() for t in tensors]).isfinite().all()):
        bad = next(name for name, t in (*model.named_parameters(), *model.named_buffers())
                   if t.is_floating_point() and not bool(torch.isfinite(t.detach()).all()))
        raise TrainingDivergedError(
            f"training diverged: {bad} is not finite after epoch {epoch}, step {step}; lower the learning rate"
        )
