"""Datasets for sweeps: two built-in sets (offline, nothing downloaded) or a user ImageFolder.

``load_dataset(data)`` takes a built-in name, optionally with arguments as a query string
(``"textures?difficulty=0.5&train_size=4000"``, the same form as model specs, so a sweep records and a resumed
run rebuilds the very same data from one string; ``data_spec.py``), or an ImageFolder root.

Textures (``"textures"``): generated tiled motifs under per-image nuisance factors (``textures.py`` says what and
why); 8000 train / 2000 test images at 32 px by default, normalised with the training split's mean/std.

Digits (``"digits"``, the default): the 1797 8x8 grey images of ``sklearn.datasets.load_digits``, scaled to
[0, 1], upsampled bilinearly to ``image_size`` (32 by default: large enough for a stride-32 ImageNet backbone to
keep a 1x1 final map, small enough for a sweep on two CPU cores), repeated to 3 channels and normalised with the
training-set mean/std.
The train/test split is fixed (stratified, 25 % test, ``random_state=0``) so every configuration and every
resumed run sees the same test set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset, TensorDataset

from ..errors import DataNotFoundError, DatasetError, InvalidValueError
from .data_spec import BUILTIN_DATASETS, DIGITS, TEXTURE_DEFAULTS, TEXTURES, check_texture_arguments, parse_data_spec
from .textures import generate_textures

__all__ = ["DataBundle", "load_digits_dataset", "load_textures_dataset", "load_image_folder", "load_dataset", "DIGITS",
           "TEXTURES"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DataBundle:
    """Train and test datasets of (image, label) pairs plus what a model factory needs to know."""

    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    image_size: int
    in_channels: int = 3

    def describe(self) -> str:
        return (
            f"{self.name}: {len(self.train)} train / {len(self.test)} test images, {self.num_classes} classes, "
            f"{self.in_channels}x{self.image_size}x{self.image_size}"
        )


def load_digits_dataset(image_size: int = 32, *, test_fraction: float = 0.25, split_seed: int = 0, limit: int | None = None) -> DataBundle:
    """The digits dataset as 3 x ``image_size`` x ``image_size`` tensors with a fixed stratified split.

    ``limit`` keeps only the first ``limit`` images of each split (for fast tests).
    """
    if image_size < 8:
        raise InvalidValueError(f"image_size must be >= 8 (the digits are 8x8), got {image_size}")
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the digits dataset needs scikit-learn: pip install 'odconv-surgery[sweep]'") from exc
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    labels = torch.tensor(digits.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(
        list(range(len(labels))), test_size=test_fraction, random_state=split_seed, stratify=digits.target
    )
    idx_train, idx_test = torch.tensor(idx_train), torch.tensor(idx_test)
    if limit is not None:
        idx_train, idx_test = idx_train[:limit], idx_test[:limit]
    if image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = images.repeat(1, 3, 1, 1)
    mean, std = images[idx_train].mean(), images[idx_train].std().clamp_min(1e-6)
    images = (images - mean) / std
    return DataBundle(
        name=f"digits{image_size}",
        train=TensorDataset(images[idx_train], labels[idx_train]),
        test=TensorDataset(images[idx_test], labels[idx_test]),
        num_classes=10,
        image_size=image_size,
    )


def load_textures_dataset(
    image_size: int = 32, *, train_size: int = TEXTURE_DEFAULTS["train_size"], test_size: int = TEXTURE_DEFAULTS["test_size"],
    num_classes: int = TEXTURE_DEFAULTS["num_classes"], difficulty: float = TEXTURE_DEFAULTS["difficulty"],
    seed: int = TEXTURE_DEFAULTS["seed"], limit: int | None = None,
) -> DataBundle:
    """The generated textures (``textures.py``: tiled motifs, class = motif, nuisance factors drawn per image).

    Train and test are separate seeded streams: the test set stays the same when ``train_size`` changes, and a
    smaller size (or ``limit``, which caps both) gives a prefix of the larger set. Images are scaled to [0, 1] and
    normalised with the training split's mean/std, as digits are. Generated once per process per argument set.
    """
    check_texture_arguments(image_size, train_size, test_size, num_classes, difficulty, seed)
    args = {"train_size": train_size, "test_size": test_size, "num_classes": num_classes, "difficulty": difficulty,
            "seed": seed}
    if limit is not None:
        train_size, test_size = min(train_size, limit), min(test_size, limit)
    train_x, train_y = _textures(train_size, image_size, num_classes, float(difficulty), seed, "train")
    test_x, test_y = _textures(test_size, image_size, num_classes, float(difficulty), seed, "test")
    train, test = train_x.float() / 255, test_x.float() / 255
    mean, std = train.mean(), train.std().clamp_min(1e-6)
    changed = ", ".join(f"{k}={v}" for k, v in args.items() if v != TEXTURE_DEFAULTS[k])
    return DataBundle(
        name=f"textures{image_size}" + (f"({changed})" if changed else ""),
        train=TensorDataset((train - mean) / std, train_y),
        test=TensorDataset((test - mean) / std, test_y),
        num_classes=num_classes,
        image_size=image_size,
    )


@lru_cache(maxsize=4)
def _textures(n: int, image_size: int, num_classes: int, difficulty: float, seed: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``generate_textures`` cached per process (uint8: 3 kB an image at 32 px); callers must not modify the tensors."""
    return generate_textures(n, image_size=image_size, num_classes=num_classes, difficulty=difficulty, seed=seed, split=split)


def load_image_folder(root: str | os.PathLike, image_size: int = 64, *, test_fraction: float = 0.2, split_seed: int = 0) -> DataBundle:
    """A torchvision ``ImageFolder`` dataset.

    ``root`` either holds ``train/`` and ``val/`` (or ``test/``) class folders, or class folders directly, in
    which case a fixed random split (``test_fraction``, ``split_seed``) is made. Images are resized to
    ``image_size`` squared and normalised with the ImageNet mean/std.
    """
    from torchvision import datasets, transforms

    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(
            f"data directory {root} does not exist; pass an ImageFolder root (class sub-folders, or train/ and val/) "
            f"or a built-in set: {', '.join(BUILTIN_DATASETS)}"
        )
    tf = transforms.Compose(
        [
            transforms.Lambda(lambda img: img.convert("RGB")),
            transforms.Resize((image_size, image_size)),
            transforms.ToTensor(),
            transforms.Normalize(_IMAGENET_MEAN, _IMAGENET_STD),
        ]
    )
    test_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    try:
        if (root / "train").is_dir() and test_dir is not None:
            train = datasets.ImageFolder(root / "train", transform=tf)
            test = datasets.ImageFolder(test_dir, transform=tf)
            if train.classes != test.classes:
                raise DatasetError(f"{root}/train and {test_dir} have different class folders: {train.classes} vs {test.classes}")
            classes = train.classes
        else:
            full = datasets.ImageFolder(root, transform=tf)
            classes = full.classes
            generator = torch.Generator().manual_seed(split_seed)
            order = torch.randperm(len(full), generator=generator).tolist()
            n_test = max(1, int(round(len(full) * test_fraction)))
            if len(full) - n_test < 1:
                raise DatasetError(f"{root} has only {len(full)} image(s): too few to split into train and test")
            test, train = Subset(full, order[:n_test]), Subset(full, order[n_test:])
    except FileNotFoundError as exc:
        raise DataNotFoundError(
            f"{root} is not an ImageFolder: expected one sub-folder of images per class ({exc})"
        ) from exc
    return DataBundle(name=root.name or str(root), train=train, test=test, num_classes=len(classes), image_size=image_size)


def load_dataset(data: str | os.PathLike | None = None, image_size: int | None = None, *, limit: int | None = None) -> DataBundle:
    """``None`` or ``"digits"``: the digits (32 px by default); ``"textures"``, optionally with arguments
    (``"textures?difficulty=0.5&train_size=4000"``): the generated textures (32 px); anything else: an ImageFolder
    root (64 px). A folder whose name is a built-in's is reached as ``./NAME``."""
    builtin = parse_data_spec(DIGITS if data is None else data)
    if builtin is None:
        return load_image_folder(data, image_size or 64)
    name, kwargs = builtin
    if name == TEXTURES:
        return load_textures_dataset(image_size or 32, limit=limit, **kwargs)
    return load_digits_dataset(image_size or 32, limit=limit)
