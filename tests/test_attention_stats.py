"""Attention statistics (issue #18 item 7, the paper's Fig. 6): values against hand computations, layers without
some heads, the JSON round trip and the figure."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from odconv_surgery import AttentionStats, ODConv2d, apply_odconv, attention_statistics, set_temperature
from odconv_surgery.attention_stats import AttentionSummary, Distribution
from odconv_surgery.errors import AttentionStatsFileError, EmptySelectionError, ForeignFileError, InvalidValueError
from odconv_surgery.experiments.attention_plot import attention_figure, plot_attention_stats
from odconv_surgery.folding import kernel_dynamism

from helpers.onnx_models import randomise

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def batches(n: int = 3, batch: int = 4, channels: int = 8, size: int = 6, seed: int = 5) -> list:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, channels, size, size, generator=g), torch.zeros(batch)) for _ in range(n)]


def constant_heads(layer: ODConv2d, biases: dict[str, torch.Tensor]) -> None:
    """Every head ignores its input (zero weights) and outputs its bias: the attentions are known constants."""
    with torch.no_grad():
        for name, head in layer.attention.heads().items():
            head.weight.zero_()
            head.bias.copy_(biases[name])


def test_constant_heads_give_their_activation_with_no_spread():
    torch.manual_seed(0)
    layer = ODConv2d(8, 6, 3, padding=1, kernel_num=3)
    biases = {"channel": torch.linspace(-1, 1, 8), "filter": torch.linspace(2, -2, 6),
              "spatial": torch.arange(9) * 0.3 - 1.2, "kernel": torch.tensor([0.5, -1.0, 2.0])}
    constant_heads(layer, biases)
    stats = attention_statistics(nn.Sequential(layer), batches())
    assert stats.samples == 12
    (entry,) = stats.layers
    assert entry.name == "0" and entry.samples == 12 and entry.kernel_size == (3, 3) and entry.kernel_num == 3
    expected = {kind: torch.sigmoid(b) for kind, b in biases.items() if kind != "kernel"}
    expected["kernel"] = torch.softmax(biases["kernel"], dim=0)
    for kind, values in expected.items():
        summary = getattr(entry, kind)
        assert len(summary.mean) == 1  # shared attention: one row
        np.testing.assert_allclose(summary.mean[0], values.tolist(), rtol=1e-6)  # element order kept (positions, ...)
        assert max(summary.std[0]) < 1e-7 and summary.spread < 1e-7
        assert summary.sample_means.std < 1e-7 and summary.sample_means.count == 12
        assert summary.sample_means.mean == pytest.approx(float(values.mean()), rel=1e-6)
        assert summary.element_means.min == pytest.approx(float(values.min()), rel=1e-6)
        assert summary.element_means.max == pytest.approx(float(values.max()), rel=1e-6)
        assert summary.element_means.median == pytest.approx(float(np.median(values.numpy())), rel=1e-6)
    assert entry.dynamism == pytest.approx(0.0, abs=1e-7)


def test_values_match_their_definition_on_a_dynamic_layer():
    torch.manual_seed(1)
    model = randomise(nn.Sequential(ODConv2d(8, 6, 3, padding=1, kernel_num=2), nn.ReLU()), scale=0.5)
    layer = model[0]
    data = batches()
    stats = attention_statistics(model, data)
    x = torch.cat([b[0] for b in data])
    with torch.no_grad():
        att = layer.eval().attention(x)  # the heads' own values
    entry = stats.layer("0")
    for kind, values in (("channel", att.channel.reshape(12, -1)), ("filter", att.filter.reshape(12, -1)),
                         ("spatial", att.spatial.reshape(12, -1)), ("kernel", att.kernel.reshape(12, -1))):
        summary = getattr(entry, kind)
        values = values.double()
        np.testing.assert_allclose(summary.mean[0], values.mean(0).tolist(), rtol=1e-6)
        np.testing.assert_allclose(summary.std[0], values.std(0, unbiased=False).tolist(), rtol=1e-5, atol=1e-9)
        per_sample = values.mean(1)
        assert summary.sample_means.std == pytest.approx(float(per_sample.std(unbiased=False)), rel=1e-5)
        assert summary.sample_means.q1 == pytest.approx(float(torch.quantile(per_sample, 0.25)), rel=1e-6)
        assert summary.element_means.q3 == pytest.approx(float(torch.quantile(values.mean(0), 0.75)), rel=1e-6)
    assert max(entry.channel.std[0]) > 1e-4  # the layer is dynamic: the test compares something
    assert entry.dynamism == pytest.approx(kernel_dynamism(model, data)["0"], rel=1e-9) and entry.dynamism > 1e-4


def test_values_are_the_heads_own_not_scaled_by_the_function_preserving_init():
    model, _ = apply_odconv(nn.Sequential(nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 3)), "all", init="pretrained", seed=0)
    assert float(model[0].kernel_scale) > 1  # the channel attention of layer.attentions(x) carries it
    stats = attention_statistics(model.eval(), batches(size=8))
    for entry in stats.layers:  # neutral heads: sigmoid(0) everywhere, a static layer
        assert entry.channel.element_means.max == pytest.approx(0.5) and entry.dynamism == pytest.approx(0, abs=1e-6)


def test_eval_mode_at_temperature_one_and_both_restored():
    torch.manual_seed(2)
    model = randomise(nn.Sequential(ODConv2d(8, 6, 3, padding=1, kernel_num=2)), scale=0.5)
    reference = attention_statistics(model, batches())
    model.train()
    set_temperature(model, 7.0)
    again = attention_statistics(model, batches())  # attention BN in train mode or T = 7 would change every value
    assert again == reference
    assert model.training and model[0].attention.temperature == 7.0


def test_layers_without_some_heads_and_unshared_attention():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.late = ODConv2d(8, 8, 1, kernel_num=1)  # registered first, runs last: 1x1, n = 1
            self.depthwise = ODConv2d(8, 8, 3, padding=1, groups=8, kernel_num=2)  # no filter attention
            self.unshared = ODConv2d(8, 8, 3, padding=1, kernel_num=3, share_attention=False)
            self.no_channel = ODConv2d(8, 8, 3, padding=1, kernel_num=2, attentions=("spatial", "kernel"))

        def forward(self, x):
            return self.late(self.no_channel(self.unshared(self.depthwise(x))))

    stats = attention_statistics(Net().eval(), batches())
    assert [entry.name for entry in stats.layers] == ["depthwise", "unshared", "no_channel", "late"]  # as they run
    late, depthwise, unshared = stats.layer("late"), stats.layer("depthwise"), stats.layer("unshared")
    assert late.spatial is None and late.kernel is None and set(late.attentions()) == {"channel", "filter"}
    assert depthwise.filter is None and set(depthwise.attentions()) == {"channel", "spatial", "kernel"}
    assert np.shape(unshared.channel.mean) == (3, 8) and np.shape(unshared.spatial.std) == (3, 9)
    assert np.shape(unshared.kernel.mean) == (1, 3)
    assert set(stats.layer("no_channel").attentions()) == {"spatial", "kernel"}  # any head may be absent
    assert "late: 1x1 n=1" in stats.summary() and "spatial" not in stats.summary().splitlines()[-1]


def test_layer_selection_and_bad_input():
    model = nn.Sequential(ODConv2d(8, 8, 3, padding=1), ODConv2d(8, 8, 1))
    assert [entry.name for entry in attention_statistics(model, batches(), ["1"]).layers] == ["1"]
    assert attention_statistics(model, batches(), max_batches=1).samples == 4
    with pytest.raises(EmptySelectionError, match="no ODConv2d layer"):
        attention_statistics(nn.Sequential(nn.Conv2d(8, 8, 1)), batches())
    with pytest.raises(InvalidValueError, match="calibration data is empty"):
        attention_statistics(model, [])
    with pytest.raises(InvalidValueError, match="not ODConv2d layers"):
        attention_statistics(model, batches(), ["nope"])
    with pytest.raises(KeyError, match="no layer 'nope'"):
        attention_statistics(model, batches()).layer("nope")


def _without(stats: AttentionStats, kind: str) -> AttentionStats:
    """``stats`` as a model whose layers lack the ``kind`` attention would give (e.g. no channel head)."""
    return dataclasses.replace(stats, layers=tuple(dataclasses.replace(e, **{kind: None}) for e in stats.layers))


def test_json_round_trip_and_files(tmp_path):
    torch.manual_seed(3)
    model = randomise(nn.Sequential(ODConv2d(8, 8, 3, padding=1, kernel_num=2), ODConv2d(8, 4, 1)), scale=0.5)
    stats = attention_statistics(model, batches())
    assert AttentionStats.from_json(stats.to_json()) == stats
    no_channel = _without(stats, "channel")  # every head is optional, the channel one too
    assert AttentionStats.from_json(no_channel.to_json()) == no_channel
    static = dataclasses.replace(stats, layers=(dataclasses.replace(stats.layers[0], dynamism=None),))
    assert AttentionStats.read(static.write(tmp_path / "s.json")) == static
    assert isinstance(stats.layers[0].channel, AttentionSummary) and isinstance(stats.layers[0].channel.sample_means, Distribution)
    for bad in ("[1, 2]", '{"format": "other"}', stats.to_json().replace('"samples": 12', '"samples": -1', 1), "not json"):
        with pytest.raises(AttentionStatsFileError, match="not attention statistics"):
            AttentionStats.from_json(bad)
    (tmp_path / "image.png").write_bytes(PNG_MAGIC + b"0" * 50)
    with pytest.raises(ForeignFileError):
        stats.write(tmp_path / "image.png")  # never replaces a file of another kind


def test_figure_is_a_png_with_any_heads(tmp_path):
    torch.manual_seed(4)
    model = randomise(nn.Sequential(ODConv2d(8, 8, 3, padding=1, kernel_num=2), ODConv2d(8, 8, 3, groups=8),
                                    ODConv2d(8, 4, 1)), scale=0.5)
    stats = attention_statistics(model, batches(size=8))
    path = plot_attention_stats(stats, tmp_path / "stats.png")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    partial = _without(_without(stats, "channel"), "kernel")
    assert attention_figure(partial, "no channel, no kernel").startswith(PNG_MAGIC)
    assert math.isfinite(stats.layers[0].dynamism)
