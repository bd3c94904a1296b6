"""What a timing depends on besides the model: the CPU's model and vector ISA, onnxruntime's NCHWc block and
version. Named beside every figure the benchmarks write, and the key of the export tuner's cache."""

from __future__ import annotations

import functools
import platform


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere) with its family, model and
    stepping numbers where the system gives them: a virtual machine often names only the vendor line ('AMD EPYC'),
    which hides CPU generations that differ in vector width and caches (family 25 is Zen 3/4, 26 is Zen 5), and
    timings taken on one must not be reused on the other."""
    info = _cpuinfo()
    name = info.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    ids = [(label, info.get(key)) for label, key in (("family", "cpu family"), ("model", "model"), ("stepping", "stepping"))]
    if all(value and value.isdigit() for _, value in ids):
        name += " (" + ", ".join(f"{label} {value}" for label, value in ids) + ")"
    return name


def isa_level() -> str:
    """The vector ISA level that decides onnxruntime's CPU kernels: 'AVX-512+AMX', 'AVX-512', 'AVX2', or the arch."""
    flags = set(_cpuinfo().get("flags", "").split())
    if "amx_tile" in flags:
        return "AVX-512+AMX"
    if "avx512f" in flags:
        return "AVX-512"
    if "avx2" in flags:
        return "AVX2"
    return platform.machine() or "unknown"


def isa_tag() -> str:
    """``isa_level()`` as a file-name suffix: 'avx512amx', 'avx512', 'avx2', ..."""
    return "".join(ch for ch in isa_level().lower() if ch.isalnum())


def describe_cpu() -> str:
    """'<CPU model>, <ISA>, NCHWc block <B>, onnxruntime <version>' (block 'none' where the NCHWc ops are unusable)."""
    try:
        import onnxruntime as ort

        from ..passes.onnx.common import detect_nchwc_block

        runtime = f"NCHWc block {detect_nchwc_block() or 'none'}, onnxruntime {ort.__version__}"
    except ImportError:
        runtime = "onnxruntime not installed"
    return f"{cpu_model()}, {isa_level()}, {runtime}"
