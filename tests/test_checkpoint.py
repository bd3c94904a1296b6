import pytest
import torch
import torchvision
from torch import nn

from conftest import randomise_attention
from odconv_surgery import CheckpointMismatchError, ODConv2d, apply_odconv, load, save


def test_save_load_roundtrip(tmp_path):
    base = torchvision.models.resnet18(num_classes=10).eval()
    model, _ = apply_odconv(base, "last:2", kernel_num=2, overrides={r"layer4\.1\.conv2": {"kernel_num": 3}})
    randomise_attention(model)
    path = save(model, tmp_path / "ckpt" / "m.pt")
    restored = load(torchvision.models.resnet18(num_classes=10).eval(), path)
    assert restored.layer4[1].conv2.kernel_num == 3 and isinstance(restored.layer4[0].conv1, ODConv2d)
    assert not isinstance(restored.layer3[1].conv2, ODConv2d)
    assert restored.odconv_recipe.policy == "last:2"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(restored(x), model(x))


def test_mismatched_checkpoint_lists_keys(tmp_path):
    model, _ = apply_odconv(torchvision.models.resnet18(num_classes=10))
    path = save(model, tmp_path / "m.pt")
    with pytest.raises(CheckpointMismatchError, match=r"Shape mismatches: fc.bias.*fc.weight: checkpoint \(10, 512\)"):
        load(torchvision.models.resnet18(num_classes=5), path)
    with pytest.raises(CheckpointMismatchError, match="does not have"):
        load(nn.Sequential(nn.Conv2d(3, 3, 3)), path)


def test_bad_files_and_unconverted_models(tmp_path):
    with pytest.raises(ValueError, match="apply_odconv"):
        save(nn.Conv2d(3, 3, 3), tmp_path / "x.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable odconv-surgery checkpoint"):
        load(nn.Conv2d(3, 3, 3), junk)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="odconv_surgery.save"):
        load(nn.Conv2d(3, 3, 3), tmp_path / "other.pt")
