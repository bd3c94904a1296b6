from collections import OrderedDict
from dataclasses import dataclass, fields

import numpy as np
import pytest
import torch
from torch import nn

from odconv_surgery import apply_odconv
from odconv_surgery.deploy.export import export_marked, export_onnx
from odconv_surgery.passes.onnx import OnnxModelError
from odconv_surgery.deploy.runtime import OrtRunner, ParityResult, check_parity, cuda_available, flatten_outputs

from helpers.onnx_models import tiny


@pytest.fixture(scope="module")
def exported():
    model = tiny(1)
    x = torch.randn(1, 8, 16, 16)
    return model, export_onnx(model, None, x), x


def test_runner_numpy_and_torch(exported):
    model, proto, x = exported
    runner = OrtRunner(proto, device="cpu", threads=1, optimization="extended", warmup=2)
    assert runner.device == "cpu"
    a = runner(x)
    b = runner(x.numpy())
    np.testing.assert_array_equal(a, b)
    with torch.no_grad():
        np.testing.assert_allclose(a, model(x).numpy(), atol=1e-4, rtol=1e-4)
    times = runner.time(batch=2, repeats=3, warmup=1)
    assert len(times) == 3 and all(t > 0 for t in times)


def test_parity_helper_reports(exported):
    model, proto, x = exported
    results = check_parity(model, proto, x, batches=(1, 4))
    assert [r.batch for r in results] == [1, 4] and all(r.ok for r in results)
    with torch.no_grad():
        model.c1.weight.mul_(1.5)
    try:
        with pytest.raises(AssertionError, match="parity"):
            check_parity(model, proto, x, batches=(2,))
    finally:
        with torch.no_grad():
            model.c1.weight.div_(1.5)


def test_runner_errors(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_text("not onnx at all")
    with pytest.raises(OnnxModelError, match="x.onnx is not a valid ONNX model"):
        OrtRunner(str(bad))
    with pytest.raises(OnnxModelError, match="marker"):
        OrtRunner(export_marked(tiny(1), torch.randn(1, 8, 16, 16)))
    with pytest.raises(ValueError, match="optimization must be one of .* got 'max'"):
        OrtRunner(export_onnx(tiny(1), None, torch.randn(1, 8, 16, 16)), optimization="max")


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="needs onnxruntime CUDAExecutionProvider and a GPU")
def test_cuda_iobinding_batch200(exported):
    model, proto, x = exported
    runner = OrtRunner(proto, device="cuda", warmup=1, warmup_batch=200)
    assert runner.device == "cuda"
    xb = torch.randn(200, 8, 16, 16)
    out = runner.run_iobinding(xb)
    with torch.no_grad():
        ref = model(xb).numpy()
    assert np.abs(out - ref).max() <= 1e-3 * np.abs(ref).max()


@dataclass
class _HFLikeOutput(OrderedDict):
    """transformers' ModelOutput in miniature: a dataclass that is also a mapping of its non-None fields."""

    logits: torch.Tensor | None = None
    features: torch.Tensor | None = None
    attentions: torch.Tensor | None = None

    def __post_init__(self):
        for f in fields(self):
            if getattr(self, f.name) is not None:
                self[f.name] = getattr(self, f.name)


@dataclass
class _PlainOutput:
    features: torch.Tensor
    logits: torch.Tensor


class _MultiOutput(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Conv2d(8, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        features = torch.relu(self.body(torch.relu(self.stem(x))))
        logits = self.head(features).mean((2, 3))
        if self.kind == "tuple":
            return features, (features.amax((2, 3)), logits)
        if self.kind == "dict":
            return {"features": features, "logits": logits}
        return _HFLikeOutput(logits=logits, features=features)


def test_flatten_outputs_follows_the_exporter_order():
    a, b, c = torch.zeros(1), torch.ones(2), torch.full((3,), 2.0)
    flat = flatten_outputs((a, {"x": b, "none": None, "y": [c]}, _PlainOutput(b, c), _HFLikeOutput(logits=a)))
    assert [t.shape[0] for t in flat] == [1, 2, 3, 2, 3, 1]
    with pytest.raises(TypeError, match="str"):
        flatten_outputs((a, "label"))


@pytest.mark.parametrize("kind", ["tuple", "dict", "hf"])
def test_parity_compares_every_output(kind):
    model, _ = apply_odconv(_MultiOutput(kind).eval())
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        flat = flatten_outputs(model(x))
    logits = next(i for i, t in enumerate(flat) if t.shape == (1, 4))
    proto = export_onnx(model, None, x)
    assert len(proto.graph.output) == len(flat)
    results = check_parity(model, proto, x, batches=(1, 3))
    assert all(r.ok for r in results)
    with torch.no_grad():  # only the logits move: the check must see it
        model.head.bias.add_(1.0)
    with pytest.raises(AssertionError, match=f"output {logits}"):
        check_parity(model, proto, x, batches=(2,))


def test_parity_result_ok_honours_its_tolerance():
    assert not ParityResult(batch=1, max_abs_err=2e-4, output_scale=1.0, relative_err=2e-4).ok  # default 1e-4
    assert ParityResult(batch=1, max_abs_err=2e-4, output_scale=1.0, relative_err=2e-4, tolerance=1e-3).ok


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:torch.fx could not trace", "ignore::torch.jit.TracerWarning")  # HF's own code
def test_parity_on_a_transformers_model_output():
    transformers = pytest.importorskip("transformers")
    config = transformers.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
    torch.manual_seed(0)
    base = transformers.ConvNextForImageClassification(config).eval()
    x = torch.randn(1, 3, 32, 32)
    model, report = apply_odconv(base, example_inputs=(x,))
    assert report.converted
    with torch.no_grad():
        assert type(model(x)).__name__ == "ImageClassifierOutputWithNoAttention"
    check_parity(model, export_onnx(model, None, x), x, batches=(1, 2))


def test_parity_and_runner_refuse_arguments_that_check_nothing():
    """#21 item 13: batches=() returned [], batches=(0,) passed without comparing a value, threads=-1 was taken."""
    from odconv_surgery.errors import InvalidValueError

    model = tiny(1)
    x = torch.randn(1, 8, 16, 16)
    proto = export_onnx(model, None, x, target="portable", check=False)
    with pytest.raises(InvalidValueError, match="non-empty sequence"):
        check_parity(model, proto, x, batches=())
    with pytest.raises(InvalidValueError, match="compare nothing"):
        check_parity(model, proto, x, batches=(0,))
    with pytest.raises(InvalidValueError, match="threads must be an int >= 0"):
        OrtRunner(proto, threads=-1)
