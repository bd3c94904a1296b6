"""Trained starting points for sweeps: the static model trained once per seed (cached), or the user's checkpoint.

A from-trained sweep measures the lifecycle users live through: take a trained CNN, convert it with the
function-preserving init, fine-tune. Each seed's static model is trained once and cached in the sweep's output
directory (``pretrained/static_seed<S>.pt``, with the settings that produced it), so every policy and a resumed
sweep start from the very same weights. The cache is keyed on everything that shapes that model: the training
recipe, the caller's ``identity`` (the sweep passes model spec, data path, image size and ``--limit``), a
fingerprint of the data actually loaded (sizes, shape, a digest of samples) and a digest of the freshly built
model's initial weights (architecture and constructor arguments); a cache with any other key is retrained.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import InvalidValueError
from ..atomic_file import atomic_write, open_for_read
from ..checkpoint import state_dict_mismatch
from .data import DataBundle
from .distributed import DistContext
from .training import TrainConfig, evaluate, train_and_evaluate
from ..errors import PretrainedCheckpointError  # noqa: F401 - raised here, defined with every error

CACHE_DIR = "pretrained"


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file (recorded in the sweep settings, so a changed checkpoint is not mixed with old results)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _tensor_digest(tensors: dict[str, torch.Tensor] | list[tuple[str, torch.Tensor]]) -> str:
    digest = hashlib.sha256()
    for name, tensor in (tensors.items() if isinstance(tensors, dict) else tensors):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def data_fingerprint(data: DataBundle) -> dict[str, object]:
    """What identifies the data a model was trained on: name, sizes, sample shape and a digest of a few samples."""
    picks = sorted({0, len(data.train) // 2, len(data.train) - 1}) if len(data.train) else []
    samples = []
    for i in picks:
        image, label = data.train[i]
        samples += [(f"x{i}", torch.as_tensor(image)), (f"y{i}", torch.as_tensor(label))]
    return {"name": data.name, "num_classes": data.num_classes, "train": len(data.train), "test": len(data.test),
            "samples": _tensor_digest(samples)}


def _state_dict_from_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A static model's state dict from ``torch.save(model.state_dict())`` or a ``{"state_dict": ...}`` payload."""
    try:
        with open_for_read(path) as fh:  # a FIFO or device is refused, never blocked on
            payload = torch.load(fh, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PretrainedCheckpointError(f"--from checkpoint {path} does not exist") from None
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same, actionable message
        raise PretrainedCheckpointError(
            f"{path} is not a readable weights file ({type(err).__name__}: {err}); save it with "
            "torch.save(model.state_dict(), path)"
        ) from err
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise PretrainedCheckpointError(f"{path} holds no state dict; save it with torch.save(model.state_dict(), path)")
    return payload


def load_static_checkpoint(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load the user's trained static weights into ``model``; a mismatch lists the offending keys."""
    state = _state_dict_from_file(path)
    missing, unexpected, shapes = state_dict_mismatch(model, state)
    if missing or unexpected or shapes:
        raise PretrainedCheckpointError(
            f"{path} does not fit the sweep's model: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"mis-shaped {shapes[:5]}. Pass the model spec the checkpoint was trained with (num_classes comes "
            "from the data)."
        )
    model.load_state_dict(state)
    return model


def trained_static_model(
    factory: Callable[[int], nn.Module],
    data: DataBundle,
    seed: int,
    train_config: TrainConfig | None,
    cache_dir: Path,
    ctx: DistContext,
    checkpoint: str | os.PathLike | None = None,
    identity: dict | None = None,
) -> tuple[nn.Module, float]:
    """The trained static model for ``seed`` and its test top-1.

    With ``checkpoint`` the user's weights are loaded (the same for every seed). Otherwise the model is built with
    ``torch.manual_seed(seed)``, trained with ``train_config`` once and cached under ``cache_dir``; a cache written
    with another key (module docstring; ``identity`` is the caller's part of it) is retrained rather than reused.
    """
    torch.manual_seed(seed)
    model = factory(data.num_classes)
    if checkpoint is not None:
        load_static_checkpoint(model, checkpoint)
    else:
        if train_config is None:
            raise InvalidValueError("pass train_config (the pretraining recipe) or a checkpoint")
        path = cache_dir / f"static_seed{seed}.pt"
        settings = {"seed": seed, "data": data.name, **{k: v for k, v in train_config.to_dict().items() if k != "progress"},
                    "identity": dict(identity or {}), "data_fingerprint": data_fingerprint(data),
                    "initial_weights": _tensor_digest(model.state_dict())}
        cached = _read_cache(path)
        if cached is not None and cached.get("settings") == settings:
            model.load_state_dict(cached["state_dict"])
        else:
            train_and_evaluate(model, data, train_config, ctx)
            if ctx.is_main:
                from .sweep_manifest import record_owned

                payload = {"settings": settings, "state_dict": model.state_dict()}
                atomic_write(path, lambda fh: torch.save(payload, fh), replaces="checkpoint")
                record_owned(cache_dir.parent, path)
            ctx.barrier()
    model.to(ctx.device).eval()
    top1, _ = evaluate(model, data.test, device=ctx.device, num_classes=data.num_classes)
    return model, top1


def _read_cache(path: Path) -> dict | None:
    """A cache file's payload, or None when there is none or it cannot be read (it is then retrained)."""
    if not path.exists():
        return None
    try:
        with open_for_read(path) as fh:
            payload = torch.load(fh, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a damaged cache is retrained and replaced
        return None
    return payload if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict) else None
