"""The serialisable description of a rewrite: policy, hyper-parameters and the per-layer settings used."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .nn.odconv import ODConv2d
from .passes.fx.swap_modules import swap_module
from .nn.validation import LAYER_KEYS

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
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"recipe has unknown fields {sorted(unknown)}; was it written by a newer odconv-surgery?")
        return cls(**data)


#: ``GraphModule.meta`` key whose attributes fx sets again on a deep copy (``GraphModule.__deepcopy__`` rebuilds
#: the module from its graph and keeps only these of the instance's own attributes).
_FX_PRESERVED = "_user_preserved_attributes"


def get_recipe(model: nn.Module) -> Recipe | None:
    """The recipe ``apply_odconv`` attached to ``model`` (None for a model it did not convert)."""
    recipe = getattr(model, RECIPE_ATTRIBUTE, None)
    if recipe is None and isinstance(getattr(model, "meta", None), dict):  # a GraphModule copied with copy.copy
        recipe = model.meta.get(_FX_PRESERVED, {}).get(RECIPE_ATTRIBUTE)
    return recipe


def attach_recipe(model: nn.Module, recipe: Recipe) -> None:
    """Attach ``recipe`` to ``model`` so that it survives ``copy.deepcopy`` (fx GraphModules included)."""
    # object.__setattr__ keeps nn.Module from treating it as a submodule/parameter.
    object.__setattr__(model, RECIPE_ATTRIBUTE, recipe)
    if isinstance(model, torch.fx.GraphModule):
        model.meta.setdefault(_FX_PRESERVED, {})[RECIPE_ATTRIBUTE] = recipe


def apply_recipe(model: nn.Module, recipe: Recipe) -> nn.Module:
    """Convert the layers a recipe names, in place, with fresh weights (a checkpoint load overwrites them)."""
    modules = dict(model.named_modules())
    missing = [name for name in recipe.layers if name not in modules]
    if missing:
        raise KeyError(f"the recipe converts layers the model does not have: {missing}. Is this the same architecture?")
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
