"""The tuner's cache: measured form timings per machine (CPU model and ISA, onnxruntime version), NCHWc block and
layer signature, in one JSON file, so a second export of the same model times nothing.

``ODCONV_TUNING_CACHE`` moves the file; ``off`` disables it. A read-only home or an unreadable file never fails an
export (a warning, and the cache is kept in memory).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path

from ....deploy.schema import MARKER_ATTENTION_DEFAULTS
from ..common import OdLayer

logger = logging.getLogger("odconv_surgery.passes.onnx")

CACHE_ENV = "ODCONV_TUNING_CACHE"


def tuning_cache_path() -> Path | None:
    """``$ODCONV_TUNING_CACHE`` (``off`` disables the cache), else ``$XDG_CACHE_HOME/odconv-surgery/tuning.json``
    (``~/.cache`` when unset)."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "0", "off", "none", "false") else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "odconv-surgery" / "tuning.json"


@functools.lru_cache(maxsize=1)
def machine_key() -> str:
    """What makes timings comparable: CPU model, its vector ISA, onnxruntime's version (the block is keyed apart)."""
    import onnxruntime as ort

    from ....deploy.machine import cpu_model, isa_level

    return f"{cpu_model()} | {isa_level()} | onnxruntime {ort.__version__}"


class TuningCache:
    """Timings per machine key, NCHWc block and layer signature, in one JSON file (None: kept in memory only)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, dict[str, dict[str, float]]] = {}
        self.dirty = False
        if path is not None and path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                self.data = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError) as exc:
                logger.warning("ignoring the unreadable tuning cache %s (%s); it will be rewritten", path, exc)

    def _section(self, blk: int) -> str:
        return f"{machine_key()} | block {blk}"

    def get(self, blk: int, key: str) -> dict[str, float] | None:
        entry = self.data.get(self._section(blk), {}).get(key)
        if not isinstance(entry, dict) or not all(isinstance(v, (int, float)) for v in entry.values()):
            return None
        return {str(k): float(v) for k, v in entry.items()}

    def put(self, blk: int, key: str, times: dict[str, float]) -> None:
        section = self.data.setdefault(self._section(blk), {})
        section[key] = {**section.get(key, {}), **times}
        self.dirty = True

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        from ....atomic_file import atomic_write

        try:
            text = json.dumps(self.data, indent=1, sort_keys=True).encode("utf-8")
            atomic_write(self.path, lambda fh: fh.write(text))
            self.dirty = False
        except OSError as exc:  # a read-only home must not fail an export
            logger.warning("could not write the tuning cache %s (%s); set %s to move it", self.path, exc, CACHE_ENV)


def layer_signature(layer: OdLayer, threads: int) -> str:
    """Everything about a layer that shapes the speed of its forms (not its weights' values)."""
    a = layer.attrs
    keys = ("kernel_num", "in_channels", "out_channels", "kernel_shape", "strides", "pads", "dilations", "group",
            "input_hw", "norm")
    sig = {k: a.get(k) for k in keys}
    sig["kind"], sig["heads"], sig["threads"] = layer.kind, sorted(layer.heads), threads
    sig["merged_heads"] = "heads_weight" in layer.roles
    sig["bias"] = layer.has("bias")
    # The attention options, only where they differ from the defaults (so earlier cache entries stay valid).
    for key, default in MARKER_ATTENTION_DEFAULTS.items():
        if a.get(key, default) != default:
            sig[key] = a[key]
    if layer.heads and not layer.has_trunk:
        sig["trunk"] = False
    return json.dumps(sig, sort_keys=True, default=list)
