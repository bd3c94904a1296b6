"""What a conversion did: one row per convolution (and Linear), parameter counts before and after."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class LayerReport:
    """One convolution (or Linear, ``kind="linear"``): geometry, where it sits, and whether it was converted (and
    why not)."""

    name: str
    type: str
    kernel: str
    stride: str
    groups: int
    in_channels: int
    out_channels: int
    block: str | None
    converted: bool
    reason: str
    aliases: list[str] = field(default_factory=list)
    kind: str = "conv"  # "conv" or "linear"


@dataclass
class ConversionReport:
    """Returned by ``apply_odconv``; ``str(report)`` is a readable table."""

    policy: str | None
    layers: list[LayerReport]
    params_before: int
    params_after: int
    tracing: str  # "fx" or "hooks"

    @property
    def converted(self) -> list[str]:
        return [row.name for row in self.layers if row.converted]

    @property
    def skipped(self) -> dict[str, str]:
        return {row.name: row.reason for row in self.layers if not row.converted}

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        header = ("#", "conv", "type", "kernel", "stride", "groups", "in->out", "block", "ODConv", "reason")
        rows = [
            (
                str(i),
                row.name,
                row.type,
                row.kernel,
                row.stride,
                str(row.groups),
                f"{row.in_channels}->{row.out_channels}",
                row.block or "-",
                "yes" if row.converted else "no",
                row.reason,
            )
            for i, row in enumerate(self.layers)
        ]
        return format_table(header, rows)

    def summary(self) -> str:
        delta = self.params_after - self.params_before

        def converted(kind: str) -> str:
            rows = [row for row in self.layers if row.kind == kind]
            return f"{sum(row.converted for row in rows)}/{len(rows)}"

        linear = f" and {converted('linear')} Linear" if any(row.kind == "linear" for row in self.layers) else ""
        return (
            f"policy={self.policy!s} tracing={self.tracing}: converted {converted('conv')} convs{linear}; "
            f"params {self.params_before / 1e6:.2f}M -> {self.params_after / 1e6:.2f}M (+{delta / 1e6:.2f}M)"
        )

    def __str__(self) -> str:
        return f"{self.table()}\n{self.summary()}"


def format_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Plain fixed-width table (no dependency)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)
