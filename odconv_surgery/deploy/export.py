"""ONNX export of ODConv models with a dynamic batch: ``export_onnx``.

Exporter choice: the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``). Each shared-attention
``ODConv2d`` is wrapped, during export only, in a ``torch.autograd.Function`` whose ``symbolic`` emits one marker
node ``odconv.surgery::ODConv2d`` (inputs: x and the layer's parameters as initializers, tagged by role;
geometry as attributes; node name = module path). This makes the ODConv subgraphs exact to find (no op-sequence
guessing), keeps the per-sample "batch folded into groups" trick out of the graph entirely (the marker has no
batch-dependent attribute), and leaves the choice of the ONNX formulation to our passes, which lower the marker
to standard ops (``passes/onnx/lowering/``): naively (``fuse=False``) or through the fusion pipeline.
The dynamo exporter would need a ``torch.library`` custom op plus an onnxscript translation for the same result
and is several times slower to export resnet50; the TorchScript exporter keeps module scopes in node names, and
its eval-mode peephole folds Conv+BN of the static layers as usual.

The marker covers every attention option (which heads, their activations, the pool size, a trunk or none: see
``schema.MARKER_ATTENTION_DEFAULTS``). Layers it does not cover (``share_attention=False``, non-zero
``padding_mode``) export through a generic batch-independent PyTorch formulation (per-sample kernels + unfold +
batched matmul).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import numbers
import os
import warnings
from collections import Counter
from typing import Any, Iterator, Sequence

import onnx
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.geometry import conv_output_size, same_padding
from ..nn.odconv import ODConv2d
from ..nn.temperature import temperature_at
from ..numerics import DEFAULT_TOLERANCE
from ..recipe import get_recipe, package_version
from ..errors import InvalidTypeError, InvalidValueError
from .targets import ExportTarget, check_target
from .export_checks import check_dtype, check_finite_weights, check_opset
from .own_error import OwnError, warn_if_unstable, with_runtime, worst_fp32_error
from .schema import (
    DEFAULT_OPSET, HEAD_ORDER, INPUT_NAME, META_LAYERS, META_OTHER_BATCH, OD_DOMAIN, OD_DOMAIN_VERSION, OD_OP, OUTPUT_NAME, set_metadata,
)

LOGGER = logging.getLogger("odconv_surgery.export")


def _explicit_pads(layer: ODConv2d) -> list[int]:
    """ONNX pads [top, left, bottom, right] for ``layer.padding``."""
    if layer.padding == "valid":
        return [0, 0, 0, 0]
    if layer.padding == "same":
        (top, bottom), (left, right) = same_padding(layer.kernel_size, layer.dilation)
        return [top, left, bottom, right]
    ph, pw = layer.padding
    return [ph, pw, ph, pw]


def marker_supported(layer: ODConv2d) -> bool:
    """Whether the ONNX passes lower ``layer``'s marker: shared attention and zero padding, with any attention
    options (heads, activations, pooling, trunk or none). Other layers export in the generic form."""
    return layer.share_attention and layer.padding_mode == "zeros"


def _layer_params(layer: ODConv2d) -> tuple[list[str], list[Tensor], dict[str, Any]]:
    """Roles, tensors and extra attributes of one ODConv layer for the marker node."""
    att = layer.attention
    roles: list[str] = ["weight"]
    tensors: list[Tensor] = [layer.weight]
    if layer.bias is not None:
        roles.append("bias")
        tensors.append(layer.bias)
    if att.fc is not None:  # no trunk: no fc role, the heads read the pooled input
        roles.append("fc_weight")
        tensors.append(att.fc.weight)
        if att.fc.bias is not None:  # the attention BatchNorm folded by fuse_batchnorm
            roles.append("fc_bias")
            tensors.append(att.fc.bias)
    extra: dict[str, Any] = {"norm": "none", "norm_eps": 0.0}
    # Without a trunk the norm is an Identity: no norm roles.
    if isinstance(att.norm, nn.BatchNorm2d):
        norm = att.norm
        roles += ["norm_scale", "norm_bias", "norm_mean", "norm_var"]
        scale = norm.weight if norm.weight is not None else torch.ones_like(norm.running_mean)
        bias = norm.bias if norm.bias is not None else torch.zeros_like(norm.running_mean)
        tensors += [scale, bias, norm.running_mean, norm.running_var]
        extra = {"norm": "bn", "norm_eps": float(norm.eps)}
    elif isinstance(att.norm, nn.GroupNorm):
        norm = att.norm
        roles += ["norm_scale", "norm_bias"]
        tensors += [norm.weight, norm.bias]
        extra = {"norm": "ln", "norm_eps": float(norm.eps)}
    heads = att.heads()
    for name in HEAD_ORDER:
        if name in heads:
            roles += [f"{name}_weight", f"{name}_bias"]
            tensors += [heads[name].weight, heads[name].bias]
    extra["heads"] = [h for h in HEAD_ORDER if h in heads]
    return roles, tensors, extra


def _make_marker(attrs: dict, original_forward) -> type:
    """A per-layer ``autograd.Function``: runs the layer eagerly while tracing, exports as one marker node."""

    class _ODConvMarker(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x: Tensor, *params: Tensor) -> Tensor:  # noqa: ARG004
            state = torch._C._get_tracing_state()
            torch._C._set_tracing_state(None)  # run the eager maths untraced: only the symbolic is recorded
            try:
                return original_forward(x)
            finally:
                torch._C._set_tracing_state(state)

        @staticmethod
        def symbolic(g, x, *params):
            # A layer without heads has no ``heads`` attribute: ONNX cannot type an empty list.
            heads = {"heads_s": attrs["heads"]} if attrs["heads"] else {}
            out = g.op(
                f"{OD_DOMAIN}::{OD_OP}",
                x,
                *params,
                **heads,
                layer_name_s=attrs["layer_name"],
                roles_s=attrs["roles"],
                in_channels_i=attrs["in_channels"],
                out_channels_i=attrs["out_channels"],
                kernel_shape_i=attrs["kernel_shape"],
                strides_i=attrs["strides"],
                pads_i=attrs["pads"],
                dilations_i=attrs["dilations"],
                group_i=attrs["group"],
                kernel_num_i=attrs["kernel_num"],
                norm_s=attrs["norm"],
                norm_eps_f=attrs["norm_eps"],
                input_hw_i=attrs["input_hw"],
                activation_s=attrs["activation"],
                kernel_activation_s=attrs["kernel_activation"],
                pool_size_i=attrs["pool_size"],
            )
            # Declare the output type so the exporter's shape inference knows the custom node (and stays quiet).
            (ih, iw), (kh, kw) = attrs["input_hw"], attrs["kernel_shape"]
            (sh, sw), (dh, dw) = attrs["strides"], attrs["dilations"]
            top, left, bottom, right = attrs["pads"]
            oh = conv_output_size(ih, kh, sh, dh, top, bottom)
            ow = conv_output_size(iw, kw, sw, dw, left, right)
            sizes = x.type().varyingSizes() or [None] * 4
            out.setType(x.type().with_sizes([sizes[0], attrs["out_channels"], oh, ow]))
            return out

    return _ODConvMarker


def _marker_forward(layer: ODConv2d, name: str, original_forward, batch: int | None = None,
                    other_batch: list[str] | None = None):
    roles, tensors, extra = _layer_params(layer)
    attrs = {
        "layer_name": name,
        "roles": roles,
        "heads": extra["heads"],
        "in_channels": layer.in_channels,
        "out_channels": layer.out_channels,
        "kernel_shape": list(layer.kernel_size),
        "strides": list(layer.stride),
        "pads": _explicit_pads(layer),
        "dilations": list(layer.dilation),
        "group": layer.groups,
        "kernel_num": layer.kernel_num,
        "norm": extra["norm"],
        "norm_eps": extra["norm_eps"],
        "activation": layer.attention.activation,
        "kernel_activation": layer.attention.kernel_activation,
        "pool_size": layer.attention.pool_size,
    }

    def forward(x: Tensor) -> Tensor:
        # One marker per call: a layer called more than once (an FPN head applied to every level) sees a different
        # input size at each call site, and the lowering derives the output size from it.
        with warnings.catch_warnings():  # the spatial size is static in the exported graph
            warnings.filterwarnings("ignore", "Converting a tensor to a Python integer", torch.jit.TracerWarning)
            call_attrs = dict(attrs, input_hw=[int(x.shape[-2]), int(x.shape[-1])])
            if other_batch is not None and batch is not None and int(x.shape[0]) != batch and name not in other_batch:
                other_batch.append(name)
        # The fixed kernel_scale is folded into the bank (constant folding makes it one initializer).
        return _make_marker(call_attrs, original_forward).apply(x, tensors[0] * layer.kernel_scale, *tensors[1:])

    return forward


def generic_forward(layer: ODConv2d, x: Tensor) -> Tensor:
    """Batch-independent ODConv forward (any batch size, 0 included): per-sample kernels, im2col and a batched
    matmul."""
    att = layer.compute_attentions(x)
    batch = x.shape[0]
    if layer.share_attention or not layer.has_per_sample_kernel():
        x = x * layer.channel_scale(att)
        weight = layer.aggregate_weight(att)
        if weight.dim() == 4:  # no per-sample part: (C_out, C_in/g, kh, kw)
            weight = weight.unsqueeze(0)
        if att.kernel is None and att.spatial is None:  # no per-sample part: one kernel for the whole batch
            weight = weight.expand(batch, *weight.shape[1:])
    else:
        weight = layer.sample_kernels(att)
    if layer._padding_for_pad is not None:
        x = F.pad(x, layer._padding_for_pad, mode=layer.padding_mode)
    elif any(p := _explicit_pads(layer)):
        x = F.pad(x, (p[1], p[3], p[0], p[2]))
    kh, kw = layer.kernel_size
    (sh, sw), (dh, dw) = layer.stride, layer.dilation
    out_h = conv_output_size(x.shape[-2], kh, sh, dh, 0, 0)  # x is padded already
    out_w = conv_output_size(x.shape[-1], kw, sw, dw, 0, 0)
    # im2col as k*k strided views and explicit sizes: F.unfold's exported form reshapes with -1, which an empty
    # batch cannot resolve.
    taps = [
        x[:, :, i * dh : i * dh + sh * (out_h - 1) + 1 : sh, j * dw : j * dw + sw * (out_w - 1) + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]
    g = layer.groups
    cols_per_group = layer.in_channels // g * kh * kw
    cols = torch.stack(taps, dim=2).reshape(batch, g, cols_per_group, out_h * out_w)
    w = weight.reshape(batch, g, layer.out_channels // g, cols_per_group)
    out = torch.matmul(w, cols).reshape(batch, layer.out_channels, out_h, out_w)
    if (layer.share_attention or not layer.has_per_sample_kernel()) and att.filter is not None:
        out = out * att.filter
    if layer.bias is not None:
        out = out + layer.bias.view(1, -1, 1, 1)
    return out


@contextlib.contextmanager
def export_mode(
    model: nn.Module, *, markers: bool = True, batch: int | None = None, other_batch: list[str] | None = None
) -> Iterator[list[str]]:
    """Temporarily make every ODConv2d export-friendly (marker node or generic form) at temperature 1.

    Yields the names of the marked layers. ``markers=False`` exports every layer in the generic form (a plain
    export: no marker, nothing for the passes to do). With ``batch`` (the model input's batch size) the names of
    marked layers called on another batch size are appended to ``other_batch``. Restores forwards and
    temperatures on exit.
    """
    saved: list[tuple[ODConv2d, Any]] = []
    marked: list[str] = []
    with temperature_at(model, 1.0):
        try:
            for name, module in model.named_modules():
                if not isinstance(module, ODConv2d):
                    continue
                saved.append((module, module.__dict__.get("forward")))
                original = module.forward
                if markers and marker_supported(module):
                    module.forward = _marker_forward(module, name, original, batch, other_batch)
                    marked.append(name)
                else:
                    module.forward = (lambda m: (lambda x: generic_forward(m, x)))(module)
            yield marked
        finally:
            for module, forward in saved:
                if forward is None:
                    module.__dict__.pop("forward", None)
                else:
                    module.forward = forward


# What the TorchScript exporter says on every export, chosen deliberately here (see the module docstring).
_EXPECTED_WARNINGS = (
    "You are using the legacy TorchScript-based ONNX export",
    "The feature will be removed. Please remove usage of this function",
    "Constant folding - Only steps=1 can be constant folded",  # a strided Slice left for onnxruntime to run
)


@contextlib.contextmanager
def _exporter_warnings_to_logging() -> Iterator[None]:
    """Log the exporter's expected deprecation notices at DEBUG (logger ``odconv_surgery.export``); every other
    warning raised during export (e.g. a TracerWarning from the model's own code) is passed on unchanged."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        if any(str(w.message).startswith(text) for text in _EXPECTED_WARNINGS):
            LOGGER.debug("torch.onnx: %s", w.message)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def _recipe_dict(model: nn.Module) -> dict[str, Any] | None:
    recipe = get_recipe(model)
    if recipe is None:
        return None
    try:
        return recipe.to_dict()
    except Exception:  # noqa: BLE001
        return {"repr": repr(recipe)}


def as_example_inputs(example_input: Tensor | Sequence[Tensor]) -> tuple[Tensor, ...]:
    """forward's positional tensor arguments: a bare tensor, or a tuple/list of them (as ``torch.onnx.export``
    takes ``args``). Each is one graph input whose dimension 0 is the batch (any rank from 1: images, audio)."""
    inputs = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    if not inputs:
        raise InvalidValueError("example_input is empty: pass the tensor (or the tuple of tensors) forward takes")
    for i, x in enumerate(inputs):
        where = "example_input" if len(inputs) == 1 else f"example_input[{i}]"
        if not isinstance(x, Tensor):
            raise InvalidTypeError(f"{where} must be a tensor, got {type(x).__name__}; the exported graph takes tensors only")
        if x.dim() == 0:
            raise InvalidValueError(f"{where} is a 0-d tensor; every input needs a batch dimension (dimension 0)")
    return inputs


def input_names_for(inputs: Sequence[Tensor], names: Sequence[str] | None = None) -> list[str]:
    """The graph's input names: ``names`` when given (one per input), ``input`` for one input, else ``input_<i>``."""
    if names is None:
        return [INPUT_NAME] if len(inputs) == 1 else [f"{INPUT_NAME}_{i}" for i in range(len(inputs))]
    names = list(names)
    if len(names) != len(inputs) or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise InvalidValueError(f"input_names must be {len(inputs)} distinct non-empty strings (one per input), got {names!r}")
    return names


def check_arguments(model: nn.Module, inputs: Sequence[Tensor]) -> None:
    """Refuse example tensors that forward does not take (``TypeError`` naming both counts) before exporting."""
    try:
        inspect.signature(model.forward).bind(*inputs)
    except TypeError as err:
        raise InvalidTypeError(
            f"example_input has {len(inputs)} tensor(s) but {type(model).__name__}.forward does not take them ({err}): "
            "pass one tensor per positional argument of forward, as a tuple for several"
        ) from err
    except ValueError:  # no signature to read (a builtin forward): torch.onnx.export says what is wrong
        pass


def _batch_of(inputs: Sequence[Tensor]) -> int:
    return int(inputs[0].shape[0])


def _name_markers(proto: onnx.ModelProto) -> None:
    """Name each marker node after its module path; a module called at several sites gets ``<path>/call<i>`` per
    call (in graph order), so every node, and every tensor the passes name after it, is unique."""
    markers = [node for node in proto.graph.node if node.domain == OD_DOMAIN and node.op_type == OD_OP]
    paths = [next(a.s.decode() for a in node.attribute if a.name == "layer_name") for node in markers]
    calls = Counter(paths)
    seen: Counter[str] = Counter()
    for node, path in zip(markers, paths):
        node.name = path if calls[path] == 1 else f"{path}/call{seen[path]}"
        seen[path] += 1


def _torch_export(model: nn.Module, inputs: tuple[Tensor, ...], names: list[str], *, dynamic_batch: bool,
                  opset: int, markers: bool, other_batch: list[str] | None = None) -> tuple[onnx.ModelProto, list[str]]:
    """torch.onnx's export of ``model`` in export mode (eval, temperature 1); the proto and the marked layers."""
    was_training = model.training
    model.eval()
    buffer = io.BytesIO()
    axes = {name: {0: "batch"} for name in [*names, OUTPUT_NAME]} if dynamic_batch else None
    try:
        with export_mode(model, markers=markers, batch=_batch_of(inputs), other_batch=other_batch) as marked, \
                torch.no_grad(), _exporter_warnings_to_logging():
            torch.onnx.export(
                model,
                inputs,
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=names,
                output_names=[OUTPUT_NAME],
                dynamic_axes=axes,
                do_constant_folding=True,
                # Declared only when used: torch warns on stderr about a declared domain no node uses.
                custom_opsets={OD_DOMAIN: OD_DOMAIN_VERSION} if marked else None,
            )
    finally:
        model.train(was_training)
    return onnx.load_from_string(buffer.getvalue()), marked


def plain_export(model: nn.Module, example_input: Tensor | Sequence[Tensor], *, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """torch.onnx's own export of ``model`` with a dynamic batch, every ODConv layer in its generic PyTorch form:
    no marker and no pass of ours (what the runtime's own error on the model is measured on, ``own_error.py``)."""
    inputs = as_example_inputs(example_input)
    return _torch_export(model, inputs, input_names_for(inputs), dynamic_batch=True, opset=opset, markers=False)[0]


def export_marked(
    model: nn.Module,
    example_input: Tensor | Sequence[Tensor],
    *,
    dynamic_batch: bool = True,
    opset: int = DEFAULT_OPSET,
    input_names: Sequence[str] | None = None,
) -> onnx.ModelProto:
    """Export with ``odconv.surgery::ODConv2d`` marker nodes (not runnable until lowered by the passes).

    ``example_input``: a tensor or a tuple of forward's tensor arguments (``as_example_inputs``); ``input_names``
    names the graph inputs (default ``input``, or ``input_<i>`` for several)."""
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"export expects an nn.Module, got {type(model).__name__}")
    check_opset(opset)
    check_dtype(model)
    inputs = as_example_inputs(example_input)
    check_arguments(model, inputs)
    other_batch: list[str] = []
    proto, marked = _torch_export(model, inputs, input_names_for(inputs, input_names), dynamic_batch=dynamic_batch,
                                  opset=opset, markers=True, other_batch=other_batch)
    _name_markers(proto)
    recipe = _recipe_dict(model)
    meta = {
        "odconv.version": package_version(),
        "odconv.exporter": f"torch.onnx TorchScript (torch {torch.__version__}), opset {opset}",
        "odconv.temperature": "1.0",
        "odconv.dynamic_batch": str(bool(dynamic_batch)).lower(),
        META_LAYERS: json.dumps(marked),
        "odconv.example_input_shape": json.dumps(list(inputs[0].shape)),
    }
    if len(inputs) > 1:
        meta["odconv.example_input_shapes"] = json.dumps([list(x.shape) for x in inputs])
    if other_batch:
        meta[META_OTHER_BATCH] = json.dumps(other_batch)
    if recipe is not None:
        meta["odconv.recipe"] = json.dumps(recipe, default=str)
    set_metadata(proto, meta)
    return proto


def fastest_cpu_target() -> str:
    """The fastest export target for onnxruntime's CPU EP on this machine: "ort-cpu" where its NCHWc ops work."""
    from ..passes.onnx.common import detect_nchwc_block

    return "ort-cpu" if detect_nchwc_block() is not None else "portable"


def default_tune() -> bool:
    """Whether ort-cpu exports time their layers' forms when ``tune`` is not given: yes, unless ``ODCONV_TUNE=0``."""
    return os.environ.get("ODCONV_TUNE", "1").strip().lower() not in ("0", "off", "false", "no")


def resolve_target(target: ExportTarget | str) -> str:
    """The export target for ``target``: "auto" becomes "ort-cpu" where onnxruntime's NCHWc CPU ops work and no
    CUDA EP with a GPU is available (the file will most likely run in this onnxruntime, on this CPU), else
    "portable"; the choice is logged. Other values are returned as they are once checked."""
    from ..passes.onnx.common import detect_nchwc_block
    from .providers import cuda_available

    target = check_target(target)
    if target != ExportTarget.AUTO:
        return target
    if cuda_available():
        chosen, why = "portable", "onnxruntime's CUDA EP and a GPU are available here"
    else:
        chosen = fastest_cpu_target()
        blk = detect_nchwc_block()
        why = f"onnxruntime CPU with NCHWc block {blk} here" if blk else "onnxruntime's NCHWc CPU ops are not usable here"
    LOGGER.info("export target 'auto' -> %r (%s); pass target='portable' for a file that runs in any runtime", chosen, why)
    return chosen


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike | None,
    example_input: Tensor | Sequence[Tensor],
    *,
    dynamic_batch: bool = True,
    fuse: bool = True,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    batch1_branch: bool = True,
    target: ExportTarget | str = ExportTarget.AUTO,
    input_names: Sequence[str] | None = None,
    tune: bool | None = None,
    threads: int = 1,
) -> onnx.ModelProto:
    """Export ``model`` (eval mode, temperature 1) to ONNX; returns the ModelProto and writes ``path`` if given.

    ``example_input``: a tensor of any rank from 1, or a tuple of forward's tensor arguments (one graph input
    each, named by ``input_names``: default ``input``, or ``input_<i>`` for several); dimension 0 is the batch.
    ``dynamic_batch``: the batch dimension is symbolic and the graph never depends on it (batch 0 included);
    ``False`` fixes it to the example's batch. ``fuse=True`` runs the fusion pass pipeline
    (``passes.onnx.PIPELINE``); ``fuse=False`` lowers each ODConv naively. ``opset`` must lie in
    ``MIN_OPSET..MAX_OPSET`` (``UnsupportedOpsetError`` otherwise, before export); parameters must be float32
    (``UnsupportedDtypeError`` names ``model.float()``). Weights holding NaN/inf raise ``ModelNumericsError``
    before any pass runs. ``check`` runs the numeric check after every pass (ORT before vs after on random
    batches: 1, 2 and, where the model's graph runs it, 0 for a dynamic batch, so that every branch of the file
    runs; the example's batch for a static one), raising ``PassNumericsError`` naming the pass and the batch; its
    bound is ``tolerance`` or a multiple of the model's own error, whichever is larger (``own_error.py``), so a
    model whose arithmetic is itself noisy is not refused. A model whose own graph runs at its example's batch only
    raises ``StaticBatchGraphError`` (export it with ``dynamic_batch=False``).
    ``batch1_branch`` adds the batch-1 fast path (an ``If`` on the batch size, see
    ``passes/onnx/lower_by_batch_regime.py``; left out where a layer runs on another batch than the input).
    ``target``: "portable" (standard ONNX ops, any runtime), "ort-cpu" (the batch-1 branch and its static convs
    run as onnxruntime's CPU NCHWc contrib ops: the fast form for onnxruntime on a CPU, tied to the CPU's NCHWc
    block) or "auto" (``resolve_target``: the fastest form for the onnxruntime installed here). ``tune`` (ort-cpu;
    default on unless ``ODCONV_TUNE=0``): each layer's NCHWc form is chosen by timing the candidates on this
    machine at ``threads`` threads (cached per CPU, block and onnxruntime version,
    ``passes/onnx/lowering/plan.py``); ``tune=False`` uses the calibrated cost model (reproducible). The chosen
    forms and their source are in the file's ``odconv.forms`` metadata. Recipe, project version, target and
    temperature go into ``metadata_props``.
    """
    for name, flag in (("dynamic_batch", dynamic_batch), ("fuse", fuse), ("check", check), ("batch1_branch", batch1_branch)):
        if not isinstance(flag, bool):  # fuse="no" must not mean True
            raise InvalidTypeError(f"export_onnx {name} must be True or False, got {flag!r}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real) or not 0 <= float(tolerance) < float("inf"):
        raise InvalidValueError(f"export_onnx tolerance must be a finite number >= 0, got {tolerance!r}")
    tune = default_tune() if tune is None else tune
    if not isinstance(tune, bool):
        raise InvalidValueError(f"tune must be True, False or None (the default: on unless ODCONV_TUNE=0), got {tune!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InvalidValueError(f"threads must be an int >= 1 (the deployment's onnxruntime intra-op threads), got {threads!r}")
    inputs = as_example_inputs(example_input)
    target = resolve_target(target)
    check_opset(opset)
    check_dtype(model)
    check_finite_weights(model)
    proto = export_marked(model, inputs, dynamic_batch=dynamic_batch, opset=opset, input_names=input_names)
    options = dict(fuse=fuse, batch1_branch=batch1_branch and dynamic_batch, target=target, threads=threads)

    def lowered(tune_forms: bool, batch_form: str | None = None) -> onnx.ModelProto:
        fresh = onnx.load_from_string(marked)  # the passes may edit their input: each lowering starts from the export
        run_options = {**options, "tune": tune_forms, "batch_form": batch_form}
        if check:
            return _run_checked(model, inputs, fresh, tolerance, dynamic_batch, run_options)
        from ..passes.onnx import run_pipeline

        return run_pipeline(fresh, **run_options)

    marked = proto.SerializeToString()
    if tune and fuse and target == ExportTarget.ORT_CPU:
        from .tuning import faster_batch_form, faster_file, same_as_cost_model, times_batch_forms

        tuned = lowered(True)
        # the cost model's file is the tuned one when every layer got its form: nothing to compare
        proto = tuned if same_as_cost_model(tuned) else faster_file(tuned, lowered(False), inputs, threads)
        if times_batch_forms(proto, model):
            proto = faster_batch_form(proto, lowered(proto is tuned, "per-layer"), inputs, threads)
    else:
        proto = lowered(False)
    if path is not None:  # temp + fsync + rename: never a partial file, a link, a device or a checkpoint replaced
        from ..atomic_file import atomic_write

        data = proto.SerializeToString()
        atomic_write(path, lambda fh: fh.write(data), replaces="onnx")
    return proto


def check_batches(inputs: Sequence[Tensor], dynamic_batch: bool) -> tuple[int, ...]:
    """The batch sizes the export check runs: every branch of a dynamic-batch file (1, 2 and 0), or the one batch a
    static-batch file takes."""
    from ..passes.onnx.check import CHECK_BATCH

    return (1, CHECK_BATCH, 0) if dynamic_batch else (_batch_of(inputs),)


def _run_checked(model: nn.Module, inputs: tuple[Tensor, ...], proto: onnx.ModelProto, tolerance: float,
                 dynamic_batch: bool, options: dict[str, Any]) -> onnx.ModelProto:
    """``run_pipeline`` with the numeric check, its bound from the model's own error (``own_error.py``): float32 vs
    float64 first; where a pass exceeds that bound, the runtime's own error too (one more export), and the
    pipeline runs again under the wider bound if it is wider."""
    from ..passes.onnx import PassNumericsError, run_pipeline
    from ..passes.onnx.check import random_feed

    examples = [x.detach().cpu().numpy() for x in inputs]
    batches = check_batches(inputs, dynamic_batch)
    feeds = [random_feed(examples, b) for b in batches if b]
    # Over every check batch (a layer's eager form depends on the batch), and the example's, which the model runs
    # at even where its own code fixes the batch (the pipeline's reference run says so then).
    own = OwnError(fp32=worst_fp32_error(model, [random_feed(examples, _batch_of(inputs)), *feeds], inputs[0].device))
    if own.fp32 is None:  # the model cannot run in float64: measure the runtime's error instead
        own = with_runtime(own, model, inputs, feeds, plain_export)
    marked = proto.SerializeToString()

    def run(bound: float) -> onnx.ModelProto:
        LOGGER.debug("numeric check: %s", own.note(tolerance))
        return run_pipeline(onnx.load_from_string(marked), check_input=examples, tolerance=bound,
                            check_batches=batches, **options)

    try:
        try:
            proto = run(own.bound(tolerance))
        except PassNumericsError as err:
            wider = with_runtime(own, model, inputs, feeds, plain_export) if err.max_err < float("inf") else own
            if wider.bound(tolerance) <= own.bound(tolerance):
                own = wider
                raise
            own = wider
            proto = run(own.bound(tolerance))
    except PassNumericsError as err:
        hint = ("the file's batch-1 branch: export_onnx(..., batch1_branch=False) leaves it out"
                if err.pass_name == "lower_by_batch_regime" and "at batch 1" in err.detail else "")
        raise PassNumericsError(err.pass_name, err.max_err, err.tol,
                                "; ".join(filter(None, [err.detail, hint, own.note(tolerance)]))) from err
    warn_if_unstable(own, tolerance, "export_onnx's numeric check")
    return proto


__all__: Sequence[str] = [
    "export_onnx", "resolve_target", "export_marked", "export_mode", "generic_forward", "plain_export", "DEFAULT_OPSET",
]
