"""Validating the cheap value measure (issue #19, item 2): Spearman's rank correlation of dynamism against the
accuracy lost when a layer alone is folded, per seed and over seeds."""

from __future__ import annotations

import math
import random

import pytest

from odconv_surgery.errors import InvalidValueError
from odconv_surgery.experiments.data import DataBundle
from odconv_surgery.placement.agreement import average_ranks, rank_agreement, spearman, value_agreement

from helpers.branches import branches_model, labelled_inputs


def test_average_ranks_share_ties():
    assert average_ranks([10, 20, 20, 5]) == [2, 3.5, 3.5, 1]
    assert average_ranks([math.inf, 0, -math.inf]) == [3, 2, 1]


def test_spearman_of_known_orders():
    a = [0.1, 0.5, 0.2, 0.9, 0.3]
    assert spearman(a, [x ** 3 + 7 for x in a]) == pytest.approx(1.0)  # any increasing map: the same ranking
    assert spearman(a, [-x for x in a]) == pytest.approx(-1.0)
    # ranks (1, 2, 3) against tied ranks (1.5, 1.5, 3): cov 1.5, variances 2 and 1.5, rho = 1.5 / sqrt(3)
    assert spearman([1, 2, 3], [0, 0, 7]) == pytest.approx(1.5 / math.sqrt(3))
    assert math.isnan(spearman([1, 2, 3], [4, 4, 4]))  # a constant measure ranks nothing


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    for _ in range(5):
        a = [rng.choice([0, 1, 2, 3, 4.5]) for _ in range(12)]
        b = [rng.random() if rng.random() < 0.7 else 0.0 for _ in range(12)]
        assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)


@pytest.mark.parametrize("a, b, fix", [([1, 2], [1, 2, 3], "one length"), ([1], [2], "at least 2"),
                                       ([1, math.nan], [1, 2], "without NaN")])
def test_spearman_refuses_bad_input(a, b, fix):
    with pytest.raises(InvalidValueError, match=fix):
        spearman(a, b)


def test_rank_agreement_per_seed_and_mean():
    reference = {0: {"a": 0.0, "b": 1.0, "c": 2.0}, 1: {"a": 2.0, "b": 1.0, "c": 0.0}, 2: {"a": 1.0, "b": 1.0, "c": 1.0}}
    cheap = {seed: {"a": 1.0, "b": 2.0, "c": 3.0, "extra": 9.0} for seed in reference}
    agreement = rank_agreement(cheap, reference)
    assert agreement.per_seed[0] == pytest.approx(1.0) and agreement.per_seed[1] == pytest.approx(-1.0)
    assert math.isnan(agreement.per_seed[2])  # left out of the mean
    assert agreement.mean == pytest.approx(0.0) and agreement.std == pytest.approx(math.sqrt(2))
    assert agreement.layers == {0: 3, 1: 3, 2: 3}
    assert agreement.to_dict()["per_seed"]["2"] is None
    with pytest.raises(InvalidValueError, match="'c'"):
        rank_agreement({0: {"a": 1.0, "b": 2.0}}, {0: reference[0]})
    with pytest.raises(InvalidValueError, match="same, non-empty seeds"):
        rank_agreement({0: cheap[0]}, {1: reference[0]})


def test_dynamism_against_the_fold_drop_on_models_where_the_ranking_is_known():
    """Two 'seeds', three branches each (helpers.branches). In both, branch 0 has a constant attention (dynamism 0,
    drop 0) and branch 1's output counts for nothing (drop 0); branch 2 is dynamic and used (drop > 0).
    Seed 'weak': branch 1 barely dynamic (scale 0.1 < 2): dynamism ranks 1, 2, 3 against drop ranks 1.5, 1.5, 3,
    rho = 1.5 / sqrt(3). Seed 'misled': branch 1 the most dynamic (scale 20): ranks 1, 3, 2 against 1.5, 1.5, 3,
    rho = 0."""
    models = {"weak": branches_model((0.0, 0.1, 2.0), (1, 0, 1)), "misled": branches_model((0.0, 20.0, 2.0), (1, 0, 1))}
    calibration, test = labelled_inputs(models["weak"])
    bundle = DataBundle("branches", None, test, num_classes=4, image_size=8)
    agreement = value_agreement(models, calibration, bundle)
    assert (agreement.cheap, agreement.reference) == ("dynamism", "accuracy_drop")
    assert agreement.per_seed["weak"] == pytest.approx(1.5 / math.sqrt(3))
    assert agreement.per_seed["misled"] == pytest.approx(0.0, abs=1e-12)
    assert agreement.mean == pytest.approx(0.75 / math.sqrt(3))
    assert "mean +0.43" in agreement.summary()
