"""Distributed helpers for training under ``torchrun``: process-group setup and SyncBatchNorm for ODConv attention.

The attention trunk's BatchNorm sees one pooled vector per sample, so with small per-process batches its
statistics are noisy; DyConv/ODConv-style training synchronises them across processes. torch's
``nn.SyncBatchNorm`` only runs on GPU-like devices (and DDP rejects it in CPU modules), so on CPU (gloo) we use
``CPUSyncBatchNorm``: a BatchNorm whose training statistics are all-reduced with differentiable collectives
(``torch.distributed.nn``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..errors import UnavailableFeatureError
from ..nn.attention import ODAttention

__all__ = ["DistContext", "init_distributed", "CPUSyncBatchNorm", "convert_attention_sync_batchnorm", "is_sync_batchnorm", "is_main_process"]


@dataclass
class DistContext:
    """Where this process stands: ``world_size`` 1 means plain single-process training."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        """Destroy the process group if ``init_distributed`` created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def init_distributed(device: str | None = None) -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment (gloo on CPU, nccl on GPU).

    Without ``WORLD_SIZE`` > 1 in the environment this is a no-op returning a single-process context.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    want_cuda = device == "cuda" or (device is None and torch.cuda.is_available())
    if world_size <= 1:
        return DistContext(device=torch.device("cuda" if want_cuda else (device or "cpu")))
    if not dist.is_available():
        raise UnavailableFeatureError("torch.distributed is not available in this torch build; run without torchrun")
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    backend = "nccl" if dev.type == "cuda" else "gloo"
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
        owns = True
    return DistContext(rank, world_size, local_rank, dist.get_backend(), dev, owns)


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """Synchronised BatchNorm for CPU processes: batch statistics are summed over all processes.

    It subclasses ``nn.BatchNorm2d``, not ``nn.SyncBatchNorm``, because DDP refuses ``nn.SyncBatchNorm`` in CPU
    modules. Outside training or outside a process group it is a plain BatchNorm.
    """

    def __init__(self, *args, process_group: "dist.ProcessGroup | None" = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.process_group = process_group

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - nn.Module signature
        need_sync = (
            self.training
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size(self.process_group or dist.group.WORLD) > 1
        )
        if not need_sync:
            return super().forward(input)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            from torch.distributed.nn.functional import all_reduce

        self._check_input_dim(input)
        channels = input.shape[1]
        dims = [0, *range(2, input.dim())]
        count = torch.tensor([input.numel() / channels], dtype=input.dtype, device=input.device)
        stats = torch.cat([input.sum(dims), (input * input).sum(dims), count])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            stats = all_reduce(stats, group=self.process_group or dist.group.WORLD)  # differentiable
        total = stats[-1]
        mean = stats[:channels] / total
        var = (stats[channels : 2 * channels] / total - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var.detach() * total / (total - 1).clamp_min(1)
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
        shape = [1, channels] + [1] * (input.dim() - 2)
        out = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def _to_sync(bn: nn.BatchNorm2d, device_type: str) -> nn.Module:
    cls = nn.SyncBatchNorm if device_type == "cuda" else CPUSyncBatchNorm
    sync = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    if bn.affine:
        with torch.no_grad():
            sync.weight = bn.weight
            sync.bias = bn.bias
    sync.running_mean = bn.running_mean
    sync.running_var = bn.running_var
    sync.num_batches_tracked = bn.num_batches_tracked
    sync.train(bn.training)
    return sync


def is_sync_batchnorm(module: nn.Module) -> bool:
    """True for ``nn.SyncBatchNorm`` and ``CPUSyncBatchNorm``."""
    return isinstance(module, (nn.SyncBatchNorm, CPUSyncBatchNorm))


def convert_attention_sync_batchnorm(model: nn.Module, device_type: str | None = None) -> int:
    """Replace the BatchNorm of every ODConv attention with a SyncBatchNorm; returns how many were converted.

    Uses ``nn.SyncBatchNorm`` on CUDA and ``CPUSyncBatchNorm`` otherwise. Other BatchNorms are left alone
    (convert them with ``nn.SyncBatchNorm.convert_sync_batchnorm`` if wanted).
    """
    if device_type is None:
        ref = next(iter(model.parameters()), None)
        device_type = ref.device.type if ref is not None else "cpu"
    count = 0
    for module in model.modules():
        if isinstance(module, ODAttention) and isinstance(module.norm, nn.BatchNorm2d) and not is_sync_batchnorm(module.norm):
            module.norm = _to_sync(module.norm, device_type)
            count += 1
    return count
