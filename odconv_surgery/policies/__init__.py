"""Placement policies (which convs become ODConv) and the include/exclude/override selectors."""

from . import builtin  # noqa: F401  (registers the built-in policies)
from .builtin import PAPER_POLICIES, last_k_blocks
from .registry import Policy, available_policies, decide, get_policy, register_policy, register_policy_factory
from .selectors import EmptySelectionError, Selector, select

__all__ = [
    "EmptySelectionError",
    "PAPER_POLICIES",
    "Policy",
    "Selector",
    "available_policies",
    "decide",
    "get_policy",
    "last_k_blocks",
    "register_policy",
    "register_policy_factory",
    "select",
]
