"""The serialisable description of a rewrite: policy, hyper-parameters and the per-layer settings used."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn

from .nn.odconv import ODConv2d
from .passes.fx.swap_modules import swap_module
from .nn.options import LAYER_KEYS, LayerOptions
from .nn.validation import check_conversion_memory
from .errors import InvalidTypeError, InvalidValueError, RecipeMismatchError

RECIPE_ATTRIBUTE = "odconv_recipe"


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("odconv-surgery")
    except Exception:  # running from a source tree that is not installed
        return "0+unknown"


@dataclass
class Recipe:
    """Enough to rebuild the converted architecture from the original model.

    Serialised flat (``to_dict``): the ``LayerOptions`` fields sit beside ``policy`` and ``layers``, as they always
    have, so checkpoints written before ``options`` existed load, missing settings taking their defaults.
    """

    policy: str | None
    options: LayerOptions = field(default_factory=LayerOptions)  # the call's settings; per layer: ``layers``
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)  # conv name -> ODConv2d settings
    init: str = "pretrained"
    version: str = field(default_factory=package_version)

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, **self.options.as_dict(), "layers": copy.deepcopy(self.layers),
                "init": self.init, "version": self.version}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        own = {f.name for f in fields(cls)} - {"options"}
        unknown = set(data) - own - set(LAYER_KEYS)
        if unknown:
            raise InvalidValueError(f"recipe has unknown fields {sorted(unknown)}; was it written by a newer odconv-surgery?")
        options = LayerOptions.from_settings({k: v for k, v in data.items() if k in LAYER_KEYS}, "recipe")
        return cls(options=options, **{k: v for k, v in data.items() if k in own})


def get_recipe(model: nn.Module) -> Recipe | None:
    return getattr(model, RECIPE_ATTRIBUTE, None)


def attach_recipe(model: nn.Module, recipe: Recipe) -> None:
    # object.__setattr__ keeps nn.Module from treating it as a submodule/parameter.
    object.__setattr__(model, RECIPE_ATTRIBUTE, recipe)


def apply_recipe(model: nn.Module, recipe: Recipe) -> nn.Module:
    """Convert the layers a recipe names, in place, with fresh weights (a checkpoint load overwrites them)."""
    modules = dict(model.named_modules())
    missing = [name for name in recipe.layers if name not in modules]
    if missing:
        raise RecipeMismatchError(f"the recipe converts layers the model does not have: {missing}. Is this the same architecture?")
    todo: dict[str, tuple[nn.Conv2d, LayerOptions]] = {}
    for name, settings in recipe.layers.items():
        conv = modules[name]
        if isinstance(conv, ODConv2d):
            continue
        if not isinstance(conv, nn.Conv2d):
            raise InvalidTypeError(f"recipe layer {name!r} is a {type(conv).__name__}, expected nn.Conv2d: is this the same architecture?")
        known = {k: v for k, v in settings.items() if k in LAYER_KEYS}
        todo[name] = (conv, LayerOptions.from_settings(known, f"recipe layer {name!r}"))
    check_conversion_memory({name: (conv, options.kernel_num) for name, (conv, options) in todo.items()})
    for conv, options in todo.values():
        with torch.no_grad():
            layer = ODConv2d.from_conv(conv, init="scratch", options=options, check_memory=False)
        swap_module(model, conv, layer)
    attach_recipe(model, recipe)
    return model
