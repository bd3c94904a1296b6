"""The Pareto sweep (issue #19, item 4) end to end on a tiny model, its settings, summaries and files, and the
benchmark script's options and busy-machine refusal. Timings and costs are injected: nothing here times anything."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from odconv_surgery import ODConv2d
from odconv_surgery.errors import BudgetError, SweepSettingsError
from odconv_surgery.experiments.data import load_digits_dataset
from odconv_surgery.experiments.pareto import BUDGET, POLICY, ParetoConfig, run_pareto, split_holdout
from odconv_surgery.experiments.pareto_report import compare_at_policies, compare_values, summarise, write_pareto
from odconv_surgery.experiments.sweep_config import SweepConfig
from odconv_surgery.placement import Measurement

STATIC_MS, LAYER_MS = 1.0, 0.1  # the fake timing: the static model, and each layer left dynamic
COST_US = 99.0  # each layer's estimated marginal: two fit in the 200 us a 1.2x budget allows


class Tiny(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        )
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


def dynamic(model: nn.Module) -> int:
    return sum(isinstance(m, ODConv2d) for m in model.modules())


def fake_timing(static: nn.Module, placed: nn.Module) -> Measurement:
    assert dynamic(static) == 0
    return Measurement(STATIC_MS, STATIC_MS + LAYER_MS * dynamic(placed))


def recipe(**kw) -> SweepConfig:
    base = dict(model="tests:Tiny", policies=("baseline", "all_but_first", "1x1"), seeds=(0,), pretrain_epochs=1,
                epochs=1, image_size=12, limit=60, max_steps_per_epoch=2, batch_size=16, quiet=True)
    return SweepConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pareto")
    config = ParetoConfig(recipe(), budgets=("1.2x", "unlimited"), values=("dynamism", "accuracy_drop"),
                          calibration_batches=2, holdout=0.2, match_policies=False)
    seen = []
    result = run_pareto(config, out, data=load_digits_dataset(12, limit=60), model_factory=Tiny, measure=fake_timing,
                        costs=lambda model: {n: COST_US for n, m in model.named_modules() if isinstance(m, ODConv2d)},
                        on_seed=lambda r: seen.append(len(r.records)), progress=None)
    return config, result, out, seen


def test_one_seed_gives_every_policy_and_every_budget_per_value_measure(tiny_run):
    config, result, out, seen = tiny_run
    rows = [(r["family"], r["value_measure"], r["label"]) for r in result.records]
    assert rows == [(POLICY, None, "baseline"), (POLICY, None, "all_but_first"), (POLICY, None, "1x1"),
                    (BUDGET, "dynamism", "1.2x"), (BUDGET, "dynamism", "unlimited"),
                    (BUDGET, "accuracy_drop", "1.2x"), (BUDGET, "accuracy_drop", "unlimited")]
    assert seen == [7] and (out / "pretrained" / "static_seed0.pt").is_file()
    by = {(r["value_measure"], r["label"]): r for r in result.records}
    assert by[(None, "baseline")]["ratio"] == pytest.approx(1.0)
    assert by[(None, "all_but_first")]["ratio"] == pytest.approx(1 + 3 * LAYER_MS)  # three convs converted
    assert by[(None, "1x1")]["dynamic_layers"] == 1
    for value in config.values:
        assert by[(value, "unlimited")]["dynamic_layers"] == 3 and by[(value, "unlimited")]["met"]
        tight = by[(value, "1.2x")]
        assert tight["dynamic_layers"] == 2 and tight["ratio"] <= 1.2 and tight["met"]
        assert 0 <= tight["top1"] <= 100 and tight["steps"] > 0  # fine-tuned briefly after folding
    assert by[("dynamism", "1.2x")]["top1_start"] == pytest.approx(by[(None, "all_but_first")]["top1"])


def test_the_layer_table_and_the_rank_agreement(tiny_run):
    _, result, _, _ = tiny_run
    layers = result.layers[0]
    assert set(layers) == {"features.3", "features.6", "features.9"}
    assert all(entry["marginal_us"] == COST_US and entry["dynamism"] >= 0
               for entry in layers.values())
    agreement = result.agreement()
    assert set(agreement) == {"accuracy_drop", "loss_increase"} and agreement["loss_increase"].layers == {0: 3}


def test_the_written_files(tiny_run):
    config, result, out, _ = tiny_run
    files = write_pareto(result, config, out, {"command": "python x", "machine": "a CPU", "wall_seconds": 1.0})
    assert files["plot"].read_bytes().startswith(b"\x89PNG")
    report = json.loads(files["json"].read_text())
    assert report["machine"] == "a CPU" and len(report["records"]) == 7 and set(report["layers"]) == {"0"}
    assert set(report["rank_agreement"]) == {"accuracy_drop", "loss_increase"}
    assert report["settings"]["budgets"] == ["1.2x", "unlimited"]
    markdown = files["markdown"].read_text()
    assert "| budget (accuracy_drop) | 1.2x |" in markdown and "| Table 9 | 1x1 |" in markdown
    assert "machine: a CPU" in markdown and "command: `python x`" in markdown and "Spearman rho of dynamism against loss_increase" in markdown


def test_each_policy_gets_a_budget_at_its_measured_ratio(tmp_path):
    config = ParetoConfig(recipe(), budgets=("unlimited",), values=("dynamism",), calibration_batches=2, holdout=0.2)
    result = run_pareto(config, tmp_path, data=load_digits_dataset(12, limit=60), model_factory=Tiny,
                        measure=fake_timing, progress=None,
                        costs=lambda model: {n: COST_US for n, m in model.named_modules() if isinstance(m, ODConv2d)})
    by = {(r["family"], r["label"]): r for r in result.records}
    matched = by[(BUDGET, "at 1x1")]  # the 1x1 policy converts one conv: 1 + LAYER_MS
    assert matched["budget"] == f"{1 + LAYER_MS:.4f}x" and matched["ratio"] <= 1 + LAYER_MS + 1e-9
    assert matched["dynamic_layers"] == by[(POLICY, "1x1")]["dynamic_layers"] == 1
    assert by[(BUDGET, "at all_but_first")]["dynamic_layers"] == 3 and (BUDGET, "at baseline") not in by
    at_policies = {row["policy"]: row for row in compare_at_policies(summarise(result.records))}
    assert at_policies["1x1"]["budget"] == "at 1x1"  # the only placement no slower than the policy
    assert at_policies["1x1"]["budget_ratio"] <= at_policies["1x1"]["policy_ratio"] * 1.02


def record(family, label, seed, ratio, top1, value=None):
    return {"family": family, "label": label, "value_measure": value, "seed": seed, "ratio": ratio, "static_ms": 1.0,
            "latency_ms": ratio, "top1": top1, "dynamic_layers": 1, "met": True if family == BUDGET else None}


RECORDS = [
    record(POLICY, "baseline", 0, 1.0, 90), record(POLICY, "baseline", 1, 1.0, 92),
    record(POLICY, "1x1", 0, 1.4, 91), record(POLICY, "1x1", 1, 1.4, 93),
    record(BUDGET, "1.1x", 0, 1.1, 92, "dynamism"), record(BUDGET, "1.1x", 1, 1.1, 92, "dynamism"),
    record(BUDGET, "1.5x", 0, 1.5, 99, "dynamism"), record(BUDGET, "1.5x", 1, 1.5, 99, "dynamism"),
    record(BUDGET, "1.1x", 0, 1.1, 93, "loss_increase"), record(BUDGET, "1.1x", 1, 1.1, 95, "loss_increase"),
    record(BUDGET, "1.5x", 0, 1.5, 99, "loss_increase"), record(BUDGET, "1.5x", 1, 1.5, 99, "loss_increase"),
]


def test_summary_means_over_seeds():
    rows = {(r["value_measure"], r["label"]): r for r in summarise(RECORDS)}
    assert rows[(None, "1x1")]["top1_mean"] == pytest.approx(92) and rows[(None, "1x1")]["top1_std"] == pytest.approx(2 ** 0.5)
    assert rows[("loss_increase", "1.1x")]["met"] == 2 and rows[(None, "1x1")]["met"] is None


def test_each_policy_against_the_best_budget_no_slower():
    rows = {r["value_measure"]: r for r in compare_at_policies(summarise(RECORDS))}
    assert [r["policy"] for r in rows.values()] == ["1x1", "1x1"]  # the baseline is not compared
    assert rows["dynamism"]["budget"] == "1.1x" and rows["dynamism"]["difference"] == pytest.approx(0.0)  # 1.5x is slower
    assert rows["loss_increase"]["difference"] == pytest.approx(2.0) and rows["loss_increase"]["within_spread"]


def test_the_value_measures_head_to_head():
    versus = compare_values(RECORDS)  # differences 1, 3, 0, 0 over (seed, budget)
    assert versus["reference"] == "dynamism" and versus["better"] == "loss_increase"
    assert versus["against"]["loss_increase"] == {"mean_difference": pytest.approx(1.0), "std": pytest.approx(2 ** 0.5),
                                                  "pairs": 4}
    assert compare_values([r for r in RECORDS if r["value_measure"] != "loss_increase"]) is None
    tied = [{**r, "top1": 90.0} if r["family"] == BUDGET else r for r in RECORDS]
    assert compare_values(tied)["better"] is None


@pytest.mark.parametrize("kwargs, error, fix", [
    ({"recipe": recipe(pretrain_epochs=0)}, SweepSettingsError, "trained static model"),
    ({"recipe": recipe(kernel_nums=(1, 4))}, SweepSettingsError, "one -n"),
    ({"budgets": ("1.2x", "1.20x")}, SweepSettingsError, "without repeats"),
    ({"budgets": ("1.2",)}, BudgetError, "'1.2x'"),
    ({"values": ("dynamism", "entropy")}, SweepSettingsError, "accuracy_drop"),
    ({"holdout": 0.7}, SweepSettingsError, "holdout"),
    ({"start": "baseline"}, SweepSettingsError, "all_but_first"),
])
def test_bad_settings_are_refused_before_anything_runs(kwargs, error, fix):
    with pytest.raises(error, match=fix):
        ParetoConfig(**{"recipe": recipe(), **kwargs})


def test_budgets_are_normalised():
    assert ParetoConfig(recipe(), budgets=("1.50x", "none")).budgets == ("1.5x", "unlimited")


def test_the_holdout_is_a_fixed_disjoint_part_of_the_training_set():
    data = load_digits_dataset(8, limit=50)
    train, held = split_holdout(data, 0.2)
    assert len(held) == 10 and len(train.train) == 40 and train.test is data.test
    assert not set(held.indices) & set(train.train.indices)
    assert split_holdout(data, 0.2)[1].indices == held.indices
    assert split_holdout(data, 0)[1] is data.test


def test_the_script_quick_options_and_busy_refusal(monkeypatch, capsys):
    import pareto_budget
    from lab import machine_load

    args = pareto_budget.parse_args(["--quick", "--budgets", "1.1x"])
    assert args.seeds == 1 and args.budgets == ["1.1x"] and args.max_steps == 2  # explicit options win over --quick
    config = pareto_budget.config_from(args)
    assert config.recipe.seeds == (0,) and config.budgets == ("1.1x",)
    monkeypatch.setattr(machine_load, "load_average", lambda: 1000.0)
    assert pareto_budget.main(["--quick", "--out", "/nonexistent/never-written"]) == 2
    assert "--allow-busy" in capsys.readouterr().err
