"""The copy apply_odconv converts (issue 22, items 7 and 9): recipes survive ``copy.deepcopy`` of an fx
GraphModule (onnx2torch models, any fx-traced model) and a two-call conversion keeps both calls' layers; a
``torch.jit.script`` submodule is reported, and its parameters stay trainable leaves in the copy."""

import copy
import warnings

import torch
from torch import fx, nn

from odconv_surgery import apply_odconv, load, save
from odconv_surgery.recipe import get_recipe


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 8, 1))


def test_graph_module_recipe_survives_deepcopy(tmp_path):
    traced = fx.symbolic_trace(small_net())
    converted, _ = apply_odconv(traced, "all")
    copied = copy.deepcopy(converted)
    assert get_recipe(copied) is not None and set(get_recipe(copied).layers) == {"0", "2", "4"}
    save(copied, tmp_path / "m.pt")
    loaded = load(fx.symbolic_trace(small_net()), tmp_path / "m.pt")
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(loaded.eval()(x), copied.eval()(x))


def test_graph_module_converted_in_two_calls_keeps_both():
    traced = fx.symbolic_trace(small_net())
    once, _ = apply_odconv(traced, "1x1")
    twice, _ = apply_odconv(once, "3x3")
    assert set(get_recipe(twice).layers) == {"2", "4"}


class WithScripted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated
            self.body = torch.jit.script(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()))
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(self.body(self.stem(x)))


def test_scripted_submodule_reported_and_trainable():
    converted, report = apply_odconv(WithScripted(), "all")
    assert "torch.jit.script" in report.skipped["body.0"]
    assert all(p.is_leaf for p in converted.parameters())
    optimizer = torch.optim.SGD(converted.parameters(), lr=0.1)
    converted(torch.randn(2, 3, 8, 8)).sum().backward()
    optimizer.step()
