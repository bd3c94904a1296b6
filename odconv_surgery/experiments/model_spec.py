"""Parse model specs such as ``torchvision:mobilenet_v2?width_mult=0.5`` or ``timm:resnet18?num_classes=10``.

A spec names a model and keyword arguments, so the CLI and the sweep can rebuild the same model in a fresh
process (a torchrun worker, a resumed sweep) from one string. Specs are text from command lines and files, so
they cannot run arbitrary code: the source must be a registered one (``model_sources``), argument values are
scalars (int, float, bool, None, str), and ``module:callable`` needs the caller's explicit ``allow_import=True``.
"""

from __future__ import annotations

import math
import pickle
import re
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qsl

from torch import nn

from .model_sources import (
    ImportNotAllowedError,
    ModelSpecError,
    check_import_allowed,
    check_kwargs,
    is_registered,
    resolve_factory,
)

__all__ = ["ImportNotAllowedError", "ModelSpec", "ModelSpecError", "parse_model_spec", "build_model"]

_FORMAT_HELP = (
    "expected 'SOURCE:NAME[?key=value&...]' with SOURCE torchvision, timm or entrypoint "
    "(e.g. 'torchvision:mobilenet_v2?width_mult=0.5&num_classes=10'), or 'package.module:callable[?...]' with --allow-import"
)
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec: ``source`` a registered source or a module path, ``name`` the model, ``kwargs`` its args.

    ``allow_import`` records the caller's opt-in for a ``module:callable`` source; it is not part of the spec's text.
    """

    source: str
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    allow_import: bool = field(default=False, compare=False, repr=False)

    def __str__(self) -> str:
        query = "&".join(f"{k}={_format_value(v)}" for k, v in self.kwargs.items())
        return f"{self.source}:{self.name}" + (f"?{query}" if query else "")

    def factory(self) -> Callable[..., nn.Module]:
        """The callable this spec names, after the source's checks (nothing of the spec's choosing runs here)."""
        return resolve_factory(self.source, self.name, allow_import=self.allow_import)

    def build(self, **overrides: Any) -> nn.Module:
        """Instantiate the model; ``overrides`` are added to the spec's kwargs."""
        kwargs = check_kwargs({**self.kwargs, **overrides}, f"model spec '{self}'")
        factory = self.factory()
        try:
            model = factory(**kwargs)
        except ModelSpecError:
            raise
        except pickle.UnpicklingError as exc:  # weights_only=True refused a weights file (model_sources)
            raise ModelSpecError(
                f"cannot build '{self}': a weights file it loads is not plain weights and was refused "
                f"({' '.join(str(exc).split())[:200]}); delete it from the torch hub cache ($TORCH_HOME/hub/checkpoints) "
                "and let it download again, or leave weights out"
            ) from exc
        except OSError as exc:  # urllib's URLError included: weights requested while offline
            raise ModelSpecError(
                f"cannot build '{self}': {type(exc).__name__}: {exc}. If it was downloading weights, connect to the "
                "network or put the file in the torch hub cache ($TORCH_HOME), or leave weights out"
            ) from exc
        except (TypeError, ValueError, KeyError, OverflowError, RuntimeError, MemoryError, AssertionError) as exc:
            raise ModelSpecError(f"cannot build '{self}' with arguments {kwargs}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(model, nn.Module):
            raise ModelSpecError(f"'{self}' returned {type(model).__name__}, expected a torch.nn.Module")
        return model


def _parse_value(key: str, text: str) -> Any:
    """int, float, bool or None when the text spells one (``10``, ``0.5``, ``true``, ``None``), else the string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    if _INT.fullmatch(text):
        try:
            return int(text)
        except ValueError as exc:  # more digits than Python converts
            raise ModelSpecError(f"argument {key}={text[:20]}... is too long a number") from exc
    if _FLOAT.fullmatch(text):
        value = float(text)
        if not math.isfinite(value):
            raise ModelSpecError(f"argument {key}={text} is not a finite number (it overflows a float)")
        return value
    return text


def _format_value(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def parse_model_spec(spec: str | ModelSpec, *, allow_import: bool = False) -> ModelSpec:
    """Parse ``SOURCE:NAME[?k=v&...]``; a bare torchvision model name (``resnet18``) is accepted too.

    A ``module:callable`` spec is refused (``ImportNotAllowedError``) unless ``allow_import=True``; nothing is
    imported while parsing.
    """
    if isinstance(spec, ModelSpec):
        if allow_import and not spec.allow_import:
            spec = ModelSpec(spec.source, spec.name, spec.kwargs, True)
        if not is_registered(spec.source):
            check_import_allowed(spec.source, spec.name, spec.allow_import)
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError(f"empty model spec; {_FORMAT_HELP}")
    spec = spec.strip()
    head, _, query = spec.partition("?")
    if ":" in head:
        source, _, name = head.partition(":")
    else:
        source, name = "torchvision", head
    if not source or not name:
        raise ModelSpecError(f"cannot parse model spec {spec!r}; {_FORMAT_HELP}")
    if not is_registered(source):
        if not all(part.isidentifier() for part in (*source.split("."), *name.split("."))):
            raise ModelSpecError(f"cannot parse model spec {spec!r}; {_FORMAT_HELP}")
        check_import_allowed(source, name, allow_import)
    kwargs: dict[str, Any] = {}
    if query:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError as exc:
            raise ModelSpecError(f"bad arguments {query!r} in model spec {spec!r}; {_FORMAT_HELP}") from exc
        for key, value in pairs:
            if not key.isidentifier():
                raise ModelSpecError(f"bad argument name {key!r} in model spec {spec!r}; {_FORMAT_HELP}")
            try:
                kwargs[key] = _parse_value(key, value)
            except ModelSpecError as exc:
                raise ModelSpecError(f"{exc} in model spec {spec!r}") from None
    return ModelSpec(source, name, kwargs, allow_import)


def build_model(spec: str | ModelSpec, *, allow_import: bool = False, **overrides: Any) -> nn.Module:
    """Parse and build in one call (``allow_import`` as in ``parse_model_spec``)."""
    return parse_model_spec(spec, allow_import=allow_import).build(**overrides)
