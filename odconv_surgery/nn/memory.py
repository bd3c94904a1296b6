"""What a conversion allocates, counted before anything is: every kernel bank and attention branch, plus the
initialisation's temporaries. ``apply_odconv`` and ``load`` probe free memory once per conversion with it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from .attention import attention_channels, attention_parameter_count, head_widths
from .options import LayerOptions
from .validation import bank_bytes, check_memory, format_bytes

INIT_TEMPORARIES = 3  # banks of temporaries ODConv2d.from_conv holds at its peak: repeated kernel, noise, centred noise


def conversion_bytes(conv: torch.nn.Conv2d, layer_settings: Mapping[str, Any]) -> tuple[int, int]:
    """Bytes the kernel bank and the attention branch of ``conv`` converted with ``layer_settings`` take (settings
    left out take their defaults); every size argument counts, ``min_attention_channels`` included."""
    o = LayerOptions.from_settings({k: v for k, v in layer_settings.items() if k in LayerOptions.__dataclass_fields__})
    n = o.kernel_num
    kh, kw = conv.kernel_size
    bank = bank_bytes(n, conv.out_channels, conv.in_channels // conv.groups, (kh, kw), conv.weight.dtype)
    geometry = (conv.in_channels, conv.out_channels, (kh, kw), conv.groups, o)
    attention = attention_parameter_count(*geometry)
    if o.attention_norm == "bn" and o.attention_trunk and head_widths(*geometry):  # running mean and variance
        attention += 2 * attention_channels(conv.in_channels, o)
    return bank, attention * conv.weight.dtype.itemsize


def check_conversion_memory(layers: Iterable[tuple[str, torch.nn.Conv2d, Mapping[str, Any]]]) -> None:
    """Refuse (``KernelBankMemoryError``) before allocating when converting ``(name, conv, settings)`` would not
    fit in the memory the convs' devices have free: every bank and attention branch, plus the temporaries the
    initialisation of the largest bank holds at its peak (``INIT_TEMPORARIES`` banks). The one free-memory probe
    per device of a conversion: the layers are then built with ``check_memory=False``."""
    per_device: dict[torch.device, list[tuple[int, int, str]]] = {}
    for name, conv, layer_settings in layers:
        bank, attention = conversion_bytes(conv, layer_settings)
        per_device.setdefault(conv.weight.device, []).append((bank, attention, name))
    for device, banks in per_device.items():
        largest, _, name = max(banks)
        check_memory(
            sum(bank + attention for bank, attention, _ in banks) + INIT_TEMPORARIES * largest, device,
            f"converting {len(banks)} layer(s) (largest bank: {name}, {format_bytes(largest)}, attention branches "
            "included)",
            "lower kernel_num or min_attention_channels, convert fewer layers, or convert on a device with more memory",
        )
