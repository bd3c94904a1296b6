"""Save and load converted models: weights plus the recipe that rebuilds the architecture."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .atomic_file import atomic_write, open_for_read
from .nn.converted import CONVERTED_TYPES, converted_layers
from .recipe import Recipe, apply_recipe, get_recipe
from .errors import CheckpointMismatchError  # noqa: F401 - raised here, defined with every error

FORMAT = "odconv-surgery/checkpoint-v1"


def save(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write ``{format, recipe, state_dict}`` to ``path`` (``~`` expanded) and return the path written.

    The write is atomic and durable (``atomic_file.atomic_write``: temp file, fsync, rename, fsync of the
    directory), a new file follows the umask, and a read-only target is refused (``ReadOnlyTargetError``) rather
    than replaced, as are links, devices, FIFOs and a file that is not a checkpoint (``atomic_write``). Refuses a model whose recipe does not describe exactly its ODConv2d layers (it would not load).
    """
    from .surgery import unwrap_parallel

    model = unwrap_parallel(model)
    recipe = get_recipe(model)
    if recipe is None:
        raise ValueError("model has no ODConv recipe: convert it with apply_odconv() (or load()) before save()")
    check_recipe_covers(model, recipe)
    payload = {"format": FORMAT, "recipe": recipe.to_dict(), "state_dict": model.state_dict()}
    return atomic_write(path, lambda fh: torch.save(payload, fh), replaces="checkpoint")


def check_recipe_covers(model: nn.Module, recipe: Recipe) -> None:
    """Every converted layer of ``model`` (``ODConv2d``, ``ODLinear``) is named by the recipe and every recipe layer
    is one, or ``ValueError``."""
    by_name = dict(model.named_modules(remove_duplicate=False))
    not_odconv = sorted(name for name in recipe.layers if not isinstance(by_name.get(name), CONVERTED_TYPES))
    described = {id(by_name[name]) for name in recipe.layers if name in by_name}
    undescribed = sorted(name for name, m in converted_layers(model).items() if id(m) not in described)
    if not_odconv or undescribed:
        raise ValueError(
            f"the model's recipe does not match its ODConv2d layers (recipe layers that are not ODConv2d: "
            f"{not_odconv or 'none'}; ODConv2d layers the recipe does not name: {undescribed or 'none'}), so the "
            "checkpoint could not be loaded; convert with apply_odconv() rather than swapping layers by hand"
        )


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[Recipe, dict]:
    """Recipe and state_dict of a checkpoint, loaded with ``weights_only=True``."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a checkpoint file; give the .pt file written by save()")
    with open_for_read(path) as fh:  # a FIFO or device is refused here rather than blocked on
        try:
            payload = torch.load(fh, map_location=map_location, weights_only=True)
        except Exception as err:
            raise ValueError(f"{path} is not a readable odconv-surgery checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not an odconv-surgery checkpoint (expected format {FORMAT!r}); write it with odconv_surgery.save()")
    if not isinstance(payload.get("recipe"), dict) or not isinstance(payload.get("state_dict"), dict):
        raise ValueError(f"{path} is a damaged odconv-surgery checkpoint (no recipe or state_dict); save it again")
    return Recipe.from_dict(payload["recipe"]), payload["state_dict"]


def state_dict_mismatch(model: nn.Module, state: dict) -> tuple[list[str], list[str], list[str]]:
    """Keys of ``state`` that ``model`` lacks or expects, and mis-shaped keys ("key: checkpoint S vs model S")."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    )
    return missing, unexpected, shapes


def load(base_model: nn.Module, path: str | os.PathLike, *, map_location: str | torch.device = "cpu", inplace: bool = False) -> nn.Module:
    """Rebuild the converted architecture on ``base_model`` from the checkpoint's recipe and load its weights.

    Raises ``CheckpointMismatchError`` listing missing, unexpected and mis-shaped keys when they do not fit.
    """
    import copy

    from .surgery import unwrap_parallel

    recipe, state = read_checkpoint(path, map_location)
    model = unwrap_parallel(base_model)
    if not inplace:
        model = copy.deepcopy(model)
    try:
        apply_recipe(model, recipe)
    except (KeyError, TypeError) as err:
        raise CheckpointMismatchError(f"checkpoint {path} does not match {type(model).__name__}: {err}") from err
    missing, unexpected, shapes = state_dict_mismatch(model, state)
    if missing or unexpected or shapes:
        def show(items: list[str]) -> str:
            return ", ".join(items[:20]) + (f" ... (+{len(items) - 20})" if len(items) > 20 else "") if items else "none"

        raise CheckpointMismatchError(
            f"checkpoint {path} does not match {type(model).__name__} rebuilt from its recipe "
            f"(policy={recipe.policy}). Missing keys: {show(missing)}. Unexpected keys: {show(unexpected)}. "
            f"Shape mismatches: {show(shapes)}. Load it onto the same architecture it was saved from."
        )
    model.load_state_dict(state)
    return model
