"""Trained starting points for sweeps: the static model trained once per seed (cached), or the user's checkpoint.

A from-trained sweep measures the lifecycle users live through: take a trained CNN, convert it with the
function-preserving init, fine-tune. Each seed's static model is trained once and cached in the sweep's output
directory (``pretrained/static_seed<S>.pt``, with the settings that produced it), so every policy and a resumed
sweep start from the very same weights.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import InvalidValueError
from ..atomic_file import atomic_write
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


def _state_dict_from_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A static model's state dict from ``torch.save(model.state_dict())`` or a ``{"state_dict": ...}`` payload."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
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
) -> tuple[nn.Module, float]:
    """The trained static model for ``seed`` and its test top-1.

    With ``checkpoint`` the user's weights are loaded (the same for every seed). Otherwise the model is built with
    ``torch.manual_seed(seed)``, trained with ``train_config`` once and cached under ``cache_dir``; a cache written
    with other settings is retrained rather than reused.
    """
    torch.manual_seed(seed)
    model = factory(data.num_classes)
    if checkpoint is not None:
        load_static_checkpoint(model, checkpoint)
    else:
        if train_config is None:
            raise InvalidValueError("pass train_config (the pretraining recipe) or a checkpoint")
        path = cache_dir / f"static_seed{seed}.pt"
        settings = {"seed": seed, "data": data.name, **{k: v for k, v in train_config.to_dict().items() if k != "progress"}}
        cached = torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None
        if cached is not None and cached.get("settings") == settings:
            model.load_state_dict(cached["state_dict"])
        else:
            train_and_evaluate(model, data, train_config, ctx)
            if ctx.is_main:
                payload = {"settings": settings, "state_dict": model.state_dict()}
                atomic_write(path, lambda fh: torch.save(payload, fh))
            ctx.barrier()
    model.to(ctx.device).eval()
    top1, _ = evaluate(model, data.test, device=ctx.device, num_classes=data.num_classes)
    return model, top1
