"""The serialisable description of a rewrite: policy, hyper-parameters and the per-layer settings used."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn

from .nn.converted import CONVERTED_TYPES, as_conv, convert_layer
from .passes.fx.swap_modules import swap_module
from .nn.attention import ATTENTION_NORMS  # noqa: F401 - the recipe's attention_norm choices
from .nn.odconv import INIT_MODES
from .nn.memory import check_conversion_memory
from .nn.options import LAYER_KEYS, LayerOptions, check_layer_settings
from .nn.validation import check_choice
from .errors import CheckpointMismatchError, InvalidTypeError, RecipeMismatchError

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
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)  # conv (or Linear) name -> its layer settings
    init: str = "pretrained"
    version: str = field(default_factory=package_version)
    folded: list[str] = field(default_factory=list)  # converted, then folded back into plain convs (fold_static)

    def with_folded(self, names: Iterable[str]) -> "Recipe":
        """This recipe with the converted layers ``names`` folded back into plain convs (``fold_static``): gone from
        ``layers``, added to ``folded``."""
        names = set(names)
        return dataclasses.replace(self, layers={k: v for k, v in self.layers.items() if k not in names},
                                   folded=sorted(set(self.folded) | names))

    def to_dict(self) -> dict[str, Any]:
        out = {"policy": self.policy, **self.options.as_dict(), "layers": copy.deepcopy(self.layers),
               "init": self.init, "version": self.version}
        if self.folded:  # only when there are any: files without folds read as before
            out["folded"] = list(self.folded)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        """A recipe read from a file, every value checked like the matching argument of ``apply_odconv``
        (``CheckpointMismatchError`` naming the field otherwise): a checkpoint is data from anywhere."""
        if not isinstance(data, dict):
            raise CheckpointMismatchError(f"the recipe must be a dict, got {type(data).__name__}; save the model again")
        own = {f.name for f in fields(cls)} - {"options"}
        unknown = set(data) - own - set(LAYER_KEYS)
        if unknown:
            raise CheckpointMismatchError(f"recipe has unknown fields {sorted(map(str, unknown))}; was it written by a newer odconv-surgery?")
        try:
            options = LayerOptions.from_settings({k: v for k, v in data.items() if k in LAYER_KEYS}, "recipe")
            return cls(options=options, **_checked_fields({k: v for k, v in data.items() if k in own}))
        except (TypeError, ValueError) as exc:
            if isinstance(exc, CheckpointMismatchError):
                raise
            raise CheckpointMismatchError(f"the checkpoint's recipe is invalid: {' '.join(str(exc).split())[:300]}") from None


def _checked_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The recipe's own fields (not the layer options), each checked."""
    out = dict(data)
    if out.get("policy") is not None and not isinstance(out["policy"], str):
        raise TypeError(f"recipe policy must be a string or None, got {type(out['policy']).__name__}")
    if "init" in out:
        out["init"] = check_choice("recipe init", out["init"], INIT_MODES)
    folded = out.get("folded", [])
    if not isinstance(folded, list) or not all(isinstance(n, str) and n for n in folded):
        raise TypeError(f"recipe folded must be a list of layer names, got {folded!r}")
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
    """Convert the layers a recipe names, in place, with fresh weights (a checkpoint load overwrites them): an
    ``ODConv2d`` where the model has a conv, an ``ODLinear`` where it has a Linear."""
    modules = dict(model.named_modules())
    missing = [name for name in recipe.layers if name not in modules]
    if missing:
        raise RecipeMismatchError(f"the recipe converts layers the model does not have: {missing}. Is this the same architecture?")
    todo: dict[str, tuple[nn.Conv2d | nn.Linear, LayerOptions]] = {}
    for name, settings in recipe.layers.items():
        module = modules[name]
        if isinstance(module, CONVERTED_TYPES):
            continue
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            raise InvalidTypeError(f"recipe layer {name!r} is a {type(module).__name__}, expected nn.Conv2d or nn.Linear: "
                                   "is this the same architecture?")
        known = {k: v for k, v in settings.items() if k in LAYER_KEYS}
        todo[name] = (module, LayerOptions.from_settings(known, f"recipe layer {name!r}"))
    # Every bank, attention branch and init temporary counted before anything is allocated (a crafted recipe).
    check_conversion_memory((name, as_conv(module), options.as_dict()) for name, (module, options) in todo.items())
    for module, options in todo.values():
        with torch.no_grad():
            layer = convert_layer(module, init="scratch", options=options, check_memory=False)
        swap_module(model, module, layer)
    attach_recipe(model, recipe)
    return model
