"""Replace a submodule under every name it is registered with, editing the original module tree in place.

Invariant: only the targeted module objects change; every other module, parameter, buffer and attribute is
untouched, so the model keeps its class, methods and the state_dict keys of untouched layers.
"""

from __future__ import annotations

from torch import nn


def aliases_of(root: nn.Module, target: nn.Module) -> list[str]:
    """Every qualified name under which ``target`` is registered in ``root`` (shared modules have several)."""
    return [name for name, module in root.named_modules(remove_duplicate=False) if module is target and name]


def set_submodule(root: nn.Module, qualified_name: str, new: nn.Module) -> None:
    """Put ``new`` at ``qualified_name`` (e.g. ``layer1.0.conv1``), keeping ``nn.Sequential``/``ModuleList`` slots."""
    parent_name, _, child = qualified_name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def swap_module(root: nn.Module, old: nn.Module, new: nn.Module) -> list[str]:
    """Replace ``old`` by ``new`` at every alias; returns the names replaced."""
    names = aliases_of(root, old)
    if not names:
        raise KeyError(f"module {type(old).__name__} is not part of {type(root).__name__}")
    for name in names:
        set_submodule(root, name, new)
    return names
