"""The serialisable description of a rewrite: policy, hyper-parameters and the per-layer settings used."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .nn.odconv import ODConv2d
from .passes.fx.swap_modules import swap_module
from .errors import CheckpointMismatchError  # noqa: F401 - raised here, defined with every error
from .nn.attention import ATTENTION_NORMS
from .nn.odconv import INIT_MODES
from .nn.validation import LAYER_KEYS, check_bool, check_choice, check_int, check_layer_settings, check_number

RECIPE_ATTRIBUTE = "odconv_recipe"


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("odconv-surgery")
    except Exception:  # running from a source tree that is not installed
        return "0+unknown"


@dataclass
class Recipe:
    """Enough to rebuild the converted architecture from the original model."""

    policy: str | None
    kernel_num: int
    reduction: float
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)  # conv name -> ODConv2d settings
    share_attention: bool = True
    attention_norm: str = "bn"
    min_attention_channels: int = 16
    init: str = "pretrained"
    version: str = field(default_factory=package_version)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        """A recipe read from a file, every value checked like the matching argument of ``apply_odconv``
        (``CheckpointMismatchError`` naming the field otherwise): a checkpoint is data from anywhere."""
        if not isinstance(data, dict):
            raise CheckpointMismatchError(f"the recipe must be a dict, got {type(data).__name__}; save the model again")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise CheckpointMismatchError(f"recipe has unknown fields {sorted(map(str, unknown))}; was it written by a newer odconv-surgery?")
        try:
            return cls(**_checked_fields(data))
        except (TypeError, ValueError) as exc:
            if isinstance(exc, CheckpointMismatchError):
                raise
            raise CheckpointMismatchError(f"the checkpoint's recipe is invalid: {' '.join(str(exc).split())[:300]}") from None


def _checked_fields(data: dict[str, Any]) -> dict[str, Any]:
    out = dict(data)
    if out.get("policy") is not None and not isinstance(out["policy"], str):
        raise TypeError(f"recipe policy must be a string or None, got {type(out['policy']).__name__}")
    if "kernel_num" in out:
        out["kernel_num"] = check_int("recipe kernel_num", out["kernel_num"], minimum=1)
    if "reduction" in out:
        out["reduction"] = check_number("recipe reduction", out["reduction"], above=0, at_most=1)
    if "min_attention_channels" in out:
        out["min_attention_channels"] = check_int("recipe min_attention_channels", out["min_attention_channels"], minimum=1)
    if "share_attention" in out:
        out["share_attention"] = check_bool("recipe share_attention", out["share_attention"])
    if "attention_norm" in out:
        out["attention_norm"] = check_choice("recipe attention_norm", out["attention_norm"], ATTENTION_NORMS)
    if "init" in out:
        out["init"] = check_choice("recipe init", out["init"], INIT_MODES)
    if "version" in out and not isinstance(out["version"], str):
        raise TypeError(f"recipe version must be a string, got {type(out['version']).__name__}")
    layers = out.get("layers", {})
    if not isinstance(layers, dict):
        raise TypeError(f"recipe layers must be a dict of layer name -> settings, got {type(layers).__name__}")
    for name, settings in layers.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"recipe layer names must be non-empty strings, got {name!r}")
        layers[name] = check_layer_settings(settings, f"recipe layer {name!r}")
    return out


def get_recipe(model: nn.Module) -> Recipe | None:
    return getattr(model, RECIPE_ATTRIBUTE, None)


def attach_recipe(model: nn.Module, recipe: Recipe) -> None:
    # object.__setattr__ keeps nn.Module from treating it as a submodule/parameter.
    object.__setattr__(model, RECIPE_ATTRIBUTE, recipe)


def apply_recipe(model: nn.Module, recipe: Recipe) -> nn.Module:
    """Convert the layers a recipe names, in place, with fresh weights (a checkpoint load overwrites them)."""
    from .surgery import check_conversion_memory

    modules = dict(model.named_modules())
    missing = [name for name in recipe.layers if name not in modules]
    if missing:
        raise KeyError(f"the recipe converts layers the model does not have: {missing}. Is this the same architecture?")
    wrong = [name for name in recipe.layers if not isinstance(modules[name], (nn.Conv2d, ODConv2d))]
    if wrong:
        raise TypeError(f"recipe layer {wrong[0]!r} is a {type(modules[wrong[0]]).__name__}, expected nn.Conv2d")
    # Every bank, attention branch and init temporary counted before anything is allocated (a crafted recipe).
    check_conversion_memory((name, modules[name], settings) for name, settings in recipe.layers.items()
                            if not isinstance(modules[name], ODConv2d))
    for name, settings in recipe.layers.items():
        conv = modules[name]
        if isinstance(conv, ODConv2d):
            continue
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"recipe layer {name!r} is a {type(conv).__name__}, expected nn.Conv2d")
        with torch.no_grad():
            layer = ODConv2d.from_conv(conv, init="scratch", **{k: settings[k] for k in LAYER_KEYS if k in settings})
        swap_module(model, conv, layer)
    attach_recipe(model, recipe)
    return model
