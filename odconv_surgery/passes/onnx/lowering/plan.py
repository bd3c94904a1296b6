"""The one place that decides how each ODConv layer is lowered; the forms it names only build what it says.

Per layer and file form (``FORMS`` in ``__init__`` wires each name to ``dispatcher``), ``plan_layer`` returns a
``LayerPlan``, a frozen record the leaf form is given:

* ``naive``: the ``naive`` form.
* ``any`` (every batch size): a constant kernel (n = 1, no spatial head: ``has_static_kernel``) takes
  ``static_kernel``; a depthwise layer, and with an NCHWc block a dense k x k layer with one kernel whose batch-1
  NCHWc form is not ``plain``, runs its batch-1 plan once per sample (``per_sample``, the body built by
  ``build_layer``); other dense and 1x1 layers ``im2col``, the column scale on the per-sample kernel or the columns
  by ``im2col_scaling``; other grouped convs ``naive``.
* ``batch1``: without an NCHWc block the portable ``batch1`` form, each attention on the kernel or the activations
  by ``batch1_scaling`` (1x1 layers with n = 1 take ``static_kernel``); with one, the NCHWc form the ``Planner``
  picks (``batch1_nchwc``; ``plain`` is the portable form; a layer without heads its blocked static conv).

The portable rules compare element counts (fold an attention into the kernel when the kernel is no larger than what
it would otherwise scale). The NCHWc forms of one dense / 1x1 / depthwise layer (``batch1_nchwc.py`` builds each;
they compute the same function) are picked by measurement on this machine (``tune=True``) or by a calibrated
element-count model (the fallback, and reproducible for CI):

* ``kernel``: every attention folded into a per-run kernel (one scale tensor, one Mul), one NCHWc Conv.
* ``activations``: the channel and filter attentions applied to the activations as depthwise 1x1 NCHWc Convs, the
  constant kernel kept (only its taps scaled by the spatial attention): cheaper where the kernel outweighs the
  activations (late, low-resolution stages).
* ``columns``: dense k x k, n = 1: tap-major input columns scaled by the spatial and channel attentions feed the
  constant kernel as a 1x1 NCHWc Conv (no kernel rewritten at all; ResNet's last stage).
* ``plain``: the portable batch-1 form (standard ops, NCHW) inside the blocked chain, reorders around it.

The tuner times each candidate as a small onnxruntime graph holding only that layer at its real input size,
blocked on both sides as it is inside the chain (so a form that needs the NCHW input pays its reorders), at the
deployment's thread count, and keeps the fastest. Timings are cached per machine and layer signature
(``tuning_cache.py``): a second export of the same model times nothing.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import onnx_graphsurgeon as gs

from ....deploy.schema import NCHWC_DOMAIN
from ....errors import InvalidValueError
from ..common import OdLayer
from .attention import build_attention
from .batch1 import lower_batch1
from .batch1_nchwc import lower_batch1_nchwc, static_conv_nchwc
from .builder import Builder, Geometry, Scaling, layer_view
from .im2col import lower_im2col
from .naive import lower_naive
from .nchwc_layout import nchwc_ok
from .per_sample import lower_per_sample
from .static_kernel import lower_static_kernel
from .tuning_cache import TuningCache, layer_signature, tuning_cache_path

logger = logging.getLogger("odconv_surgery.passes.onnx")

NCHWC_FORMS = ("kernel", "activations", "columns", "plain")

# Cost per element, relative, of the ways to apply a dense / 1x1 layer's attentions (calibrated by
# benchmarks/bench_nchwc_scaling.py on an AVX2 machine; the ratios matter, not the units). Only the fallback:
# ``tune=True`` measures instead.
KERNEL_SCALE_COST = 1.0  # outer-product scale tensor + Mul, per kernel element
TAP_SCALE_COST = 0.6  # spatial-only broadcast Mul, per kernel element
ACTIVATION_SCALE_COST = 0.4  # NCHWc depthwise 1x1 Conv, per activation element
COLUMNS_COST = 2.5  # tap-major columns (Pad, k^2 Slices, Concat, Mul, ReorderInput) and the longer 1x1 Conv, per column element

#: A measured form replaces the cost model's only when it is faster by more than this fraction (timing noise).
MEASURED_MARGIN = 0.03


# ---- the NCHWc forms' cost model ------------------------------------------------------------------------------

def scale_on_activations(layer: OdLayer, geo: Geometry) -> bool:
    """Cost model: whether a dense / 1x1 layer's channel and filter attentions are cheaper on the activations than
    folded into its kernel: true when the kernel outweighs the activations (late, low-resolution stages)."""
    if not set(layer.heads) & {"channel", "filter"}:
        return False
    kernel, activations = _attention_costs(layer, geo)
    return activations < kernel


def _attention_costs(layer: OdLayer, geo: Geometry) -> tuple[float, float]:
    """(kernel, activations): the cost of applying a dense / 1x1 layer's attentions by scaling its kernel, and by
    scaling its activations (channel / filter) plus its kernel's taps (spatial)."""
    a = layer.attrs
    heads = set(layer.heads)
    kh, kw = a["kernel_shape"]
    hin, win = a["input_hw"]
    kernel = a["out_channels"] * a["in_channels"] * kh * kw
    activations = ("channel" in heads) * a["in_channels"] * hin * win + ("filter" in heads) * a["out_channels"] * geo.ho * geo.wo
    taps = TAP_SCALE_COST * kernel if "spatial" in heads and kh * kw > 1 else 0.0
    return KERNEL_SCALE_COST * kernel, ACTIVATION_SCALE_COST * activations + taps


def taps_on_columns(layer: OdLayer, geo: Geometry) -> bool:
    """Cost model: whether a dense k x k layer with n = 1 and a spatial head is cheapest as tap-major columns: true
    when the kernel dwarfs its output's positions (ResNet's last stage), where even scaling only the kernel's taps
    rewrites megabytes."""
    if "spatial" not in layer.heads or geo.k2 == 1:
        return False
    a = layer.attrs
    columns = geo.k2 * a["in_channels"] * geo.ho * geo.wo
    outputs = ("filter" in layer.heads) * a["out_channels"] * geo.ho * geo.wo
    return COLUMNS_COST * columns + ACTIVATION_SCALE_COST * outputs < min(_attention_costs(layer, geo))


def candidate_forms(layer: OdLayer, blk: int) -> list[str]:
    """The forms the tuner times for ``layer``: the NCHWc forms that can build it, its cost-model choice first
    (``plain`` only for a layer no NCHWc form can build: timed alone, the portable form misses what breaking the
    blocked chain costs its neighbours, the fusions they lose, and measured slower in the network)."""
    if not nchwc_ok(layer, blk):
        return ["plain"]
    geo = Geometry.of(layer)
    forms = ["kernel"]
    if layer.kind in ("dense", "pointwise") and set(layer.heads) & {"channel", "filter"}:
        forms.append("activations")
    if (layer.kind == "dense" and layer.attrs["kernel_num"] == 1 and "spatial" in layer.heads and geo.k2 > 1
            and layer.attrs["in_channels"] % blk == 0):
        forms.append("columns")
    model = cost_model_form(layer, blk)
    return [model] + [f for f in forms if f != model]


def cost_model_form(layer: OdLayer, blk: int) -> str:
    """The form the element-count model picks (no timing)."""
    if not nchwc_ok(layer, blk):
        return "plain"
    if layer.kind == "depthwise":
        return "kernel"
    geo = Geometry.of(layer)
    if (layer.kind == "dense" and layer.attrs["kernel_num"] == 1 and layer.attrs["in_channels"] % blk == 0
            and taps_on_columns(layer, geo)):
        return "columns"
    return "activations" if scale_on_activations(layer, geo) else "kernel"


# ---- the portable forms' rules --------------------------------------------------------------------------------
def has_static_kernel(layer: OdLayer) -> bool:
    """Whether ``layer``'s kernel is the same for every sample: one kernel (n = 1) and no spatial attention."""
    return layer.attrs["kernel_num"] == 1 and "spatial" not in layer.heads


def batch1_scaling(layer: OdLayer, geo: Geometry) -> Scaling:
    """The portable batch-1 form: an attention goes into the kernel when the kernel is no larger than the activation
    it would otherwise scale (the input for the channel attention, the output for the filter attention). A depthwise
    kernel always takes the channel attention; other grouped kernels never (their channels do not line up)."""
    a = layer.attrs
    hin, win = a["input_hw"]
    kernel = a["out_channels"] * (a["in_channels"] // a["group"]) * geo.k2
    dense = layer.kind in ("dense", "pointwise")
    channel = layer.kind == "depthwise" or (dense and kernel <= a["in_channels"] * hin * win)
    return Scaling(input_on_kernel=channel, filter_on_kernel=kernel <= a["out_channels"] * geo.ho * geo.wo)


def im2col_scaling(layer: OdLayer, geo: Geometry) -> Scaling:
    """The any-batch im2col form: the column scale ``a_s (x) a_c`` goes on the per-sample kernel (n > 1) when its
    C_out rows are no more than the output positions, else on the columns; with n = 1 always on the columns, so the
    kernel stays one constant Conv weight."""
    return Scaling(input_on_kernel=layer.attrs["kernel_num"] > 1 and layer.attrs["out_channels"] <= geo.ho * geo.wo)


# ---- the plan of one layer and its dispatch ------------------------------------------------------------------
@dataclass(frozen=True)
class LayerPlan:
    """How one layer is lowered: the leaf form (one of ``LEAF_FORMS``) and what that form is told. ``scaling``: where
    a portable form applies the attentions; ``nchwc`` and ``blk``: the NCHWc form and block (``batch1_nchwc``,
    ``static``); ``body``: the plan each sample runs (``per_sample``)."""

    form: str
    scaling: Scaling = Scaling()
    nchwc: str = ""
    blk: int = 0
    body: "LayerPlan | None" = None

    def __post_init__(self) -> None:
        if self.form not in LEAF_FORMS:
            raise InvalidValueError(f"unknown leaf form {self.form!r}; expected one of {LEAF_FORMS}")
        if (self.form == "per_sample") != (self.body is not None):
            raise InvalidValueError(f"a {self.form!r} plan {'needs' if self.body is None else 'takes no'} body plan")


FILE_FORMS = ("naive", "any", "batch1")


def plan_layer(layer: OdLayer, file_form: str, planner: "Planner | None" = None) -> LayerPlan:
    """How ``layer`` is lowered in the file form ``file_form`` ('naive', 'any' or 'batch1'), its NCHWc forms chosen
    by ``planner`` (None: the portable target)."""
    if file_form == "naive":
        return LayerPlan("naive")
    if file_form == "batch1":
        return _batch1_plan(layer, planner)
    if file_form != "any":
        raise InvalidValueError(f"unknown lowering form {file_form!r}; expected one of {sorted(FILE_FORMS)}")
    static = has_static_kernel(layer)
    # A dense layer with one kernel runs its NCHWc form per sample; 1x1 layers stay batched (per sample measured
    # slower), and so do several kernels: per sample reads the whole bank once per sample, im2col mixes it once.
    per_sample_nchwc = (planner is not None and layer.kind == "dense" and not static and layer.attrs["kernel_num"] == 1
                        and planner.choose(layer).form != "plain")
    if (layer.kind == "depthwise" and not static) or per_sample_nchwc:
        return LayerPlan("per_sample", body=_batch1_plan(layer, planner))
    if static:
        return LayerPlan("static_kernel")
    if layer.kind in ("dense", "pointwise"):
        return LayerPlan("im2col", scaling=im2col_scaling(layer, Geometry.of(layer)))
    return LayerPlan("naive")


def _batch1_plan(layer: OdLayer, planner: "Planner | None") -> LayerPlan:
    """``layer``'s batch-1 plan: the NCHWc form ``planner`` chooses, or the portable one (no planner)."""
    if planner is None:
        return batch1_plan(layer, "plain")
    return batch1_plan(layer, planner.choose(layer).form, planner.blk)


def batch1_plan(layer: OdLayer, form: str, blk: int = 0) -> LayerPlan:
    """The plan of ``layer``'s batch-1 form ``form`` (one of ``NCHWC_FORMS``, or ``STATIC``) with NCHWc block
    ``blk``: 'plain' is the portable form (``static_kernel`` for 1x1 with n = 1, else ``batch1``); a layer without
    heads has nothing to attend and is its static conv, blocked."""
    if form == "plain":
        geo = Geometry.of(layer)
        if geo.k2 == 1 and layer.attrs["kernel_num"] == 1:
            return LayerPlan("static_kernel")
        return LayerPlan("batch1", scaling=batch1_scaling(layer, geo))
    if form == STATIC or not layer.heads:
        return LayerPlan(STATIC, blk=blk)
    return LayerPlan("batch1_nchwc", nchwc=form, blk=blk)


#: Not a form: the layer as the static conv it replaced (its first kernel), blocked like the model's own convs. Timed
#: beside a form, it gives the layer's marginal cost (``deploy/layer_costs.py``).
STATIC = "static"

#: Each leaf form: how ``build_layer`` calls it with what the plan says.
_LEAVES: dict[str, Callable[[Builder, OdLayer, LayerPlan], gs.Variable]] = {
    "naive": lambda b, layer, plan: lower_naive(b, layer, build_attention(b, layer)),
    "static_kernel": lambda b, layer, plan: lower_static_kernel(b, layer, build_attention(b, layer)),
    "im2col": lambda b, layer, plan: lower_im2col(b, layer, build_attention(b, layer), plan.scaling),
    "batch1": lambda b, layer, plan: lower_batch1(b, layer, build_attention(b, layer), plan.scaling),
    "per_sample": lambda b, layer, plan: lower_per_sample(b, layer, functools.partial(build_layer, plan=plan.body)),
    "batch1_nchwc": lambda b, layer, plan: lower_batch1_nchwc(b, layer, plan.blk, plan.nchwc),
    STATIC: lambda b, layer, plan: static_conv_nchwc(b, layer, plan.blk),
}
LEAF_FORMS = tuple(_LEAVES)


def build_layer(b: Builder, layer: OdLayer, plan: LayerPlan) -> gs.Variable:
    """``layer`` built by the leaf form ``plan`` names, as ``plan`` says; its output."""
    return _LEAVES[plan.form](b, layer, plan)


def dispatcher(file_form: str) -> Callable[[Builder, OdLayer, "Planner | None"], gs.Variable]:
    """The lowering of one layer in ``file_form``: ``(builder, layer, planner) -> y`` (``FORMS``)."""
    if file_form not in FILE_FORMS:
        raise InvalidValueError(f"unknown lowering form {file_form!r}; expected one of {sorted(FILE_FORMS)}")

    def lower_layer(b: Builder, layer: OdLayer, planner: "Planner | None") -> gs.Variable:
        return build_layer(b, layer, plan_layer(layer, file_form, planner))

    lower_layer.__name__ = lower_layer.__qualname__ = f"lower_{file_form}"
    return lower_layer


def file_planner(file_form: str, nchwc_block: int | None, planner: "Planner | None" = None) -> "Planner | None":
    """The planner ``file_form`` lowers with: with an NCHWc block, the 'batch1' and 'any' forms choose NCHWc forms
    (``planner``, or the cost model's when None); 'naive' and the portable target (no block) none."""
    if not nchwc_block or file_form not in ("batch1", "any"):
        return None
    return planner or Planner(nchwc_block)


@dataclass(frozen=True)
class Choice:
    """A layer's form and where the choice came from: 'measured', 'cache', 'cost model' (or 'forced')."""

    form: str
    source: str
    times_us: dict[str, float] = field(default_factory=dict)
    model_form: str = ""  # what the cost model picks (the same as ``form`` unless a measurement overrode it)


class Planner:
    """Chooses each layer's batch-1 NCHWc form for block ``blk``; with ``tune`` by timing the candidates (cached),
    else by the cost model. One planner serves both branches of a file, so each layer is decided once."""

    def __init__(self, blk: int, tune: bool = False, threads: int = 1, cache_path: Path | None | str = "default",
                 progress: bool = True, force: str | None = None) -> None:
        if force is not None and force not in NCHWC_FORMS:
            raise InvalidValueError(f"force must be one of {NCHWC_FORMS} or None, got {force!r}")
        self.force = force
        self.blk = blk
        self.tune = tune
        self.threads = threads
        path = tuning_cache_path() if cache_path == "default" else cache_path
        self.cache = TuningCache(Path(path) if tune and path is not None else None)
        self.progress = progress
        self.choices: dict[str, Choice] = {}
        self._started: float | None = None

    def choose(self, layer: OdLayer) -> Choice:
        if layer.name in self.choices:
            return self.choices[layer.name]
        forms = candidate_forms(layer, self.blk)
        model = cost_model_form(layer, self.blk)
        if self.force in forms or self.force == "plain":
            choice = Choice(self.force, "forced", model_form=model)
        elif not self.tune or len(forms) == 1:
            choice = Choice(model, "cost model", model_form=model)
        else:
            choice = self._measured(layer, forms)
        self.choices[layer.name] = choice
        return choice

    def _measured(self, layer: OdLayer, forms: list[str]) -> Choice:
        key = layer_signature(layer, self.threads)
        cached = self.cache.get(self.blk, key)
        if cached is not None and set(forms) <= set(cached):
            times, source = {f: cached[f] for f in forms}, "cache"
        else:
            self._tick(layer)
            times, source = time_forms(layer, self.blk, forms, self.threads), "measured"
            if forms[0] not in times:  # the cost model's own form failed to run here: nothing safe to compare
                return Choice(forms[0], "cost model", model_form=forms[0])
            self.cache.put(self.blk, key, times)
        model = forms[0]
        forms = [f for f in forms if f in times]
        faster = [f for f in forms if times[f] < times[model] * (1 - MEASURED_MARGIN)]
        best = min(faster, key=times.get) if faster else model  # within noise of the cost model: keep it (stable)
        return Choice(best, source, times, model_form=model)

    def _tick(self, layer: OdLayer) -> None:
        """A progress line once tuning has taken a few seconds (it can take a minute on a large model)."""
        now = time.perf_counter()
        self._started = self._started or now
        if self.progress and now - self._started > 3.0:
            print(f"\rodconv-surgery: tuning layer forms ({len(self.choices)} layers done, {layer.name})",
                  end="", file=sys.stderr, flush=True)

    def summary(self) -> dict[str, str]:
        """``{layer: "form (source)"}`` for the file's metadata and the log."""
        if self.progress and self._started and time.perf_counter() - self._started > 3.0:
            print(file=sys.stderr)
        return {name: f"{c.form} ({c.source})" for name, c in self.choices.items()}

    def departures(self) -> int:
        """How many layers got another form than the cost model's."""
        return sum(c.form != c.model_form for c in self.choices.values())

    def close(self) -> None:
        self.cache.save()


@contextmanager
def planner_for(ctx) -> Iterator["Planner | None"]:
    """The planner of one pipeline run (``PassContext``: block, tune, threads), its timings saved to the cache when
    the lowering is done; None without an NCHWc block (portable target)."""
    planner = Planner(ctx.nchwc_block, tune=ctx.tune, threads=ctx.threads) if ctx.nchwc_block else None
    try:
        yield planner
    finally:
        if planner is not None:
            planner.close()


# ---- timing ----------------------------------------------------------------------------------------------------
def layer_graph(layer: OdLayer, blk: int, form: str):
    """An ONNX model holding only ``layer`` in ``form``, blocked on both sides as inside the chain (an NCHWc input
    reordered out and back in front, the output reordered in and out behind; ``chain_nchwc`` drops the round trips a
    form does not need)."""
    import onnx

    from ..chain_nchwc import chain_nchwc

    a = layer.attrs
    cin, cout = a["in_channels"], a["out_channels"]
    hin, win = a["input_hw"]
    geo = Geometry.of(layer)
    graph = gs.Graph(name="tune", opset=18)
    b = Builder(graph, "tune")
    x_in = gs.Variable("x", dtype=np.float32, shape=[1, cin, hin, win])
    xb = b.op("ReorderInput", [x_in], {"channels_last": 0}, domain=NCHWC_DOMAIN)
    x = b.op("ReorderOutput", [xb], {"channels": cin, "channels_last": 0}, domain=NCHWC_DOMAIN)
    with layer_view(layer, x) as view:
        y = build_layer(b, view, batch1_plan(view, form, blk))
    yb = b.op("ReorderInput", [y], {"channels_last": 0}, domain=NCHWC_DOMAIN)
    out = b.op("ReorderOutput", [yb], {"channels": cout, "channels_last": 0}, domain=NCHWC_DOMAIN)
    out.shape = [1, cout, geo.ho, geo.wo]
    graph.inputs, graph.outputs = [x_in], [out]
    graph.cleanup()
    chain_nchwc(graph)
    proto = gs.export_onnx(graph.cleanup().toposort(), do_type_check=False)
    del proto.opset_import[:]
    proto.opset_import.extend([onnx.helper.make_opsetid("", 18), onnx.helper.make_opsetid(NCHWC_DOMAIN, 1)])
    proto.ir_version = 8
    return proto


def time_forms(layer: OdLayer, blk: int, forms: list[str], threads: int = 1, rounds: int = 5,
               min_runs: int = 5, round_s: float = 0.004) -> dict[str, float]:
    """Microseconds per run of ``layer`` in each of ``forms``: the fastest of interleaved rounds (so drift hits all
    forms alike, and another process on the machine, which only ever adds time, is filtered out)."""
    import onnxruntime as ort

    from ....deploy.session_timing import fastest_round_seconds

    a = layer.attrs
    feed = {"x": np.random.default_rng(0).standard_normal((1, a["in_channels"], *a["input_hw"])).astype(np.float32)}
    sessions = {}
    for form in forms:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 4
        try:
            sess = ort.InferenceSession(layer_graph(layer, blk, form).SerializeToString(), opts,
                                        providers=["CPUExecutionProvider"])
            sess.run(None, feed)
        except Exception as exc:  # noqa: BLE001 - a form this runtime cannot build or run is not a candidate
            logger.debug("tuning %s: form %r left out (%s: %s)", layer.name, form, type(exc).__name__, exc)
            continue
        sessions[form] = (sess, feed)
    if not sessions:
        return {}
    seconds = fastest_round_seconds(sessions, rounds, round_s, min_runs)
    return {form: round(s * 1e6, 2) for form, s in seconds.items()}
