"""Data specs: the one string that names a sweep's data, checked before anything is loaded.

A spec is a built-in set's name, optionally with arguments as a query string (``"textures?difficulty=0.5"``,
the form model specs use), or an ImageFolder root. One string lets the CLI, the sweep's settings check and a
resumed or torchrun-launched run rebuild the very same data; ``data_identity`` is what a sweep records, with
every argument's value filled in, so results made on other data are never mixed with these.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from ..errors import DatasetError, InvalidValueError
from .textures import DEFAULT_DIFFICULTY, MOTIFS, check_arguments

__all__ = ["DIGITS", "TEXTURES", "BUILTIN_DATASETS", "TEXTURE_DEFAULTS", "parse_data_spec", "check_data",
           "check_texture_arguments", "data_identity"]

DIGITS = "digits"
TEXTURES = "textures"
BUILTIN_DATASETS = (DIGITS, TEXTURES)
#: The textures' arguments and defaults. 8000 / 2000 images: about a minute of static mobilenet_v2 0.5 training
#: per seed on two CPU cores (docs/sweeps.md), a test set large enough for a top-1 standard error near 1 point.
TEXTURE_DEFAULTS: dict[str, Any] = {"train_size": 8000, "test_size": 2000, "num_classes": len(MOTIFS),
                                    "difficulty": DEFAULT_DIFFICULTY, "seed": 0}
_ARGS: dict[str, dict[str, Any]] = {DIGITS: {}, TEXTURES: TEXTURE_DEFAULTS}
_EXAMPLE = "textures?difficulty=0.5&train_size=4000"
MAX_IMAGES = 1_000_000  # per split: 3 GB of uint8 at 32 px; a larger number is more likely a typo


def parse_data_spec(data: str | os.PathLike) -> tuple[str, dict[str, Any]] | None:
    """``(name, arguments)`` of a built-in spec such as ``"textures?difficulty=0.5"``, or ``None`` when ``data``
    names no built-in set (an ImageFolder root). Unknown or mistyped arguments raise ``DatasetError``."""
    name, _, query = str(data).partition("?")
    if name not in BUILTIN_DATASETS:
        return None
    allowed = _ARGS[name]
    takes = f"{name} takes {', '.join(allowed)} (e.g. '{_EXAMPLE}')" if allowed else f"{name} takes no arguments"
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True) if query else []
    except ValueError:
        raise DatasetError(f"data spec {str(data)!r} is not NAME?key=value&...; {takes}") from None
    kwargs: dict[str, Any] = {}
    for key, text in pairs:
        if key not in allowed:
            raise DatasetError(f"data spec {str(data)!r}: unknown argument {key!r}; {takes}")
        kind = type(allowed[key])
        try:
            kwargs[key] = kind(text)
        except ValueError:
            raise DatasetError(f"data spec {str(data)!r}: {key}={text!r} is not {'an integer' if kind is int else 'a number'}; "
                               f"{takes}") from None
    return name, kwargs


def check_texture_arguments(image_size: int, train_size: int, test_size: int, num_classes: int, difficulty: float,
                            seed: int) -> None:
    """Raise ``InvalidValueError`` naming the first textures argument out of its range."""
    check_arguments(image_size=image_size, num_classes=num_classes, difficulty=difficulty, seed=seed)
    for what, size, low in (("train_size", train_size, 2), ("test_size", test_size, 1)):
        if not isinstance(size, int) or isinstance(size, bool) or not low <= size <= MAX_IMAGES:
            raise InvalidValueError(f"textures: {what} must be an integer in [{low}, {MAX_IMAGES}], got {size!r}")


def check_data(data: str | os.PathLike, image_size: int | None = None) -> bool:
    """Whether ``data`` is a built-in spec, after checking its arguments (``DatasetError``, ``InvalidValueError``);
    ``False`` for anything else (an ImageFolder root, not checked here)."""
    builtin = parse_data_spec(data)
    if builtin is not None and builtin[0] == TEXTURES:
        check_texture_arguments(image_size or 32, **{**TEXTURE_DEFAULTS, **builtin[1]})
    return builtin is not None


def data_identity(data: str | os.PathLike | None) -> str | None:
    """What a sweep records as its data: ``None`` for digits (the default), the textures spec with every argument
    filled in (a changed default is other data), or the ImageFolder root's absolute path."""
    builtin = parse_data_spec(DIGITS if data is None else data)
    if builtin is None:
        return str(Path(data).resolve())
    name, kwargs = builtin
    if name == DIGITS:
        return None
    full = {**TEXTURE_DEFAULTS, **kwargs}
    return f"{name}?" + "&".join(f"{k}={full[k]}" for k in sorted(full))
