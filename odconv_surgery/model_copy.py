"""``copy_model``: the deep copy ``apply_odconv(inplace=False)`` converts, repaired where ``copy.deepcopy`` is not
faithful to a trainable model.

- A ``torch.jit.script`` submodule's parameters come out of ``copy.deepcopy`` as non-leaf clones (an optimizer
  refuses them: "can't optimize a non-leaf Tensor"); they are detached in place and keep their ``requires_grad``.
- The conversion recipe is an instance attribute; a module class whose ``__deepcopy__`` rebuilds the instance
  drops it (fx ``GraphModule``s keep it through ``attach_recipe``), so it is attached again.
"""

from __future__ import annotations

import copy

from torch import nn

from .recipe import attach_recipe, get_recipe


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters are all leaves (as in ``model``) and that keeps its recipe."""
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    recipe = get_recipe(model)
    copied = copy.deepcopy(model)
    for name, param in copied.named_parameters():
        if not param.is_leaf:  # a scripted submodule's parameter, cloned with its autograd history
            param.detach_().requires_grad_(requires_grad.get(name, True))
    if recipe is not None and get_recipe(copied) is None:
        attach_recipe(copied, copy.deepcopy(recipe))
    return copied


__all__ = ["copy_model"]
