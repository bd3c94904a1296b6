import numpy as np
import pytest
import torch

from odconv_surgery.deploy.export import export_marked, export_onnx
from odconv_surgery.passes.onnx import OnnxModelError
from odconv_surgery.deploy.runtime import OrtRunner, check_parity, cuda_available

from onnx_helpers import tiny


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
    with pytest.raises(OnnxModelError):
        OrtRunner(str(bad))
    with pytest.raises(OnnxModelError, match="marker"):
        OrtRunner(export_marked(tiny(1), torch.randn(1, 8, 16, 16)))
    with pytest.raises(ValueError):
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
