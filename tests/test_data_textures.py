"""The generated textures: deterministic, balanced, split as documented, refused with the fix named, and accepted
wherever digits is (load_dataset, SweepConfig, the sweep command). Small sizes: the whole file runs in seconds."""

from __future__ import annotations

import json

import pytest
import torch

from odconv_surgery.errors import DatasetError, InvalidValueError, SweepSettingsError
from odconv_surgery.experiments.data import load_dataset, load_textures_dataset
from odconv_surgery.experiments.data_spec import TEXTURE_DEFAULTS, data_identity, parse_data_spec
from odconv_surgery.experiments.sweep_config import SCRATCH_DEFAULTS, SCRATCH_LR, SweepConfig
from odconv_surgery.experiments.textures import MOTIFS, chunk_size, generate_textures

SMALL = "textures?train_size=40&test_size=20"


def test_same_arguments_give_the_same_tensors_and_a_seed_changes_them():
    images, labels = generate_textures(30, image_size=16, seed=3)
    again, labels_again = generate_textures(30, image_size=16, seed=3)
    assert torch.equal(images, again) and torch.equal(labels, labels_again)
    other, _ = generate_textures(30, image_size=16, seed=4)
    assert not torch.equal(images, other)
    harder, _ = generate_textures(30, image_size=16, seed=3, difficulty=1.0)
    assert not torch.equal(images, harder)


def test_generation_runs_on_one_thread_and_gives_the_callers_threads_back():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        images, _ = generate_textures(30, image_size=16, seed=3)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(images, generate_textures(30, image_size=16, seed=3)[0])  # whatever the caller's setting


def test_a_smaller_set_is_a_prefix_of_a_larger_one_across_chunks():
    chunk = chunk_size(64, 3)
    assert chunk < 50  # so 50 images end inside a chunk and 2 * chunk + 5 span three
    small_images, small_labels = generate_textures(50, image_size=64, num_classes=3)
    images, labels = generate_textures(2 * chunk + 5, image_size=64, num_classes=3)
    assert torch.equal(images[:50], small_images) and torch.equal(labels[:50], small_labels)


def test_labels_are_balanced_in_any_prefix():
    _, labels = generate_textures(53, image_size=16)
    counts = torch.bincount(labels, minlength=len(MOTIFS))
    assert counts.max() - counts.min() <= 1 and counts.sum() == 53
    _, labels = generate_textures(40, image_size=16, num_classes=4)
    assert torch.bincount(labels).tolist() == [10, 10, 10, 10]


def test_images_are_uint8_of_the_asked_shape_and_use_the_range():
    images, labels = generate_textures(20, image_size=24)
    assert images.dtype == torch.uint8 and images.shape == (20, 3, 24, 24) and labels.dtype == torch.long
    assert int(images.max()) - int(images.min()) > 150  # strokes and background, not a flat field
    per_image_spread = images.flatten(1).float().std(dim=1)
    assert bool((per_image_spread > 10).all())  # every image shows its motifs
    empty_images, empty_labels = generate_textures(0, image_size=24)
    assert empty_images.shape == (0, 3, 24, 24) and empty_labels.numel() == 0


def test_split_sizes_limit_and_a_fixed_test_set():
    bundle = load_textures_dataset(16, train_size=40, test_size=20)
    assert (len(bundle.train), len(bundle.test), bundle.num_classes, bundle.image_size) == (40, 20, 10, 16)
    assert bundle.train[0][0].shape == (3, 16, 16)
    limited = load_textures_dataset(16, train_size=40, test_size=20, limit=12)
    assert (len(limited.train), len(limited.test)) == (12, 12)
    more_training = load_textures_dataset(16, train_size=60, test_size=20)
    assert torch.equal(more_training.test.tensors[1], bundle.test.tensors[1])  # labels of the same test images
    raw_test, _ = generate_textures(20, image_size=16, split="test")
    raw_train, _ = generate_textures(20, image_size=16, split="train")
    assert not any(torch.equal(t, s) for t in raw_test for s in raw_train)  # separate streams


def test_values_are_normalised_with_the_training_split():
    bundle = load_textures_dataset(16, train_size=40, test_size=20)
    train = bundle.train.tensors[0]
    assert bool(torch.isfinite(train).all()) and bool(torch.isfinite(bundle.test.tensors[0]).all())
    assert abs(float(train.mean())) < 1e-4 and abs(float(train.std()) - 1) < 1e-3
    raw, _ = generate_textures(40, image_size=16)
    expected = (raw.float() / 255 - raw.float().div(255).mean()) / raw.float().div(255).std()
    assert torch.allclose(train, expected, atol=1e-5)


@pytest.mark.parametrize("kwargs, fix", [
    ({"difficulty": 1.5}, r"difficulty must be a number in \[0, 1\]"),
    ({"num_classes": 11}, r"num_classes must be an integer in \[2, 10\]"),
    ({"image_size": 8}, r"image_size must be an integer in \[16, 512\]"),
    ({"seed": -1}, r"seed must be an integer in \[0, 2\*\*31\)"),
    ({"train_size": 1}, r"train_size must be an integer in \[2, "),
    ({"test_size": 0}, r"test_size must be an integer in \[1, "),
])
def test_a_bad_argument_names_it_and_its_range(kwargs, fix):
    with pytest.raises(InvalidValueError, match=fix):
        load_textures_dataset(**{"image_size": 16, "train_size": 4, "test_size": 2, **kwargs})


@pytest.mark.parametrize("spec, fix", [
    ("textures?diff=0.5", "unknown argument 'diff'; textures takes train_size, test_size"),
    ("textures?train_size=many", "train_size='many' is not an integer"),
    ("textures?difficulty", r"is not NAME\?key=value"),
    ("digits?train_size=5", "digits takes no arguments"),
])
def test_a_bad_data_spec_names_the_accepted_arguments(spec, fix):
    with pytest.raises(DatasetError, match=fix):
        load_dataset(spec)


def test_load_dataset_reads_the_spec_and_records_every_argument():
    bundle = load_dataset(SMALL + "&difficulty=0.2&num_classes=4", 16)
    assert (len(bundle.train), len(bundle.test), bundle.num_classes) == (40, 20, 4)
    assert bundle.name == "textures16(train_size=40, test_size=20, num_classes=4, difficulty=0.2)"
    assert parse_data_spec("textures") == ("textures", {}) and parse_data_spec("some/folder") is None
    identity = data_identity("textures?difficulty=0.2")
    assert identity == "textures?" + "&".join(
        f"{k}={ {**TEXTURE_DEFAULTS, 'difficulty': 0.2}[k]}" for k in sorted(TEXTURE_DEFAULTS))
    assert data_identity(None) is None and data_identity("digits") is None


def test_sweep_config_accepts_textures_and_trains_them_from_scratch_at_their_rate():
    config = SweepConfig(data="textures")
    assert config.settings()["data"] == data_identity("textures")
    assert config.pretrain_lr == SCRATCH_LR["textures"] != SCRATCH_DEFAULTS["lr"]
    assert SweepConfig(data="textures", pretrain_epochs=0).lr == SCRATCH_LR["textures"]
    assert SweepConfig(data="textures", pretrain_lr=0.05).pretrain_lr == 0.05  # a given rate wins
    assert SweepConfig().pretrain_lr == SCRATCH_DEFAULTS["lr"]  # digits unchanged
    with pytest.raises(SweepSettingsError, match=r"--data.*difficulty must be a number in \[0, 1\]"):
        SweepConfig(data="textures?difficulty=2")
    with pytest.raises(SweepSettingsError, match=r"--data.*image_size must be an integer in \[16"):
        SweepConfig(data="textures", image_size=12)
    with pytest.raises(SweepSettingsError, match="'digits', 'textures"):
        SweepConfig(data="texture")  # neither a built-in set nor a directory


def test_the_sweep_command_runs_on_textures(tmp_path, capsys):
    from odconv_surgery.cli import main

    out = tmp_path / "out"
    argv = ["sweep", "--data", SMALL, "--image-size", "16", "--policies", "baseline", "--pretrain-epochs", "0",
            "--epochs", "1", "--max-steps", "1", "--batch-size", "8", "--seeds", "1", "--no-latency", "-q", "-o", str(out)]
    assert main(argv) == 0
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["status"] == "ok" and record["dataset"].startswith("textures16(")
    assert record["settings"]["data"] == data_identity(SMALL) and record["settings"]["lr"] == SCRATCH_LR["textures"]
    assert main([*argv[:2], "textures?difficulty=2", *argv[3:-1], str(tmp_path / "bad")]) == 1
    assert "difficulty must be a number in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
