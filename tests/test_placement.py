"""place_under_budget (issue #19, item 3): the budget's parsing, the knapsack, the measured check loop and the
result's round trip. Costs, values and measurements are injected so the choices are deterministic; no test here
times anything."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from odconv_surgery import ODConv2d, apply_odconv, get_recipe, load, save
from odconv_surgery.errors import BudgetError, EmptySelectionError, InvalidTypeError, InvalidValueError
from odconv_surgery.experiments.data import DataBundle
from odconv_surgery.experiments.training import TrainConfig
from odconv_surgery.placement import Budget, Measurement, parse_budget, place_under_budget, register_value_measure
from odconv_surgery.placement.values import VALUE_MEASURES

from helpers.onnx_models import randomise

STATIC_MS = 1.0


def small_model() -> nn.Module:
    """Five convs (stem, depthwise, 1x1, 3x3, 1x1) named 0, 2, 4, 6, 8, each followed by a ReLU."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for c_in, c_out, k, groups in [(3, 8, 3, 1), (8, 8, 3, 8), (8, 12, 1, 1), (12, 12, 3, 1), (12, 16, 1, 1)]:
        layers += [nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)).eval()


def converted() -> nn.Module:
    model, _ = apply_odconv(small_model(), "all", init="scratch", seed=1)
    return randomise(model, scale=0.5)


LAYERS = ["0", "2", "4", "6", "8"]  # the five converted convs of small_model, in order
X = torch.randn(1, 3, 10, 10)


def data(n: int = 2, batch: int = 4):
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(batch, 3, 10, 10, generator=g), torch.randint(0, 4, (batch,), generator=g)) for _ in range(n)]


def dynamic_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, ODConv2d)]


class FakeTiming:
    """The static model at STATIC_MS; a placed model at STATIC_MS plus its dynamic layers' costs, plus ``extra_us``
    per dynamic layer that the per-layer estimates miss. Records the dynamic layers of every call."""

    def __init__(self, costs_us: dict[str, float], extra_us: float = 0.0, static_ms: float = STATIC_MS) -> None:
        self.costs_us, self.extra_us, self.static_ms = costs_us, extra_us, static_ms
        self.calls: list[list[str]] = []

    def __call__(self, static: nn.Module, placed: nn.Module) -> Measurement:
        assert not dynamic_layers(static), "the static reference must hold no ODConv2d"
        dynamic = dynamic_layers(placed)
        self.calls.append(dynamic)
        return Measurement(self.static_ms, self.static_ms + sum(self.costs_us[n] + self.extra_us for n in dynamic) / 1e3)


# Value per microsecond: "8" 0.03, "2" 0.02, "0" 0.01, "6" 0.004, "4" 0.0025.
COSTS = {"0": 100.0, "2": 50.0, "4": 200.0, "6": 30.0, "8": 10.0}
VALUES = {"0": 1.0, "2": 1.0, "4": 0.5, "6": 0.12, "8": 0.3}


def place(budget, *, costs=COSTS, values=VALUES, timing=None, **kwargs):
    timing = timing or FakeTiming(costs)
    model, result = place_under_budget(converted(), data(), budget, example_input=X, costs=costs,
                                       value=lambda model, batches: values, measure=timing, tolerance=0.0, **kwargs)
    return model, result, timing


# ---- the budget ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, kind, value", [
    ("1.2x", "ratio", 1.2), ("1X", "ratio", 1.0), (" 1.5 x ", "ratio", 1.5), ("3.5ms", "ms", 3.5),
    ("800us", "ms", 0.8), ("800µs", "ms", 0.8), ("2e1ms", "ms", 20.0), ("unlimited", "ratio", math.inf),
])
def test_budget_forms(text, kind, value):
    budget = parse_budget(text)
    assert (budget.kind, budget.value) == (kind, pytest.approx(value))
    assert parse_budget(str(budget)) == budget  # the printed form reads back


@pytest.mark.parametrize("text, fix", [
    ("1.2", "'1.2x' for a ratio"), (1.2, "'1.2x' for a ratio"), ("0.9x", "give 1x or more"),
    ("0ms", "positive finite"), ("-2ms", "positive finite"), ("nanx", "positive finite"), ("1.2s", "unknown unit 's'"),
    ("fast", "cannot read the budget"), ("", "cannot read the budget"), (Budget("ratio", 0.5), "give 1x or more"),
    (Budget("fps", 30.0), "kind must be"),
])
def test_budget_errors_name_the_fix(text, fix):
    with pytest.raises(BudgetError, match=fix):
        parse_budget(text)


def test_budget_limit_and_tolerance():
    assert parse_budget("1.2x").limit_ms(2.0) == pytest.approx(2.4)
    assert parse_budget("3ms").limit_ms(2.0) == 3.0
    assert parse_budget("1.2x").fits(2.0, 2.44, tolerance=0.02) and not parse_budget("1.2x").fits(2.0, 2.46, tolerance=0.02)
    with pytest.raises(InvalidTypeError, match="budget must be a string"):
        parse_budget(None)


# ---- the choice ----------------------------------------------------------------------------------------------
def test_a_budget_that_allows_everything_keeps_every_layer():
    total_ms = STATIC_MS + sum(COSTS.values()) / 1e3
    for budget in (f"{total_ms / STATIC_MS + 0.01:.2f}x", f"{total_ms + 0.01:.2f}ms", "unlimited"):
        model, result, timing = place(budget)
        assert result.met and set(result.chosen) == set(LAYERS) and not result.folded
        assert dynamic_layers(model) == LAYERS
        assert len(timing.calls) == 1 and len(result.checks) == 1  # the input model measured once, nothing folded


def test_a_tight_budget_folds_by_value_per_cost():
    # 1.1x of 1 ms: 100 us over static. By value per us: "8" (10 us), "2" (50 us) fit; "0" (100 us) does not and is
    # skipped; "6" (30 us) still fits; "4" (200 us) does not. Neither value nor cost alone gives this set.
    model, result, _ = place("1.1x")
    assert [layer.name for layer in result.layers] == ["8", "2", "0", "6", "4"]  # the ranking
    assert set(result.chosen) == {"8", "2", "6"} and set(result.folded) == {"0", "4"}
    assert set(dynamic_layers(model)) == {"8", "2", "6"}
    assert all(isinstance(dict(model.named_modules())[n], nn.Conv2d) for n in ("0", "4"))
    assert all(layer.folded_by == "estimate" and layer.fold_error >= 0 for layer in result.layers if not layer.dynamic)
    assert result.estimated_ms == pytest.approx(STATIC_MS + 0.090)
    assert result.met and [c.dynamic_layers for c in result.checks] == [5, 3]
    assert result.measured.placed_ms == pytest.approx(1.090) and result.measured.ratio == pytest.approx(1.09)


def test_the_input_model_is_kept_whole_when_its_measurement_fits():
    # the estimates say 1.39x, the file measures within 1.2x: nothing is folded
    timing = FakeTiming(COSTS, extra_us=-60.0)
    _, result, _ = place("1.2x", timing=timing)
    assert not result.folded and len(timing.calls) == 1


def test_a_measurement_over_budget_folds_the_next_worst_layers_then_restores_what_fits():
    # every dynamic layer costs 40 us more in the file than its estimate: the estimate's choice ("8", "2", "6")
    # measures 1.21x, 110 us over; the lowest-ranked kept layers covering 110 us by their estimates go next:
    # "6" (30 us), then "2" (50 us), then "8" (10 us). The fully static file leaves 100 us of room: the best-ranked
    # folded layer, "8", comes back (50 us in the file); then the file measures 5x its estimate, and no other layer's
    # scaled estimate fits the 50 us left.
    timing = FakeTiming(COSTS, extra_us=40.0)
    model, result, _ = place("1.1x", timing=timing)
    assert timing.calls[1] == ["2", "6", "8"]
    assert timing.calls[2] == []
    assert timing.calls[3] == ["8"] and len(timing.calls) == 4
    by_name = {layer.name: layer for layer in result.layers}
    assert {n for n, layer in by_name.items() if layer.folded_by == "check 2"} == {"6", "2"}
    assert result.met and list(result.chosen) == ["8"] and dynamic_layers(model) == ["8"]
    assert [c.fits for c in result.checks] == [False, False, True, True]
    assert get_recipe(model).folded == ["0", "2", "4", "6"] and list(get_recipe(model).layers) == ["8"]


def test_room_under_the_budget_restores_a_folded_layer():
    # each dynamic layer costs 25 us less in the file than estimated: the estimate's choice ("8", "2", "6", 90 us)
    # measures 15 us, leaving 85 us; scaled by 15/90, "0" (100 us) fits and measures 1.09x with it: it stays. The
    # room left (10 us) holds no scaled estimate of "4".
    timing = FakeTiming(COSTS, extra_us=-25.0)
    model, result, _ = place("1.1x", timing=timing)
    assert timing.calls[2] == ["0", "2", "6", "8"] and len(timing.calls) == 3
    assert result.met and set(result.chosen) == {"8", "2", "6", "0"} and set(dynamic_layers(model)) == set(result.chosen)
    assert result.measured.placed_ms == pytest.approx(1.090)
    assert {layer.name: layer.folded_by for layer in result.layers if not layer.dynamic} == {"4": "estimate"}


def test_a_restore_that_measures_over_the_budget_is_undone():
    # 20 us less per layer: the choice measures 30 us (70 us room, estimates scaled by 1/3); "0" comes back and
    # measures 110 us, over: undone; "4" (scaled 67 us) likewise (210 us). The model is the estimate's choice again,
    # with its folded convs, and the last check is its measurement.
    timing = FakeTiming(COSTS, extra_us=-20.0)
    model, result, _ = place("1.1x", timing=timing)
    assert timing.calls[2:] == [["0", "2", "6", "8"], ["2", "4", "6", "8"]]
    assert set(result.chosen) == {"8", "2", "6"} and set(dynamic_layers(model)) == {"8", "2", "6"}
    assert result.met and [c.fits for c in result.checks] == [False, True, False, False, True]
    assert result.measured.placed_ms == pytest.approx(1.030)
    assert all(isinstance(dict(model.named_modules())[n], nn.Conv2d) for n in ("0", "4"))
    assert get_recipe(model).folded == ["0", "4"]
    x = torch.randn(2, 3, 10, 10)
    reference, _, _ = place("1.1x", timing=FakeTiming(COSTS))  # the same choice, never restored
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


def test_the_check_loop_folds_one_layer_at_a_time_when_one_covers_the_excess():
    timing = FakeTiming(COSTS, extra_us=4.0)  # the choice measures 1.102x: 2 us over, "6" alone covers it
    _, result, _ = place("1.1x", timing=timing)
    assert result.met and set(result.chosen) == {"8", "2"}
    assert {layer.name: layer.folded_by for layer in result.layers if not layer.dynamic} == {
        "0": "estimate", "4": "estimate", "6": "check 2"}


def test_an_unreachable_budget_is_reported_not_raised():
    timing = FakeTiming(COSTS, static_ms=2.0)
    with pytest.warns(UserWarning, match="cannot be met even fully static"):
        model, result, _ = place("1.5ms", timing=timing)
    assert not result.met and not result.chosen and dynamic_layers(model) == []
    assert "even fully static" in result.note and "NOT met" in result.summary()


def test_the_check_loop_is_bounded():
    timing = FakeTiming(COSTS, extra_us=500.0)
    with pytest.warns(UserWarning, match="max_checks"):
        _, result, _ = place("1.1x", timing=timing, max_checks=1)
    assert not result.met and len(result.checks) == 2 and result.chosen  # layers left dynamic, stopped by the bound


def test_dynamism_is_the_default_value_and_a_static_layer_goes_first():
    model = converted()
    with torch.no_grad():  # layer "6" ignores its input: dynamism 0, nothing lost by folding it
        for head in dict(model.named_modules())["6"].attention.heads().values():
            head.weight.zero_()
    costs = dict.fromkeys(LAYERS, 10.0)
    timing = FakeTiming(costs)
    _, result = place_under_budget(model, data(), "1.04x", example_input=X, costs=costs, measure=timing, tolerance=0.0)
    assert result.value_measure == "dynamism"
    assert result.folded == ["6"] and result.layers[-1].name == "6" and result.layers[-1].value < 1e-6
    assert result.layers[-1].fold_error < 1e-5  # a static layer folds exactly


def test_value_measures_are_pluggable_by_name():
    calls = []

    def by_order(model, batches):
        calls.append(len(batches))
        return {name: float(i) for i, name in enumerate(dynamic_layers(model))}

    register_value_measure("test_by_order", by_order)
    try:
        with pytest.raises(InvalidValueError, match="overwrite=True"):
            register_value_measure("test_by_order", by_order)
        costs = dict.fromkeys(LAYERS, 10.0)
        _, result = place_under_budget(converted(), data(), "1.03x", example_input=X, costs=costs, value="test_by_order",
                                       measure=FakeTiming(costs), tolerance=0.0, max_batches=1)
    finally:
        VALUE_MEASURES.pop("test_by_order")
    assert calls == [1] and result.value_measure == "test_by_order"
    assert set(result.chosen) == {"6", "8", "4"}  # the three highest values fit 30 us


def test_a_layer_without_a_timing_gets_the_largest_measured_cost():
    # layer_costs gives NaN where a layer's form has no NCHWc timing graph (a stem on 3 channels under 'all')
    costs = {**COSTS, "8": float("nan")}
    _, result, _ = place("1.1x", costs=costs, timing=FakeTiming({**COSTS, "8": 200.0}))
    stand_in = {layer.name: layer for layer in result.layers}["8"]
    assert stand_in.marginal_us == max(COSTS.values()) and not stand_in.cost_measured
    assert all(layer.cost_measured for layer in result.layers if layer.name != "8")
    assert "not timed" in result.summary() and "8" in result.folded  # 0.3 / 200 us now ranks last
    with pytest.raises(InvalidValueError, match="no converted layer has a measured cost"):
        place("1.1x", costs=dict.fromkeys(LAYERS, float("nan")))


def test_bad_arguments_name_the_fix():
    costs = dict(COSTS)
    with pytest.raises(EmptySelectionError, match="convert it first"):
        place_under_budget(small_model(), data(), "1.2x", example_input=X, costs=costs, measure=FakeTiming(costs))
    with pytest.raises(InvalidValueError, match=r"cost table has no entry for the converted layer\(s\) \['4'\]"):
        place("1.2x", costs={k: v for k, v in COSTS.items() if k != "4"}, timing=FakeTiming(COSTS))
    with pytest.raises(InvalidValueError, match="gives nan for '2'"):
        place("1.2x", values={**VALUES, "2": float("nan")})
    with pytest.raises(InvalidValueError, match="unknown value measure 'accuracy'"):
        place_under_budget(converted(), data(), "1.2x", example_input=X, costs=costs, value="accuracy")
    with pytest.raises(InvalidValueError, match="fine-tuning needs labelled data"):
        place("1.2x", finetune=True)
    with pytest.raises(InvalidValueError, match="calibration data is empty"):
        place_under_budget(converted(), [], "1.2x", example_input=X, costs=costs, measure=FakeTiming(costs))
    with pytest.raises(BudgetError, match="no unit"):
        place(1.2)


# ---- fine-tuning, the report, save/load ----------------------------------------------------------------------
def bundle() -> DataBundle:
    g = torch.Generator().manual_seed(4)
    images, labels = torch.randn(24, 3, 10, 10, generator=g), torch.randint(0, 4, (24,), generator=g)
    return DataBundle("tiny", TensorDataset(images[:16], labels[:16]), TensorDataset(images[16:], labels[16:]), 4, 10)


def test_labelled_data_evaluates_and_fine_tunes_briefly():
    config = TrainConfig(epochs=1, batch_size=4, max_steps_per_epoch=2, lr=0.01, anneal_fraction=0.0,
                         temperature_start=1.0, progress=False)
    model, result, _ = place("1.1x", labelled=bundle(), finetune=config)
    acc = result.accuracy
    assert acc is not None and result.finetune_steps == 2
    assert all(0 <= a <= 100 for a in (acc.input, acc.folded, acc.finetuned))
    assert not model.training and "fine-tuned" in result.summary()
    _, untuned, _ = place("1.1x", labelled=bundle(), finetune=False)
    assert untuned.accuracy.finetuned is None and untuned.finetune_steps == 0


def test_the_report_is_json_and_the_placed_model_round_trips(tmp_path):
    model, result, _ = place("1.1x")
    report = json.loads(json.dumps(result.to_dict()))
    assert report["budget"] == "1.1x" and report["chosen"] == result.chosen and report["folded"] == result.folded
    assert [c["dynamic_layers"] for c in report["checks"]] == [5, 3] and report["met"] is True
    summary = result.summary()
    assert all(name in summary for name in LAYERS) and "folded (estimate)" in summary
    assert sorted(get_recipe(model).folded) == sorted(result.folded)
    save(model, tmp_path / "placed.pt")
    loaded = load(small_model(), tmp_path / "placed.pt")
    assert sorted(dynamic_layers(loaded)) == sorted(result.chosen)
    x = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_the_input_model_is_left_alone_unless_inplace():
    original = converted()
    costs = dict(COSTS)
    placed, _ = place_under_budget(original, data(), "1.1x", example_input=X, costs=costs, value=VALUES,
                                   measure=FakeTiming(costs), tolerance=0.0)
    assert dynamic_layers(original) == LAYERS and len(dynamic_layers(placed)) == 3
    same, _ = place_under_budget(original, data(), "1.1x", example_input=X, costs=costs, value=VALUES,
                                 measure=FakeTiming(costs), tolerance=0.0, inplace=True)
    assert same is original and len(dynamic_layers(original)) == 3
