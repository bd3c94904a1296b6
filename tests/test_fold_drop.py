"""The accuracy-drop value measure (issue #19, item 2): what folding one layer alone costs on held-out labelled data,
and its use by place_under_budget. Models are built so that the answer is known (helpers.branches)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import TensorDataset

from odconv_surgery import ODConv2d, fold_static
from odconv_surgery.errors import DatasetError, InvalidTypeError, InvalidValueError
from odconv_surgery.experiments.data import DataBundle
from odconv_surgery.experiments.training import evaluate
from odconv_surgery.placement import Measurement, place_under_budget
from odconv_surgery.placement.fold_drop import fold_drops
from odconv_surgery.placement.values import VALUE_MEASURES, measure_values, takes_labelled

from helpers.branches import branches_model, labelled_inputs

# branches.0: constant attention; branches.1: the most dynamic, but its output is multiplied by 0; branches.2:
# dynamic and used.
SCALES, GAINS = (0.0, 20.0, 2.0), (1.0, 0.0, 1.0)


@pytest.fixture(scope="module")
def case():
    model = branches_model(SCALES, GAINS)
    calibration, test = labelled_inputs(model)
    return model, calibration, test


def test_only_a_used_dynamic_layer_loses_accuracy_when_folded(case):
    model, calibration, test = case
    drops = fold_drops(model, calibration, test)
    assert list(drops) == ["branches.0", "branches.1", "branches.2"]
    assert drops["branches.0"].top1_drop == 0 and abs(drops["branches.0"].loss_increase) < 1e-5  # folds exactly
    assert drops["branches.1"].top1_drop == 0 and drops["branches.1"].loss_increase == 0  # its output counts for 0
    assert drops["branches.1"].fold_error > 0.1  # ... though the fold changes that layer's own output
    assert drops["branches.2"].top1_drop > 0 and drops["branches.2"].loss_increase > 0


def test_the_drop_is_what_folding_that_layer_alone_loses(case):
    model, calibration, test = case
    before, _ = evaluate(model, test)
    folded, _ = fold_static(copy.deepcopy(model), calibration, ["branches.2"])
    after, _ = evaluate(folded, test)
    assert fold_drops(model, calibration, test, layers=["branches.2"])["branches.2"].top1_drop == \
        pytest.approx(before - after)


def test_the_model_is_left_as_it_was(case):
    model, calibration, test = case
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fold_drops(model, calibration, test)
    assert all(isinstance(model.get_submodule(f"branches.{i}"), ODConv2d) for i in range(3))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_max_samples_evaluates_the_first_samples_only(case):
    model, calibration, test = case
    first = TensorDataset(*(t[:20] for t in test.tensors))
    capped = fold_drops(model, calibration, test, layers=["branches.2"], max_samples=20)["branches.2"]
    assert capped.top1_drop == pytest.approx(fold_drops(model, calibration, first, layers=["branches.2"])["branches.2"].top1_drop)
    assert (capped.top1_drop / 5) == pytest.approx(round(capped.top1_drop / 5))  # 20 samples: steps of 5 points


def test_test_data_without_labels_or_samples_is_refused(case):
    model, calibration, test = case
    with pytest.raises(InvalidValueError, match="label"):
        fold_drops(model, calibration, [test.tensors[0][:4]])
    with pytest.raises(DatasetError, match="empty"):
        fold_drops(model, calibration, [])
    with pytest.raises(InvalidTypeError, match="Dataset"):
        fold_drops(model, calibration, "test.pt")


def bundle(calibration, test) -> DataBundle:
    return DataBundle("branches", TensorDataset(*calibration[0]), test, num_classes=4, image_size=8)


def fake_timing(static, placed) -> Measurement:
    """1 ms static, 10 us per layer still dynamic."""
    return Measurement(1.0, 1.0 + 0.01 * sum(isinstance(m, ODConv2d) for m in placed.modules()))


@pytest.mark.parametrize("value, kept", [("accuracy_drop", "branches.2"), ("loss_increase", "branches.2"),
                                         ("dynamism", "branches.1")])
def test_a_budget_for_one_layer_keeps_the_one_each_measure_values_most(case, value, kept):
    model, calibration, test = case
    placed, result = place_under_budget(model, calibration, "1.015x", example_input=test.tensors[0][:1],
                                        value=value, costs=dict.fromkeys(["branches.0", "branches.1", "branches.2"], 10.0),
                                        labelled=bundle(calibration, test), finetune=False, measure=fake_timing,
                                        tolerance=0.0)
    assert result.chosen == [kept] and result.value_measure == value
    assert [n for n, m in placed.named_modules() if isinstance(m, ODConv2d)] == [kept]


def test_the_label_measures_are_registered_and_need_labelled_data(case):
    model, calibration, test = case
    assert {"dynamism", "accuracy_drop", "loss_increase"} <= set(VALUE_MEASURES)
    with pytest.raises(InvalidValueError, match="labelled=DataBundle"):
        place_under_budget(model, calibration, "1.2x", example_input=test.tensors[0][:1], value="accuracy_drop",
                           costs=dict.fromkeys(["branches.0", "branches.1", "branches.2"], 10.0), measure=fake_timing)
    with pytest.raises(InvalidTypeError, match="DataBundle"):
        VALUE_MEASURES["loss_increase"](model, calibration, labelled=test)


def test_a_measure_that_declares_labelled_gets_it():
    seen = []

    def two(model, batches):
        return {"two": 1.0}

    def three(model, batches, labelled=None):
        seen.append(labelled)
        return {"three": 1.0}

    assert not takes_labelled(two) and takes_labelled(three) and takes_labelled(lambda m, b, **kw: {})
    assert measure_values(two, None, [], labelled="bundle") == {"two": 1.0}
    assert measure_values(three, None, [], labelled="bundle") == {"three": 1.0} and seen == ["bundle"]
