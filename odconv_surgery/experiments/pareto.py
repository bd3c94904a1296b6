"""The Pareto sweep (issue #19, item 4): accuracy against measured latency, for the paper's Table 9 placements and
for budgeted placements (``placement.place_under_budget``) of the same trained model, per seed.

Per seed:

1. **Static model**: trained once and cached (the sweep's pretraining, ``pretrain.py``) on the training set less
   a held-out split (``holdout``) that no model trains on: the value measures that need labels are evaluated there,
   so the layers are not chosen on the test set the accuracy is reported on.
2. **Table 9 policies** (and the baseline): each converts a copy and fine-tunes it with the sweep's recipe
   (``SweepConfig.train_config``); its exported file is timed beside the static model's in the same run (the
   budget's own check, ``placement.measure``) and its test top-1 evaluated.
3. **Budgets**: the ``start`` model (``all_but_first``, converted and fine-tuned in step 2) is the input of every
   budget. Its per-layer costs (``deploy.layer_costs``) and values (every measure: ``kernel_dynamism`` on the
   calibration batches, the fold drops on the held-out split) are measured once, then ``place_under_budget`` runs
   per budget and value measure: choose, fold, measured check, brief fine-tuning. Besides the fixed budgets, with
   ``match_policies`` each Table 9 policy's ratio measured in step 2 is a budget of its own (labelled ``at POLICY``),
   so every policy meets a placement with exactly its latency, whatever the input size makes the ratios.
4. **Agreement**: Spearman's rho of dynamism against each fold drop over the layers (``placement.agreement``).

``run_pareto`` returns the raw records; ``pareto_report`` summarises, compares and writes them.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..errors import SweepSettingsError
from ..model_copy import copy_model
from ..placement.agreement import RankAgreement, rank_agreement
from ..placement.budget import parse_budget
from ..placement.measure import ExportedFileTimer, Measure
from .data import DataBundle, load_dataset
from .distributed import DistContext
from .model_spec import parse_model_spec
from .pretrain import CACHE_DIR
from .sweep import convert_in_place, starting_model
from .sweep_config import BASELINE, SweepConfig
from .training import TrainConfig, train_and_evaluate

__all__ = ["DEFAULT_BUDGETS", "DEFAULT_VALUES", "MATCHED", "ParetoConfig", "ParetoResult", "VALUE_CHOICES", "run_pareto",
           "split_holdout"]

#: The budgets of issue #19: ratios to the static model measured in the same run, and none.
DEFAULT_BUDGETS = ("1.05x", "1.1x", "1.2x", "1.3x", "1.5x", "unlimited")
#: The value measures the sweep can place with: the cheap one and the two fold drops.
VALUE_CHOICES = ("dynamism", "accuracy_drop", "loss_increase")
#: Both kinds by default, so the front says which placed better: the cheap measure and the finer fold drop.
DEFAULT_VALUES = ("dynamism", "loss_increase")
POLICY, BUDGET = "policy", "budget"
#: The per-layer fold drop each label-based value measure reads.
_DROP_FIELDS = {"accuracy_drop": "top1_drop", "loss_increase": "loss_increase"}


@dataclass(frozen=True)
class ParetoConfig:
    """What the Pareto sweep runs. ``recipe``: the model, data, seeds, pretraining and fine-tuning (a
    ``SweepConfig``, from a trained model; its ``policies`` are the Table 9 rows, baseline included, with one
    kernel number and one variant). ``budgets``: ``parse_budget`` texts. ``values``: ``VALUE_CHOICES`` to place
    with. ``start``: the policy every budget starts from. ``threads``: onnxruntime threads of every timing.
    ``calibration_batches``: training batches for the values and the folds. ``holdout``: the fraction of the
    training set kept out of training for the label-based values (0: they are evaluated on the test set).
    ``drop_samples``: at most this many held-out samples per fold drop (None: all). ``match_policies``: also place at
    each Table 9 policy's measured ratio (per seed, labelled ``at POLICY``)."""

    recipe: SweepConfig = field(default_factory=SweepConfig)
    budgets: Sequence[str] = DEFAULT_BUDGETS
    values: Sequence[str] = DEFAULT_VALUES
    start: str = "all_but_first"
    threads: int = 1
    calibration_batches: int = 8
    holdout: float = 0.1
    drop_samples: int | None = None
    match_policies: bool = True

    def __post_init__(self) -> None:
        recipe = self.recipe
        if not isinstance(recipe, SweepConfig):
            raise SweepSettingsError(f"recipe must be a SweepConfig, got {type(recipe).__name__}")
        if not recipe.from_trained:
            raise SweepSettingsError("the Pareto sweep starts from a trained static model: give pretrain_epochs >= 1 "
                                     "(--pretrain-epochs) or a checkpoint (--from)")
        if len(recipe.kernel_nums) != 1 or len(recipe.variants) != 1:
            raise SweepSettingsError(f"the Pareto sweep places one method at one kernel number: give one -n and one "
                                     f"--variants, got {list(recipe.kernel_nums)} and {list(recipe.variants)}")
        budgets = tuple(self.budgets)
        if not budgets or len(set(map(str, map(parse_budget, budgets)))) != len(budgets):
            raise SweepSettingsError(f"budgets must be a non-empty list without repeats, got {list(budgets)}")
        values = tuple(self.values)
        if not values or len(set(values)) != len(values) or any(v not in VALUE_CHOICES for v in values):
            raise SweepSettingsError(f"values must be a non-empty list of {', '.join(VALUE_CHOICES)} without repeats, "
                                     f"got {list(values)}")
        if self.start == BASELINE:
            raise SweepSettingsError("start must be a converting policy such as 'all_but_first', not the baseline")
        _positive_int("threads", self.threads)
        _positive_int("calibration_batches", self.calibration_batches)
        if self.drop_samples is not None:
            _positive_int("drop_samples", self.drop_samples)
        if not isinstance(self.match_policies, bool):
            raise SweepSettingsError(f"match_policies must be True or False, got {self.match_policies!r}")
        if isinstance(self.holdout, bool) or not isinstance(self.holdout, (int, float)) or not 0 <= self.holdout < 0.5:
            raise SweepSettingsError(f"holdout must be a fraction in [0, 0.5), got {self.holdout!r}")
        object.__setattr__(self, "budgets", tuple(str(parse_budget(b)) for b in budgets))
        object.__setattr__(self, "values", values)

    def settings(self) -> dict[str, Any]:
        """Everything that shapes the results (the JSON records it)."""
        return {"recipe": self.recipe.settings(), "policies": list(self.recipe.policies), "seeds": list(self.recipe.seeds),
                "variant": self.recipe.variants[0], "kernel_num": self.recipe.kernel_nums[0],
                "budgets": list(self.budgets), "values": list(self.values), "start": self.start, "threads": self.threads,
                "calibration_batches": self.calibration_batches, "holdout": self.holdout,
                "drop_samples": self.drop_samples, "match_policies": self.match_policies}


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SweepSettingsError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass
class ParetoResult:
    """Raw results: one record per (seed, policy) and (seed, value measure, budget); per seed and layer its values,
    fold drops and marginal cost; the rank agreement of dynamism with each fold drop (over the seeds done)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    layers: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)
    data: str = ""

    def agreement(self) -> dict[str, RankAgreement]:
        """Dynamism against each fold drop: ``{"accuracy_drop": ..., "loss_increase": ...}`` (empty before a seed)."""
        if not self.layers:
            return {}
        dynamism = {seed: {n: v["dynamism"] for n, v in layers.items()} for seed, layers in self.layers.items()}
        return {name: rank_agreement(dynamism, {seed: {n: v[key] for n, v in layers.items()}
                                                for seed, layers in self.layers.items()}, names=("dynamism", name))
                for name, key in _DROP_FIELDS.items()}


CostTable = Callable[[nn.Module], Mapping]


def run_pareto(config: ParetoConfig, out_dir: str | Path, *, data: DataBundle | None = None,
               model_factory: Callable[[int], nn.Module] | None = None, measure: Measure | None = None,
               costs: CostTable | None = None,
               on_seed: Callable[[ParetoResult], None] | None = None,
               progress: Callable[[str], None] | None = print) -> ParetoResult:
    """Run the sweep; the pretrained static models are cached in ``out_dir/pretrained``. ``data`` overrides
    ``config.recipe.data``, ``model_factory(num_classes)`` ``config.recipe.model`` (which then only names it).
    ``measure(static, model) -> Measurement`` and ``costs(model) -> {layer: marginal us}`` replace the
    exported-file timing and ``layer_costs`` (tests, other runtimes). ``on_seed(result)`` is called after each
    seed (the script writes its report there, so an interrupted run keeps the seeds done)."""
    recipe = config.recipe
    say = progress or (lambda _text: None)
    data = data if data is not None else load_dataset(recipe.data, recipe.image_size, limit=recipe.limit)
    train_data, held_out = split_holdout(data, config.holdout)
    if model_factory is None:
        spec = parse_model_spec(recipe.model, allow_import=recipe.allow_import)
        model_factory = lambda classes: spec.build(num_classes=classes)  # noqa: E731
    result = ParetoResult(data=train_data.describe())
    for seed in recipe.seeds:
        say(f"seed {seed}: {train_data.describe()}")
        _run_seed(seed, config, train_data, held_out, model_factory, Path(out_dir) / CACHE_DIR, result, measure,
                  costs, say)
        if on_seed is not None:
            on_seed(result)
    return result


def split_holdout(data: DataBundle, fraction: float, seed: int = 0) -> tuple[DataBundle, Dataset]:
    """``data`` with ``fraction`` of its training set moved out (a fixed random pick, ``seed``), and those samples:
    labelled data no model trains on. ``fraction`` 0: ``data`` as it is and its test set."""
    if fraction == 0:
        return data, data.test
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed)).tolist()
    cut = round(len(order) * fraction)
    if cut < 1 or len(order) - cut < 2:
        raise SweepSettingsError(f"holdout {fraction} of {len(order)} training images leaves no held-out or too few "
                                 "training images; give a larger data set or another --holdout")
    train = dataclasses.replace(data, name=f"{data.name} less a {fraction:g} holdout",
                                train=Subset(data.train, sorted(order[cut:])))
    return train, Subset(data.train, sorted(order[:cut]))


def _run_seed(seed: int, config: ParetoConfig, data: DataBundle, held_out: Dataset,
              factory: Callable[[int], nn.Module], cache_dir: Path, result: ParetoResult, measure: Measure | None,
              costs: CostTable | None, say: Callable[[str], None]) -> None:
    recipe = config.recipe
    static, record = starting_model(seed, recipe, data, factory, DistContext(), cache_dir)
    static.eval()
    example = data.test[0][0].unsqueeze(0)
    timer = measure or ExportedFileTimer(example, threads=config.threads)
    start = None
    budgets = [(budget, budget) for budget in config.budgets]
    for policy in dict.fromkeys([*recipe.policies, config.start]):
        model, row = _policy_point(policy, seed, config, data, static, timer)
        if policy in recipe.policies:
            result.records.append({**row, "top1_static": record.get("top1_static")})
            say(_line(row))
            if config.match_policies and policy != BASELINE:
                budgets.append((_matching_budget(row["ratio"]), f"{MATCHED}{policy}"))
        if policy == config.start:
            start = model
    calibration = _calibration(data, recipe.batch_size, config.calibration_batches, seed)
    layers = _layer_table(start, calibration, held_out, example, config, costs)
    result.layers[seed] = layers
    finetune = _brief(recipe, seed)
    for value in config.values:
        values = {name: entry[_DROP_FIELDS.get(value, "dynamism")] for name, entry in layers.items()}
        for budget, label in budgets:
            row = _budget_point(start, calibration, budget, value, values, layers, example, config, data, finetune,
                                measure, seed)
            result.records.append({**row, "label": label, "budget": budget})
            say(_line(row if label == budget else {**row, "label": f"{budget} ({label})"}))


#: The label prefix of a budget set at a Table 9 policy's measured ratio.
MATCHED = "at "


def _matching_budget(ratio: float) -> str:
    """A ratio budget at a policy's measured ``ratio`` (1x at least: a policy measured faster than the static model,
    within noise, is matched by the static model's latency)."""
    return f"{max(ratio, 1.0):.4f}x"


def _policy_point(policy: str, seed: int, config: ParetoConfig, data: DataBundle, static: nn.Module,
                  timer: Measure) -> tuple[nn.Module, dict[str, Any]]:
    """Convert a copy of ``static`` under ``policy``, fine-tune it (the sweep's recipe), time and evaluate it."""
    recipe, began = config.recipe, time.perf_counter()
    model = copy_model(static)
    converted = convert_in_place(model, policy, recipe.kernel_nums[0], seed, recipe, recipe.variants[0])
    trained = train_and_evaluate(model, data, recipe.train_config(seed), DistContext())
    model.eval()
    measured = timer(static, model)
    return model, {"seed": seed, "family": POLICY, "label": policy, "value_measure": None,
                   "ratio": measured.ratio, "static_ms": measured.static_ms, "latency_ms": measured.placed_ms,
                   "top1": trained.top1, "converted_layers": converted, "dynamic_layers": converted, "met": None,
                   "steps": trained.steps, "seconds": time.perf_counter() - began}


def _calibration(data: DataBundle, batch_size: int, batches: int, seed: int) -> list:
    """The first ``batches`` batches of a seeded shuffle of the training set: the values' and the folds' data."""
    loader = DataLoader(data.train, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    return list(itertools.islice(loader, batches))


def _layer_table(model: nn.Module, calibration: list, held_out: Dataset, example: torch.Tensor,
                 config: ParetoConfig, costs: CostTable | None) -> dict[str, dict[str, float]]:
    """Per converted layer: its dynamism, fold drops (top-1 points, loss, on ``held_out``), fold error and
    marginal microseconds: measured once, reused by every budget."""
    from ..folding import kernel_dynamism
    from ..placement.fold_drop import fold_drops

    dynamism = kernel_dynamism(model, calibration)
    drops = fold_drops(model, calibration, held_out, max_samples=config.drop_samples)
    if costs is None:
        from ..deploy.export import default_tune
        from ..deploy.layer_costs import layer_costs

        table = layer_costs(model, example, threads=config.threads, tune=default_tune())
    else:
        table = costs(model)
    out = {}
    for name, drop in drops.items():
        cost = table.get(name, math.nan)  # a LayerLatency, or marginal microseconds
        out[name] = {"dynamism": dynamism[name], "top1_drop": drop.top1_drop, "loss_increase": drop.loss_increase,
                     "fold_error": drop.fold_error, "marginal_us": float(getattr(cost, "marginal_us", cost))}
    return out


def _brief(recipe: SweepConfig, seed: int) -> TrainConfig:
    """The brief fine-tuning after folding, at the sweep's batch size, step cap and clipping."""
    from ..placement import brief_finetune

    return dataclasses.replace(brief_finetune(), seed=seed, batch_size=recipe.batch_size,
                               max_steps_per_epoch=recipe.max_steps_per_epoch, grad_clip=recipe.grad_clip)


def _budget_point(start: nn.Module, calibration: list, budget: str, value: str, values: dict[str, float],
                  layers: dict[str, dict[str, float]], example: torch.Tensor, config: ParetoConfig, data: DataBundle,
                  finetune: TrainConfig, measure: Measure | None, seed: int) -> dict[str, Any]:
    from ..placement import place_under_budget

    began = time.perf_counter()
    costs_us = {name: entry["marginal_us"] for name, entry in layers.items()}
    _, placed = place_under_budget(start, calibration, budget, example_input=example, threads=config.threads,
                                   value=values, costs=costs_us, labelled=data, finetune=finetune, measure=measure)
    accuracy = placed.accuracy
    return {"seed": seed, "family": BUDGET, "label": budget, "value_measure": value, "ratio": placed.measured.ratio,
            "static_ms": placed.static_ms, "latency_ms": placed.measured.placed_ms,
            "top1": accuracy.finetuned if accuracy.finetuned is not None else accuracy.folded,
            "top1_folded": accuracy.folded, "top1_start": accuracy.input, "converted_layers": len(placed.layers),
            "dynamic_layers": len(placed.chosen), "chosen": placed.chosen, "met": placed.met,
            "checks": len(placed.checks) - 1, "steps": placed.finetune_steps, "seconds": time.perf_counter() - began}


def _line(row: dict[str, Any]) -> str:
    what = row["label"] if row["family"] == POLICY else f"budget {row['label']} ({row['value_measure']})"
    return (f"  seed {row['seed']} {what}: {row['ratio']:.2f}x of {row['static_ms']:.3f} ms, top-1 {row['top1']:.2f} %, "
            f"{row['dynamic_layers']} dynamic layer(s), {row['seconds']:.0f} s")
