"""Where a model spec may build a model from: a registry of sources, none of which runs code the spec names.

A spec is text that may come from a command line, a sweep's settings or a file beside a shared checkpoint, so
it must not be able to call arbitrary Python (``os:system?command=...``). The registered sources build only
models their library lists:

* ``torchvision:NAME``: a name in ``torchvision.models.list_models()``, built with ``torchvision.models.get_model``
  with every weights argument (``weights``, ``weights_backbone``, ...) ``None`` unless the spec names it, so no
  weights are downloaded or read from the torch hub cache unless asked;
* ``timm:NAME``: a model timm knows (``timm.is_model``), built with ``timm.create_model`` (when timm is installed);
* ``entrypoint:NAME``: a factory an installed package declares in the ``odconv_surgery.models`` entry-point group
  (``[project.entry-points."odconv_surgery.models"] NAME = "pkg.module:factory"``).

Weights a torchvision or timm spec does name are loaded with ``torch.load(weights_only=True)`` forced
(``weights_only_loads``): a pickle planted in a shared ``$TORCH_HOME`` cache is refused, never run.

Any other ``module:callable`` imports and calls what the spec names: with ``allow_import=True`` (the CLI's
``--allow-import``) that runs arbitrary code, the module's import included, and no check can make it safe, so opt
in only for specs you trust. The few refusals that remain (standard-library and torch functions, dunder names,
objects that are neither an ``nn.Module`` class nor a Python function) catch mistakes; they are not a sandbox.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.metadata
import importlib.util
import inspect
import math
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from torch import nn
from ..errors import ImportNotAllowedError, ModelSpecError  # noqa: F401 - raised here, defined with every error

__all__ = [
    "ENTRY_POINT_GROUP",
    "ImportNotAllowedError",
    "ModelSpecError",
    "available_sources",
    "weights_only_loads",
    "model_names",
    "resolve_factory",
]

ENTRY_POINT_GROUP = "odconv_surgery.models"
ALLOW_IMPORT_HINT = "pass --allow-import (allow_import=True in Python), which runs that code, only if you trust it"


_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Within the block every ``torch.load`` runs with ``weights_only=True``, whatever its caller passes (torch's
    ``TORCH_FORCE_WEIGHTS_ONLY_LOAD``; process-wide while the block runs, restored after)."""
    names = ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    with _ENV_LOCK:
        saved = {name: os.environ.get(name) for name in names}
        os.environ[names[0]] = "1"
        os.environ.pop(names[1], None)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


class _Source:
    """A registered model source: lists model names and builds one by name."""

    prefix = ""

    def unavailable(self) -> str | None:
        """Why the source cannot be used here (e.g. the library is not installed), or None."""
        return None

    def names(self) -> list[str]:
        raise NotImplementedError

    def knows(self, name: str) -> bool:
        return name in self.names()

    def create(self, name: str, kwargs: dict[str, Any]) -> nn.Module:
        raise NotImplementedError


class _Torchvision(_Source):
    prefix = "torchvision"

    def names(self) -> list[str]:
        import torchvision.models as tvm

        return tvm.list_models()

    def create(self, name: str, kwargs: dict[str, Any]) -> nn.Module:
        import torchvision.models as tvm

        # Every weights argument (weights_backbone defaults to ImageNet for segmentation and detection) is None
        # unless the spec names it: no implicit download, no unpickling from the hub cache.
        builder = inspect.signature(tvm.get_model_builder(name)).parameters
        unnamed = {arg: None for arg in builder if arg.startswith("weights") and arg not in kwargs}
        with weights_only_loads():
            return tvm.get_model(name, **{"weights": None, **unnamed, **kwargs})


class _Timm(_Source):
    prefix = "timm"
    # create_model arguments that read or write files, or take structured configs: not for a text spec.
    REFUSED_KWARGS = ("checkpoint_path", "cache_dir", "pretrained_cfg", "pretrained_cfg_overlay")

    def unavailable(self) -> str | None:
        return None if importlib.util.find_spec("timm") else "timm is not installed (pip install timm)"

    def names(self) -> list[str]:
        import timm

        return timm.list_models()

    def knows(self, name: str) -> bool:
        import timm

        # 'resnet18' and tagged names such as 'resnet18.a1_in1k'; hub sources ('hf-hub:...') are not models here.
        return ":" not in name and timm.is_model(name)

    def create(self, name: str, kwargs: dict[str, Any]) -> nn.Module:
        import timm

        refused = sorted(set(kwargs) & set(self.REFUSED_KWARGS))
        if refused:
            raise ModelSpecError(
                f"timm argument(s) {refused} are not accepted in a model spec; build the model in Python and "
                "load weights there (timm.create_model / odconv_surgery.load)"
            )
        with weights_only_loads():
            return timm.create_model(name, **kwargs)


class _EntryPoints(_Source):
    prefix = "entrypoint"

    def _points(self) -> dict[str, list[importlib.metadata.EntryPoint]]:
        points: dict[str, list[importlib.metadata.EntryPoint]] = {}
        for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            points.setdefault(point.name, []).append(point)
        return points

    def names(self) -> list[str]:
        return sorted(self._points())

    def create(self, name: str, kwargs: dict[str, Any]) -> nn.Module:
        points = {p.value: p for p in self._points()[name]}  # one package installed twice declares one value
        if len(points) > 1:
            raise ModelSpecError(
                f"entry point {name!r} ({ENTRY_POINT_GROUP}) is declared more than once: {sorted(points)}; "
                "uninstall one of the packages"
            )
        return next(iter(points.values())).load()(**kwargs)


_SOURCES: dict[str, _Source] = {s.prefix: s for s in (_Torchvision(), _Timm(), _EntryPoints())}


def available_sources() -> list[str]:
    """Prefixes of the registered sources usable here (``timm`` only when it is installed)."""
    return [prefix for prefix, source in _SOURCES.items() if source.unavailable() is None]


def model_names(source: str) -> list[str]:
    """The model names a registered source can build."""
    return _registered(source).names()


def is_registered(source: str) -> bool:
    return source in _SOURCES


def _registered(source: str) -> _Source:
    if source not in _SOURCES:
        raise ModelSpecError(f"unknown model source {source!r}; registered sources: {', '.join(_SOURCES)}")
    found = _SOURCES[source]
    reason = found.unavailable()
    if reason:
        raise ModelSpecError(f"model source {source!r} is not available: {reason}")
    return found


def _unknown_name(source: _Source, name: str) -> ModelSpecError:
    close = difflib.get_close_matches(name, source.names(), n=3)
    if close:
        hint = f" Did you mean {', '.join(close)}?"
    elif source.prefix == "entrypoint":
        hint = f" Installed packages declare: {', '.join(source.names()) or 'none'} (entry-point group {ENTRY_POINT_GROUP!r})."
    else:
        hint = f" See {source.prefix}'s list_models()."
    return ModelSpecError(f"unknown {source.prefix} model {name!r}.{hint}")


def resolve_factory(source: str, name: str, *, allow_import: bool = False) -> Callable[..., nn.Module]:
    """The callable that builds ``source:name``; checks the name against the source's list before anything runs.

    ``source`` is a registered prefix, or a module path (``pkg.models``), which needs ``allow_import=True``.
    """
    if source in _SOURCES:
        registered = _registered(source)
        if not registered.knows(name):
            raise _unknown_name(registered, name)
        return lambda **kwargs: registered.create(name, dict(kwargs))
    check_import_allowed(source, name, allow_import)
    return _import_callable(source, name)


def check_import_allowed(module: str, name: str, allow_import: bool) -> None:
    """Refuse ``module:name`` without the opt-in, and any standard-library module even with it (nothing imported)."""
    spec = f"{module}:{name}"
    if not allow_import:
        raise ImportNotAllowedError(
            f"model spec {spec!r} names a Python callable to import and call, refused by default; use a registered "
            f"source ({', '.join(f'{p}:NAME' for p in _SOURCES)}) or {ALLOW_IMPORT_HINT}"
        )
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top == "builtins":
        raise ImportNotAllowedError(
            f"model spec {spec!r} names the standard-library module {module!r}, which holds no model factory; "
            "point it at your own package (pkg.module:factory)"
        )
    if any(part.startswith("__") for part in name.split(".")):
        raise ImportNotAllowedError(f"model spec {spec!r} names a dunder attribute; name a model class or factory function")


def _import_callable(module_name: str, name: str) -> Callable[..., nn.Module]:
    spec = f"{module_name}:{name}"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelSpecError(
            f"cannot import module {module_name!r} from spec {spec!r}: {exc}. "
            "Make it importable (install it or add its folder to PYTHONPATH)."
        ) from exc
    obj: Any = module
    for part in name.split("."):
        if not hasattr(obj, part):
            raise ModelSpecError(f"module {module_name!r} has no attribute {name!r} (spec {spec!r})")
        obj = getattr(obj, part)
    if isinstance(obj, type) and issubclass(obj, nn.Module):
        return obj
    if not callable(obj):
        raise ModelSpecError(f"{spec!r} is not callable; point the spec at a model factory")
    if not inspect.isfunction(obj):
        raise ImportNotAllowedError(
            f"{spec!r} is a {type(obj).__name__}, not an nn.Module class or a Python function; point the spec at a "
            "model class or factory function"
        )
    home = (getattr(obj, "__module__", None) or "").split(".")[0]
    if home in sys.stdlib_module_names or home in ("builtins", "torch"):
        raise ImportNotAllowedError(
            f"{spec!r} is {obj.__module__}.{obj.__qualname__}, a {home} function, not a model factory; point the spec at your "
            "own model class or factory function"
        )
    return obj


def check_kwargs(kwargs: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Keyword arguments for a factory: identifier names and scalar values (int, float, bool, None, str) only."""
    if not isinstance(kwargs, Mapping):
        raise ModelSpecError(f"{where}: model arguments must be a mapping of names to values, got {type(kwargs).__name__}")
    for key, value in kwargs.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ModelSpecError(f"{where}: bad argument name {key!r}; use a Python identifier")
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise ModelSpecError(
                f"{where}: argument {key}={value!r} is a {type(value).__name__}; only int, float, bool, None and str are accepted"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ModelSpecError(f"{where}: argument {key}={value!r} is not a finite number")
    return dict(kwargs)
