"""Parse model specs such as ``torchvision:mobilenet_v2?width_mult=0.5`` or ``my.pkg.models:build?depth=3``.

A spec names a model factory and keyword arguments, so the CLI and the sweep can rebuild the same model in a
fresh process (a torchrun worker, a resumed sweep) from one string.
"""

from __future__ import annotations

import ast
import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qsl

from torch import nn

__all__ = ["ModelSpec", "ModelSpecError", "parse_model_spec", "build_model"]


class ModelSpecError(ValueError):
    """A model spec that cannot be parsed or built; the message says how to fix it."""


_FORMAT_HELP = (
    "expected 'torchvision:NAME[?key=value&...]' (e.g. 'torchvision:mobilenet_v2?width_mult=0.5&num_classes=10') "
    "or 'package.module:callable[?key=value&...]'"
)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec: ``source`` is 'torchvision' or a module path, ``name`` the callable, ``kwargs`` its args."""

    source: str
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        query = "&".join(f"{k}={_format_value(v)}" for k, v in self.kwargs.items())
        return f"{self.source}:{self.name}" + (f"?{query}" if query else "")

    def with_kwargs(self, **overrides: Any) -> "ModelSpec":
        """A copy with extra/overridden keyword arguments (e.g. ``num_classes`` from the dataset)."""
        return ModelSpec(self.source, self.name, {**self.kwargs, **overrides})

    def factory(self) -> Callable[..., nn.Module]:
        """The callable this spec names (import errors become ``ModelSpecError``)."""
        if self.source == "torchvision":
            import torchvision.models as tvm

            names = tvm.list_models()
            if self.name not in names:
                close = difflib.get_close_matches(self.name, names, n=3)
                hint = f" Did you mean {', '.join(close)}?" if close else " See torchvision.models.list_models()."
                raise ModelSpecError(f"unknown torchvision model {self.name!r}.{hint}")
            return lambda **kw: tvm.get_model(self.name, **kw)
        try:
            module = importlib.import_module(self.source)
        except ImportError as exc:
            raise ModelSpecError(
                f"cannot import module {self.source!r} from spec '{self}': {exc}. "
                "Make it importable (install it or add its folder to PYTHONPATH)."
            ) from exc
        obj: Any = module
        for part in self.name.split("."):
            if not hasattr(obj, part):
                raise ModelSpecError(f"module {self.source!r} has no attribute {self.name!r} (spec '{self}')")
            obj = getattr(obj, part)
        if not callable(obj):
            raise ModelSpecError(f"'{self.source}:{self.name}' is not callable; point the spec at a model factory")
        return obj

    def build(self, **overrides: Any) -> nn.Module:
        """Instantiate the model; ``overrides`` are added to the spec's kwargs."""
        kwargs = {**self.kwargs, **overrides}
        if self.source == "torchvision":
            kwargs.setdefault("weights", None)  # never download weights implicitly
        try:
            model = self.factory()(**kwargs)
        except TypeError as exc:
            raise ModelSpecError(f"cannot build '{self}' with arguments {kwargs}: {exc}") from exc
        if not isinstance(model, nn.Module):
            raise ModelSpecError(f"'{self}' returned {type(model).__name__}, expected a torch.nn.Module")
        return model


def _parse_value(text: str) -> Any:
    """Python literal if it is one (``0.5``, ``10``, ``True``, ``None``, ``(1, 2)``), else the string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _format_value(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def parse_model_spec(spec: str | ModelSpec) -> ModelSpec:
    """Parse ``SOURCE:NAME[?k=v&...]``; a bare torchvision model name (``resnet18``) is accepted too."""
    if isinstance(spec, ModelSpec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError(f"empty model spec; {_FORMAT_HELP}")
    spec = spec.strip()
    head, _, query = spec.partition("?")
    if ":" in head:
        source, _, name = head.rpartition(":")
    else:
        source, name = "torchvision", head
    if not source or not name:
        raise ModelSpecError(f"cannot parse model spec {spec!r}; {_FORMAT_HELP}")
    kwargs: dict[str, Any] = {}
    if query:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError as exc:
            raise ModelSpecError(f"bad arguments {query!r} in model spec {spec!r}; {_FORMAT_HELP}") from exc
        for key, value in pairs:
            if not key.isidentifier():
                raise ModelSpecError(f"bad argument name {key!r} in model spec {spec!r}; {_FORMAT_HELP}")
            kwargs[key] = _parse_value(value)
    return ModelSpec(source, name, kwargs)


def build_model(spec: str | ModelSpec, **overrides: Any) -> nn.Module:
    """Parse and build in one call."""
    return parse_model_spec(spec).build(**overrides)
