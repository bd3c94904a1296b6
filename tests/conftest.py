import os

import pytest
import torch

# Exports in tests choose their NCHWc forms by the cost model (reproducible, nothing timed, no cache written);
# tests/test_plan.py tunes on purpose.
os.environ.setdefault("ODCONV_TUNE", "0")
os.environ.setdefault("ODCONV_TUNING_CACHE", "off")

# Test tensors are tiny: one intra-op thread is as fast, and it avoids OpenMP spin-wait collapse when the
# machine is shared (measured: one model test 123 s with 2 threads on a loaded 2-core box, 15 s with 1).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


def randomise_attention(model: torch.nn.Module, scale: float = 0.5) -> None:
    """Give every ODConv attention head non-trivial logits so tests see input-dependent attentions."""
    from odconv_surgery import ODConv2d

    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ODConv2d):
                for head in m.attention.heads().values():
                    head.weight.add_(torch.randn(head.weight.shape, generator=g) * scale)
                    head.bias.add_(torch.randn(head.bias.shape, generator=g) * scale)


def write_plugin_package(root, module: str, source: str, entry_points: dict[str, str], dist: str = "fake-odconv-plugin") -> None:
    """A module plus an installed-distribution record declaring ``entry_points`` in the odconv_surgery.models group.

    Put ``root`` on sys.path (or PYTHONPATH) and importlib.metadata finds the entry points as if pip had installed it.
    """
    import pathlib

    root = pathlib.Path(root)
    (root / f"{module}.py").write_text(source)
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[odconv_surgery.models]\n{lines}")


# Specs that would run a command or delete a file if a model spec could call any Python callable ({f}: a path).
DANGEROUS_SPECS = [
    "os:system?command=touch {f}",
    "subprocess:check_output?args=touch {f}&shell=True",
    "subprocess:run?args=touch {f}&shell=True",
    "os:remove?path={f}",
]
