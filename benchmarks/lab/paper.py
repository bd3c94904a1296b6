"""The paper's CPU figures and the models the benchmarks name (``mobilenet_v2_0.5``, ...), as the paper tabulates them."""

from __future__ import annotations

from torch import nn

MODELS = ("mobilenet_v2_1.0", "mobilenet_v2_0.5", "resnet18", "resnet50")

#: The paper's CPU speeds (frames per second, one core of an E5-2683 v3, batch 1, 224 px): Table 8 (resnet50 and
#: mobilenet_v2 1.0, all_but_first) and Table 9 (mobilenet_v2 0.5 per policy, n = 1), keyed (model, policy, n);
#: policy None is the static model.
PAPER_CPU_FPS: dict[tuple[str, str | None, int], float] = {
    ("resnet50", None, 1): 6.4, ("resnet50", "all_but_first", 1): 3.9, ("resnet50", "all_but_first", 4): 2.5,
    ("mobilenet_v2_1.0", None, 1): 17.3, ("mobilenet_v2_1.0", "all_but_first", 1): 12.8,
    ("mobilenet_v2_1.0", "all_but_first", 4): 11.2,
    ("mobilenet_v2_0.5", None, 1): 30.1, ("mobilenet_v2_0.5", "all_but_first", 1): 18.3,
    ("mobilenet_v2_0.5", "1x1", 1): 27.1, ("mobilenet_v2_0.5", "3x3", 1): 27.4, ("mobilenet_v2_0.5", "last:6", 1): 19.6,
}


#: Table 8's other methods, keyed (model, method), each with its own placement ("default") and kernel number.
PAPER_METHOD_CPU_FPS: dict[tuple[str, str], float] = {
    ("resnet50", "condconv"): 4.0, ("resnet50", "dyconv"): 3.8,
    ("mobilenet_v2_1.0", "condconv"): 14.8, ("mobilenet_v2_1.0", "dyconv"): 11.9,
}
#: The models of Table 8.
TABLE8_MODELS = ("resnet50", "mobilenet_v2_1.0")


def paper_cpu_ratio(model: str, policy: str, kernel_num: int, method: str = "odconv") -> float | None:
    """The paper's CPU latency ratio (static FPS / converted FPS) for this case, where the paper has one."""
    fps = PAPER_CPU_FPS.get((model, policy, kernel_num)) if method == "odconv" else PAPER_METHOD_CPU_FPS.get((model, method))
    return PAPER_CPU_FPS[(model, None, 1)] / fps if fps else None


def static_model(name: str) -> nn.Module:
    import torchvision

    if name == "mobilenet_v2_1.0":
        return torchvision.models.mobilenet_v2().eval()
    if name == "mobilenet_v2_0.5":
        return torchvision.models.mobilenet_v2(width_mult=0.5).eval()
    return getattr(torchvision.models, name)().eval()
