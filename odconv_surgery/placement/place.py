"""``place_under_budget``: from a model converted everywhere (``all`` / ``all_but_first``) and fine-tuned, keep dynamic
the layers worth the most per microsecond within a latency budget, fold the rest back into plain convolutions, and
check the budget on the exported file.

Steps: each layer's marginal cost (``costs.py``) and value (``values.py``); the static model's latency, measured
beside the input model's; a greedy knapsack (``choose.py``) over the allowance ``limit - static``; the rest folded
(``folding.fold_static``); the placed model exported and timed beside the static model's file (``measure.py``); while
that measurement is over the budget (plus ``tolerance`` for timing noise), the lowest-ranked dynamic layers whose
estimated marginals cover the excess are folded and the file measured again. While a measurement leaves room under
the budget, the best-ranked folded layer whose estimate (scaled by how the file measured against the estimates) fits
the room is made dynamic again and the file measured; a restore that measures over the budget is undone. Then, with
labelled data, a brief fine-tuning of the placed model (weights only: its latency does not change) and the accuracy
before and after.
"""

from __future__ import annotations

import itertools
import warnings
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from torch import Tensor, nn

from ..errors import EmptySelectionError, InvalidTypeError, InvalidValueError
from ..deploy.machine import describe_cpu
from ..folding import fold_static
from ..model_copy import copy_model
from ..nn.odconv import ODConv2d
from ..passes.fx.swap_modules import swap_module
from ..recipe import attach_recipe, get_recipe
from ..nn.validation import check_int, check_number
from .budget import Budget, parse_budget
from .choose import choose_dynamic, rank, worst_to_cover
from .costs import marginal_costs
from .measure import ExportedFileTimer, Measure, Measurement
from .result import Accuracy, Check, PlacedLayer, PlacementResult
from .values import ValueMeasure, checked_values, measure_values, resolve_value

if TYPE_CHECKING:
    from ..experiments.data import DataBundle
    from ..experiments.training import TrainConfig

#: A measured latency this far over the budget (a fraction) still counts as within it: timing noise.
NOISE_TOLERANCE = 0.02


def brief_finetune() -> TrainConfig:
    """The default fine-tuning after folding: one epoch at a low learning rate, the temperature held at 1 (the
    model is already fine-tuned; annealing from 30 again would undo it)."""
    from ..experiments.training import TrainConfig

    return TrainConfig(epochs=1, lr=0.005, anneal_fraction=0.0, temperature_start=1.0, temperature_end=1.0,
                       progress=False)


def place_under_budget(
    model: nn.Module,
    data: Iterable,
    budget: str | Budget,
    *,
    example_input: Tensor | Sequence[Tensor],
    threads: int = 1,
    value: str | ValueMeasure | Mapping[str, float] = "dynamism",
    costs: Mapping | None = None,
    labelled: DataBundle | None = None,
    finetune: TrainConfig | bool | None = None,
    target: str = "auto",
    tune: bool | None = None,
    max_batches: int | None = None,
    tolerance: float = NOISE_TOLERANCE,
    max_checks: int = 10,
    measure: Measure | None = None,
    inplace: bool = False,
) -> tuple[nn.Module, PlacementResult]:
    """Fold the converted layers of ``model`` that are worth least per microsecond until its exported file runs
    within ``budget`` (``"1.2x"``: a ratio to the static model, measured in the same run; ``"3.5ms"``; see
    ``parse_budget``) in onnxruntime on this CPU at ``threads`` threads, batch 1, with ``example_input``'s shape.

    ``data``: calibration batches (or ``(input, target)`` pairs, e.g. a DataLoader; ``max_batches`` caps them) for
    the value measure and the folds. ``value``: a registered value measure (``"dynamism"``; ``"accuracy_drop"`` and
    ``"loss_increase"`` need ``labelled`` and evaluate on its test set), a callable ``(model, batches) -> {layer:
    value}`` (with a ``labelled`` keyword, it gets ``labelled``) or precomputed values. ``costs``: None (measured with ``layer_costs``)
    or a mapping layer -> ``LayerLatency`` / marginal microseconds. ``labelled``: a ``DataBundle`` (train and test
    sets with labels): the accuracy is evaluated on its test set and ``finetune`` (None: ``brief_finetune()``
    when labelled data is given; False: none; a ``TrainConfig``) trains the placed model on its train set.
    ``target`` and ``tune`` are ``export_onnx``'s. ``measure(static, placed) -> Measurement`` replaces the export
    and timing (tests, other runtimes). Works on a copy unless ``inplace``. Returns the placed model and a
    ``PlacementResult``; a budget that cannot be met (even fully static, or within ``max_checks`` measurements)
    gives ``met=False``, a note and a warning.
    """
    budget = parse_budget(budget)
    threads = check_int("threads", threads, minimum=1)
    tolerance = check_number("tolerance", tolerance, at_least=0, at_most=1)
    max_checks = check_int("max_checks", max_checks, minimum=1)
    layers = [name for name, m in model.named_modules() if isinstance(m, ODConv2d)]
    if not layers:
        raise EmptySelectionError("the model has no ODConv2d layer to place: convert it first (apply_odconv(model, "
                                  "'all_but_first')) and fine-tune it")
    config = _finetune_config(finetune, labelled)
    work = (model if inplace else copy_model(model)).eval()
    batches = _calibration(data, max_batches)
    label, value_fn = resolve_value(value)
    values = checked_values(measure_values(value_fn, work, batches, labelled), layers, label)
    tune = _resolved_tune(tune)
    costs_us, source, unmeasured = marginal_costs(work, layers, costs, example_input=example_input, threads=threads,
                                                  tune=tune)
    timer = ExportedFileTimer(example_input, threads=threads, target=target, tune=tune)
    measure = timer if measure is None else measure
    static, _ = fold_static(copy_model(work), batches[:1])  # the model before conversion, architecture for timing

    before = _top1(work, labelled)
    checks = [_check(budget, tolerance, len(layers), measure(static, work))]
    ranked = rank(layers, values, costs_us)
    allowance_us = (budget.limit_ms(checks[0].static_ms) - checks[0].static_ms) * 1e3
    keep, fold = (list(ranked), []) if checks[0].fits else choose_dynamic(ranked, costs_us, allowance_us)
    estimated_ms = checks[0].static_ms + sum(max(costs_us[n], 0.0) for n in keep) / 1e3
    folds: dict[str, tuple[str, float]] = {}
    unfolded = _Unfolded(work)
    if fold:
        _fold(work, batches, fold, "estimate", folds)
        checks.append(_check(budget, tolerance, len(keep), measure(static, work)))
    keep = _fold_while_over(work, static, batches, keep, costs_us, checks, folds, budget=budget, tolerance=tolerance,
                            max_checks=max_checks, measure=measure)
    keep = _restore_while_under(work, static, unfolded, ranked, keep, costs_us, checks, folds, budget=budget,
                                tolerance=tolerance, max_checks=max_checks, measure=measure)
    accuracy, steps = _finetune_and_score(work, labelled, config, before)
    placed = tuple(PlacedLayer(n, values[n], costs_us[n], n not in folds, *folds.get(n, (None, None)),
                               cost_measured=n not in unmeasured) for n in ranked)
    result = PlacementResult(budget, label, source, threads, timer.target, tolerance, placed, estimated_ms,
                             tuple(checks), checks[-1].fits, _note(budget, checks, keep, max_checks), accuracy, steps,
                             describe_cpu() if measure is timer else "")
    if not result.met:
        warnings.warn(f"budget {budget} not met: {result.note}", stacklevel=2)
    return work, result


def _fold_while_over(model: nn.Module, static: nn.Module, batches: list, keep: list[str], costs_us: dict[str, float],
                     checks: list[Check], folds: dict[str, tuple[str, float]], *, budget: Budget, tolerance: float,
                     max_checks: int, measure: Measure) -> list[str]:
    """The measured check: while the last check is over budget, fold the lowest-ranked kept layers whose estimated
    marginals cover the excess and measure again (``checks`` and ``folds`` grow); the layers still dynamic."""
    while not checks[-1].fits and keep and len(checks) - 1 < max_checks:
        excess_us = (checks[-1].placed_ms - budget.limit_ms(checks[-1].static_ms)) * 1e3
        more = worst_to_cover(keep, costs_us, excess_us)
        keep = [n for n in keep if n not in more]
        _fold(model, batches, more, f"check {len(checks)}", folds)
        checks.append(_check(budget, tolerance, len(keep), measure(static, model)))
    return keep


class _Unfolded:
    """The converted layers of a model before any fold, to put a folded layer back (``restore``), and its recipe."""

    def __init__(self, model: nn.Module) -> None:
        self.modules = {name: m for name, m in model.named_modules() if isinstance(m, ODConv2d)}
        self.recipe = get_recipe(model)

    def swap(self, model: nn.Module, name: str, folds: dict[str, tuple[str, float]]) -> tuple[nn.Module, tuple[str, float]]:
        """Put the converted layer ``name`` back in place of its fold (``folds`` forgets it); returns the folded module
        taken out and its fold record, so ``refold`` can undo it exactly."""
        folded = dict(model.named_modules())[name]
        swap_module(model, folded, self.modules[name])
        record = folds.pop(name)
        self._record(model, folds)
        return folded, record

    def refold(self, model: nn.Module, name: str, taken: tuple[nn.Module, tuple[str, float]],
               folds: dict[str, tuple[str, float]]) -> None:
        """Undo ``swap``: the folded module goes back in, with its fold record."""
        folded, record = taken
        swap_module(model, self.modules[name], folded)
        folds[name] = record
        self._record(model, folds)

    def _record(self, model: nn.Module, folds: dict[str, tuple[str, float]]) -> None:
        """The model's recipe as ``fold_static`` leaves it for the layers folded now."""
        if self.recipe is not None:
            attach_recipe(model, self.recipe.with_folded(folds))


def _restore_while_under(model: nn.Module, static: nn.Module, unfolded: _Unfolded, ranked: list[str], keep: list[str],
                         costs_us: dict[str, float], checks: list[Check], folds: dict[str, tuple[str, float]], *,
                         budget: Budget, tolerance: float, max_checks: int, measure: Measure) -> list[str]:
    """While the last check fits and leaves room, make the best-ranked folded layer that the room may hold dynamic
    again and measure; undo it when that measures over the budget (the last check is then the kept model's earlier
    one again). The estimates are scaled by how the file measured against them (the per-layer timings miss what
    the whole file shares). Returns the layers dynamic at the end, in ranking order."""
    tried: set[str] = set()
    fitting = checks[-1]
    while fitting.fits and len(checks) - 1 < max_checks:
        room_us = (budget.limit_ms(fitting.static_ms) - fitting.placed_ms) * 1e3
        estimated_us = sum(max(costs_us[n], 0.0) for n in keep)
        measured_us = (fitting.placed_ms - fitting.static_ms) * 1e3
        scale = min(max(measured_us / estimated_us, 0.25), 4.0) if estimated_us > 0 and measured_us > 0 else 1.0
        candidate = next((n for n in ranked if n in folds and n not in tried
                          and max(costs_us[n], 0.0) * scale <= room_us), None)
        if candidate is None:
            break
        tried.add(candidate)
        taken = unfolded.swap(model, candidate, folds)
        trial = _check(budget, tolerance, len(keep) + 1, measure(static, model))
        checks.append(trial)
        if trial.fits:
            keep = [n for n in ranked if n in set(keep) | {candidate}]
            fitting = trial
        else:
            unfolded.refold(model, candidate, taken, folds)
    if checks[-1] is not fitting and fitting.fits:
        checks.append(fitting)  # the returned model is the one that measured ``fitting``
    return keep


def _finetune_and_score(model: nn.Module, labelled: DataBundle | None, config: TrainConfig | None,
                        before: float | None) -> tuple[Accuracy | None, int]:
    """The accuracy after folding and, with a ``config``, after fine-tuning (and its steps); None without labels."""
    if labelled is None:
        return None, 0
    folded_top1 = _top1(model, labelled)
    if config is None:
        return Accuracy(before, folded_top1), 0
    from ..experiments.training import train_and_evaluate

    trained = train_and_evaluate(model, labelled, config)
    model.eval()
    return Accuracy(before, folded_top1, trained.top1), trained.steps


def _finetune_config(finetune: TrainConfig | bool | None, labelled: DataBundle | None) -> TrainConfig | None:
    """The ``TrainConfig`` to fine-tune with, or None; refuses fine-tuning without labels."""
    from ..experiments.data import DataBundle

    if labelled is not None and not isinstance(labelled, DataBundle):
        raise InvalidTypeError(f"labelled must be a DataBundle (train and test sets of (image, label) pairs, e.g. "
                               f"load_dataset()), got {type(labelled).__name__}")
    if finetune is None:
        return None if labelled is None else brief_finetune()
    if finetune is False:
        return None
    if labelled is None:
        raise InvalidValueError("fine-tuning needs labelled data: pass labelled=DataBundle(...) (e.g. load_dataset()), "
                                "or finetune=False")
    if finetune is True:
        return brief_finetune()
    from ..experiments.training import TrainConfig

    if not isinstance(finetune, TrainConfig):
        raise InvalidTypeError(f"finetune must be None (brief, when labelled data is given), False, True or a "
                               f"TrainConfig, got {type(finetune).__name__}")
    return finetune


def _calibration(data: Iterable, max_batches: int | None) -> list:
    """The calibration items as given (labels kept for value measures that use them), at most ``max_batches``."""
    if max_batches is not None:
        check_int("max_batches", max_batches, minimum=1)
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise InvalidTypeError(f"data must be an iterable of input batches or (input, target) pairs (a DataLoader), "
                               f"got {type(data).__name__}")
    batches = list(itertools.islice(data, max_batches))
    if not batches:
        raise InvalidValueError("the calibration data is empty: pass a few batches of the model's inputs")
    return batches


def _resolved_tune(tune: bool | None) -> bool:
    from ..deploy.export import default_tune

    if tune is not None and not isinstance(tune, bool):
        raise InvalidValueError(f"tune must be True, False or None (on unless ODCONV_TUNE=0), got {tune!r}")
    return default_tune() if tune is None else tune


def _check(budget: Budget, tolerance: float, dynamic: int, measured: Measurement) -> Check:
    return Check(dynamic, measured.static_ms, measured.placed_ms,
                 budget.fits(measured.static_ms, measured.placed_ms, tolerance))


def _fold(model: nn.Module, batches: list, names: list[str], step: str, folds: dict[str, tuple[str, float]]) -> None:
    _, report = fold_static(model, batches, names)
    folds.update({layer.name: (step, layer.relative_error) for layer in report.layers})


def _top1(model: nn.Module, labelled: DataBundle | None) -> float | None:
    if labelled is None:
        return None
    from ..experiments.training import evaluate

    return evaluate(model, labelled.test, num_classes=labelled.num_classes)[0]


def _note(budget: Budget, checks: list[Check], keep: list[str], max_checks: int) -> str:
    last = checks[-1]
    if last.fits:
        return ""
    limit = budget.limit_ms(last.static_ms)
    if not keep:
        return (f"the budget cannot be met even fully static: the static model measures {last.static_ms:.3f} ms "
                f"and the placed one {last.placed_ms:.3f} ms against a limit of {limit:.3f} ms; give a larger budget")
    return (f"still {last.placed_ms:.3f} ms against a limit of {limit:.3f} ms after {max_checks} checks, "
            f"{len(keep)} layer(s) dynamic; raise max_checks or give a larger budget")


__all__ = ["NOISE_TOLERANCE", "brief_finetune", "place_under_budget"]
