"""The generated textures dataset: seeded and deterministic, balanced, in range, separate train/test streams, and
named like digits wherever a sweep takes its data."""

import pytest
import torch

from odconv_surgery.errors import DatasetError, InvalidValueError, SweepSettingsError
from odconv_surgery.experiments.data import load_dataset, load_textures_dataset
from odconv_surgery.experiments.data_spec import data_identity, parse_data_spec
from odconv_surgery.experiments.sweep_config import SweepConfig
from odconv_surgery.experiments.textures import MOTIFS, generate_textures


def test_generation_is_seeded_balanced_and_in_range():
    x, y = generate_textures(60, image_size=16, num_classes=6, seed=3)
    again, labels = generate_textures(60, image_size=16, num_classes=6, seed=3)
    assert torch.equal(x, again) and torch.equal(y, labels)
    assert x.shape == (60, 3, 16, 16) and x.dtype == torch.uint8
    assert torch.bincount(y, minlength=6).tolist() == [10] * 6
    other, _ = generate_textures(60, image_size=16, num_classes=6, seed=4)
    assert not torch.equal(x, other)
    prefix, prefix_labels = generate_textures(25, image_size=16, num_classes=6, seed=3)
    assert torch.equal(prefix, x[:25]) and torch.equal(prefix_labels, y[:25])  # a smaller set is a prefix


def test_train_and_test_are_separate_streams_and_normalised():
    data = load_textures_dataset(16, train_size=40, test_size=20, num_classes=4)
    train_x = torch.stack([data.train[i][0] for i in range(len(data.train))])
    test_x = torch.stack([data.test[i][0] for i in range(len(data.test))])
    assert len(data.train) == 40 and len(data.test) == 20 and data.num_classes == 4
    assert abs(float(train_x.mean())) < 1e-4 and abs(float(train_x.std()) - 1) < 1e-3
    assert not any(torch.equal(t, s) for t in test_x for s in train_x[:20])
    bigger = load_textures_dataset(16, train_size=80, test_size=20, num_classes=4)
    assert torch.equal(torch.stack([bigger.test[i][1] for i in range(20)]),
                       torch.stack([data.test[i][1] for i in range(20)]))  # the test set does not move


def test_the_sweep_takes_the_name_and_records_every_argument():
    assert parse_data_spec("textures?difficulty=0.5&train_size=400") == ("textures", {"difficulty": 0.5, "train_size": 400})
    assert parse_data_spec("/some/folder") is None
    assert data_identity(None) is None and "difficulty=" in data_identity("textures")
    config = SweepConfig(data="textures?train_size=400&test_size=100", policies=["baseline"], quiet=True)
    assert "train_size=400" in config.settings()["data"]
    bundle = load_dataset("textures?train_size=40&test_size=20&num_classes=3", 16)
    assert bundle.num_classes == 3 and bundle.name.startswith("textures16")
    assert len(MOTIFS) >= 10


@pytest.mark.parametrize("spec,error,match", [
    ("textures?difficulty=2", InvalidValueError, "difficulty"),
    ("textures?train_size=many", DatasetError, "is not an integer"),
    ("textures?colour=red", DatasetError, "unknown argument 'colour'"),
])
def test_bad_textures_arguments_name_the_fix(spec, error, match):
    with pytest.raises(error, match=match):
        load_dataset(spec, 16)
    with pytest.raises(SweepSettingsError, match="--data"):
        SweepConfig(data=spec, policies=["baseline"], quiet=True)
