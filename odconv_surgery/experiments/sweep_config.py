"""The sweep's settings: one frozen dataclass, every value checked when it is built, before anything runs.

``SweepConfig`` is the only place the sweep's settings and their defaults live: the CLI's ``sweep`` options are
made from its fields (``cli_fields``: flag, type and help in each field's metadata, the default read from the
field), and ``SweepConfig(...)`` refuses a bad value with one ``SweepSettingsError`` line naming the setting, its
command-line flag and the accepted range, before any data is loaded, any model trained or any file written.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

from .sweep_variants import DEFAULT_VARIANT, parse_variant
from ..errors import DatasetError, InvalidValueError
from ..errors import SweepSettingsError  # noqa: F401 - raised here, defined with every error
from ..methods import METHOD_POLICY
from ..nn.attention import ATTENTION_NORMS
from ..nn.odconv import INIT_MODES
from ..nn.optim import ATTENTION_LR_SCALE
from ..policies import PAPER_POLICIES, get_policy
from .data_spec import TEXTURES, check_data, data_identity, parse_data_spec
from .training import TrainConfig

__all__ = ["BASELINE", "DEFAULT_POLICIES", "FINETUNE_DEFAULTS", "SCRATCH_DEFAULTS", "SCRATCH_LR", "SweepConfig",
           "SweepSettingsError", "cli_fields", "cli_help"]

#: The policy name of the unconverted model, the reference of every ratio and gain.
BASELINE = "baseline"
DEFAULT_POLICIES = (BASELINE, *PAPER_POLICIES)
# Fine-tuning a trained model: the function-preserving init and a smaller learning rate. In both modes the attention
# branches train at a tenth of the learning rate (``nn/optim.py`` says why).
FINETUNE_DEFAULTS: dict[str, Any] = {"epochs": 3, "lr": 0.01, "attention_lr_scale": ATTENTION_LR_SCALE, "init": "pretrained"}
# From scratch: the paper's recipe scaled down (see ``sweep.py``).
SCRATCH_DEFAULTS: dict[str, Any] = {"epochs": 5, "lr": 0.05, "attention_lr_scale": ATTENTION_LR_SCALE, "init": "neutral"}
#: The learning rate of training from scratch (each seed's pretraining, and every configuration when
#: ``pretrain_epochs=0``) on a built-in set whose value differs from ``SCRATCH_DEFAULTS["lr"]``. On textures,
#: mobilenet_v2 0.5 at 0.05 without warm-up takes off on some seeds only (the others end 25-55 points lower at any
#: difficulty); at 0.02 every seed measured trains smoothly (docs/sweeps.md).
SCRATCH_LR: dict[str, float] = {TEXTURES: 0.02}

MAX_KERNEL_NUM = 64  # the paper uses 1..8; beyond this the bank is rarely what anyone meant
MAX_SEED = 2**63 - 1  # torch.manual_seed, generators and samplers all take it
MAX_IMAGE_SIZE = 2048
MAX_EPOCHS = 100_000


def _mode_default(name: str) -> str:
    scratch = _scratch_lr_help() if name == "lr" else SCRATCH_DEFAULTS[name]
    return f"{FINETUNE_DEFAULTS[name]} fine-tuning, {scratch} from scratch"


def _scratch_lr_help() -> str:
    return f"{SCRATCH_DEFAULTS['lr']}" + "".join(f" ({lr} on {data})" for data, lr in SCRATCH_LR.items())


def _scratch_lr(data: str | os.PathLike | None) -> float:
    """The from-scratch learning rate for ``data``: its ``SCRATCH_LR`` entry, else ``SCRATCH_DEFAULTS["lr"]``."""
    builtin = parse_data_spec(data) if data is not None else None
    return SCRATCH_LR.get(builtin[0] if builtin else "", SCRATCH_DEFAULTS["lr"])


def _cli(flags: str | tuple[str, ...], help: str, type: Any = None, **extra: Any) -> dict[str, Any]:
    """Field metadata for the CLI option of a setting (``help`` may use ``{default}``)."""
    return {"flags": (flags,) if isinstance(flags, str) else flags, "help": help, "type": type, **extra}


@dataclass(frozen=True)
class SweepConfig:
    """What to sweep. ``model`` is a spec string (see ``model_spec``); ``num_classes`` comes from the data.

    Two starting points. From a trained model (default, ``pretrain_epochs > 0`` or ``from_checkpoint``): per seed
    the static model is trained for ``pretrain_epochs`` (cached in the output directory) or loaded from the user's
    ``from_checkpoint``, then every policy converts it with the function-preserving init and fine-tunes it for
    ``epochs``; the baseline is the static model fine-tuned the same way. From scratch (``pretrain_epochs=0``):
    every configuration is built fresh and trained for ``epochs``. ``None`` settings take the mode's default
    (``FINETUNE_DEFAULTS`` / ``SCRATCH_DEFAULTS``; training from scratch, ``pretrain_lr`` included, at the data's
    ``SCRATCH_LR`` where it has one). Frozen: use ``dataclasses.replace`` for a variant.
    """

    model: str = "torchvision:mobilenet_v2?width_mult=0.5"
    policies: Sequence[str] = field(default=DEFAULT_POLICIES, metadata=_cli(
        "--policies", "placement policies, 'baseline' for the unconverted model, 'default' for each method's own "
        "(default: {default})", str, nargs="+",
        metavar="POLICY"))
    variants: Sequence[str] = field(default=(DEFAULT_VARIANT,), metadata=_cli(
        "--variants", "methods and layer settings to sweep, METHOD[:key=value]... (odconv, dyconv, condconv, "
        "'odconv:kernel_num=4', 'odconv:attentions=spatial+channel'; default {default}); with policy 'default' each "
        "method uses its own placement", str, nargs="+", metavar="VARIANT"))
    kernel_nums: Sequence[int] = field(default=(1,), metadata=_cli(
        ("-n", "--kernel-num"), f"kernel numbers n to sweep, 1..{MAX_KERNEL_NUM} (default {{default}})", int, nargs="+",
        metavar="N"))
    seeds: Sequence[int] = field(default=(0, 1, 2), metadata=_cli(
        "--seed-list", "explicit seeds (default {default}; --seeds S is short for 0..S-1)", int, nargs="+", metavar="SEED"))
    data: str | None = field(default=None, metadata=_cli(
        "--data", "a built-in set, 'digits' (scikit-learn's, the default) or 'textures' (generated, harder; arguments "
        "as in 'textures?difficulty=0.5&train_size=4000'), or an ImageFolder root (class folders, or train/ and val/)"))
    image_size: int | None = field(default=None, metadata=_cli(
        "--image-size", "input size (default 32 for the built-in sets, 64 for ImageFolder)", int))
    pretrain_epochs: int = field(default=5, metadata=_cli(
        "--pretrain-epochs", "train the static model this many epochs per seed, then convert and fine-tune it "
        "(default {default}; 0 trains every configuration from scratch)", int))
    pretrain_lr: float | None = field(default=None, metadata=_cli(
        "--pretrain-lr", f"learning rate of that pretraining (default {_scratch_lr_help()})", float))
    from_checkpoint: str | None = field(default=None, metadata=_cli(
        "--from", "start from your trained static weights (torch.save(model.state_dict())) instead of pretraining",
        metavar="CKPT"))
    epochs: int | None = field(default=None, metadata=_cli(
        "--epochs", f"fine-tuning (or from-scratch training) epochs per configuration (default {_mode_default('epochs')})", int))
    batch_size: int = field(default=64, metadata=_cli("--batch-size", "batch size per process (default {default})", int))
    lr: float | None = field(default=None, metadata=_cli(
        "--lr", f"initial learning rate, cosine to 0 (default {_mode_default('lr')})", float))
    attention_lr_scale: float | None = field(default=None, metadata=_cli(
        "--attention-lr-scale", f"ODConv attention learning rate relative to --lr (default {ATTENTION_LR_SCALE})", float))
    weight_decay: float = field(default=4e-5, metadata=_cli("--weight-decay", "SGD weight decay (default {default})", float))
    grad_clip: float | None = field(default=10.0, metadata=_cli(
        "--grad-clip", "clip the gradient norm at this value (default {default}; see the sweep module)", float))
    reduction: float = field(default=1 / 16, metadata=_cli(
        ("--reduction", "-r"), "attention reduction ratio, in (0, 1] (default {default})", "fraction"))
    init: str | None = field(default=None, metadata=_cli(
        "--init", f"ODConv init (default {_mode_default('init')})", str, choices=INIT_MODES))
    attention_norm: str = field(default="bn", metadata=_cli(
        "--attention-norm", "attention trunk normalisation (default {default})", str, choices=ATTENTION_NORMS))
    latency: bool = field(default=True, metadata=_cli("--no-latency", "skip the latency measurement", const=False))
    latency_runs: int = field(default=30, metadata=_cli(
        "--latency-runs", "timed runs per latency measurement (default {default})", int))
    stats: bool = field(default=False, metadata=_cli(
        "--stats", "also write each converted model's attention statistics on the test set after training "
        "(stats/POLICY-nN-seedS.json and .png)", const=True))
    limit: int | None = field(default=None, metadata=_cli(
        "--limit", "use only this many images per split (smoke tests)", int))
    max_steps_per_epoch: int | None = field(default=None, metadata=_cli(
        "--max-steps", "cap steps per epoch (smoke tests)", int))
    quiet: bool = field(default=False, metadata=_cli(("-q", "--quiet"), "no progress bars (CI)", const=True))
    allow_import: bool = False  # let ``model`` be 'module:callable' (see model_spec); not a setting of the results

    def __post_init__(self) -> None:
        self._validate()
        if self.from_checkpoint is not None:
            object.__setattr__(self, "from_checkpoint", str(Path(self.from_checkpoint).expanduser().resolve()))
        from_scratch = {**SCRATCH_DEFAULTS, "lr": _scratch_lr(self.data)}
        if self.pretrain_lr is None:
            object.__setattr__(self, "pretrain_lr", from_scratch["lr"])
        for key, value in (FINETUNE_DEFAULTS if self.from_trained else from_scratch).items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        object.__setattr__(self, "policies", tuple(self.policies))
        object.__setattr__(self, "kernel_nums", tuple(self.kernel_nums))
        object.__setattr__(self, "variants", tuple(self.variants))
        object.__setattr__(self, "seeds", tuple(self.seeds))

    # ------------------------------------------------------------------------------------------ validation
    def _validate(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            _fail("model", "a model spec such as 'torchvision:resnet18'", self.model)
        _check_names(self)
        _check_numbers(self)
        _check_paths(self)

    @property
    def from_trained(self) -> bool:
        """Whether configurations start from a trained static model (fine-tuning) rather than from scratch."""
        return self.pretrain_epochs > 0 or self.from_checkpoint is not None

    def train_config(self, seed: int) -> TrainConfig:
        """The recipe every configuration (baseline included) trains or fine-tunes with."""
        return TrainConfig(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
            grad_clip=self.grad_clip, attention_lr_scale=self.attention_lr_scale, seed=seed,
            max_steps_per_epoch=self.max_steps_per_epoch, progress=not self.quiet,
        )

    def pretrain_config(self, seed: int) -> TrainConfig:
        """The recipe that trains each seed's static starting point."""
        return TrainConfig(
            epochs=self.pretrain_epochs, batch_size=self.batch_size, lr=self.pretrain_lr, weight_decay=self.weight_decay,
            grad_clip=self.grad_clip, seed=seed, max_steps_per_epoch=self.max_steps_per_epoch, progress=not self.quiet,
        )

    def settings(self) -> dict[str, Any]:
        """Everything that changes a configuration's result; stored with each record and checked on resume."""
        from .pretrain import file_digest

        keys = ("model", "data", "image_size", "pretrain_epochs", "pretrain_lr", "from_checkpoint", "epochs", "batch_size",
                "lr", "attention_lr_scale", "weight_decay", "grad_clip", "reduction", "init", "attention_norm", "limit",
                "max_steps_per_epoch")
        out = {k: getattr(self, k) for k in keys}
        out["data"] = data_identity(self.data)
        if self.from_checkpoint is not None:
            out["from_checkpoint_sha256"] = file_digest(self.from_checkpoint)
        return out

    def pretrain_settings(self) -> dict[str, Any]:
        """What shapes each seed's pretrained static model besides its training recipe (the cache's key)."""
        keep = ("model", "data", "image_size", "limit")
        return {k: v for k, v in self.settings().items() if k in keep}

    def title(self, dataset: str) -> str:
        """One line saying what was swept on ``dataset`` and how (the table's heading)."""
        if self.from_checkpoint:
            start = f"fine-tuned {self.epochs} epochs from {Path(self.from_checkpoint).name}"
        elif self.from_trained:
            start = f"static model trained {self.pretrain_epochs} epochs, then converted and fine-tuned {self.epochs} epochs"
        else:
            start = f"trained from scratch {self.epochs} epochs (init={self.init})"
        return f"{self.model} on {dataset}: {start}"

    def configurations(self) -> list[tuple[str, int, int, str]]:
        """(policy, n, seed, variant) tuples, seed-major (an interrupted sweep has every policy for the first
        seeds); the baseline runs once per seed with n = 0, a variant that fixes its kernel number once with it."""
        runs = []
        for seed in self.seeds:
            for policy in self.policies:
                if policy == BASELINE:
                    runs.append((policy, 0, seed, DEFAULT_VARIANT))
                    continue
                for text in self.variants:
                    fixed = parse_variant(text).fixed_kernel_num
                    for n in (self.kernel_nums if fixed is None else (fixed,)):
                        runs.append((policy, n, seed, text))
        return runs


def cli_fields() -> list[Field]:
    """The settings the ``sweep`` command exposes, in declaration order (flags, type and help in ``metadata``)."""
    return [f for f in fields(SweepConfig) if "flags" in f.metadata]


def cli_help(f: Field) -> str:
    """A setting's help text with its default filled in from the dataclass."""
    default = f.default
    if isinstance(default, tuple):
        default = " ".join(map(str, default))
    elif isinstance(default, float):
        default = f"{default:g}"
    return f.metadata["help"].format(default=default)


# ---------------------------------------------------------------------------------------------- checks
def _flag(name: str) -> str:
    meta = next((f.metadata for f in fields(SweepConfig) if f.name == name), {})
    flags = meta.get("flags")
    return f"{name} ({flags[-1]})" if flags else name


def _fail(name: str, expected: str, got: Any) -> None:
    shown = repr(got)
    raise SweepSettingsError(f"sweep setting {_flag(name)} must be {expected}, got {shown[:80]}{'...' if len(shown) > 80 else ''}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(config: SweepConfig, name: str, low: int, high: int, optional: bool = False) -> None:
    value = getattr(config, name)
    if optional and value is None:
        return
    if not _is_int(value) or not low <= value <= high:
        _fail(name, f"an integer in [{low}, {high}]" + (" or unset" if optional else ""), value)


def _real(config: SweepConfig, name: str, low: float, high: float = math.inf, *, low_open: bool = False,
          optional: bool = False) -> None:
    value = getattr(config, name)
    if optional and value is None:
        return
    ok = _is_real(value) and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bound = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if high != math.inf else "")
        _fail(name, f"a finite number {bound}" + (" or unset" if optional else ""), value)


def _sequence(config: SweepConfig, name: str) -> tuple:
    value = getattr(config, name)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        _fail(name, "a non-empty list", value)
    duplicates = sorted({str(v) for v in value if list(value).count(v) > 1})
    if duplicates:
        _fail(name, f"a list without repeats (repeated: {', '.join(duplicates)})", list(value))
    return tuple(value)


def _check_names(config: SweepConfig) -> None:
    for policy in _sequence(config, "policies"):
        if not isinstance(policy, str):
            _fail("policies", "policy names", policy)
        if policy not in (BASELINE, METHOD_POLICY):  # METHOD_POLICY: each variant's method's own placement
            try:
                get_policy(policy)
            except (ValueError, TypeError) as exc:
                raise SweepSettingsError(f"sweep setting {_flag('policies')}: {exc}") from None
    for text in _sequence(config, "variants"):
        parse_variant(text)  # SweepSettingsError naming the fix
    if config.init is not None and config.init not in INIT_MODES:
        _fail("init", f"one of {', '.join(INIT_MODES)}", config.init)
    if config.attention_norm not in ATTENTION_NORMS:
        _fail("attention_norm", f"one of {', '.join(ATTENTION_NORMS)}", config.attention_norm)


def _check_numbers(config: SweepConfig) -> None:
    for n in _sequence(config, "kernel_nums"):
        if not _is_int(n) or not 1 <= n <= MAX_KERNEL_NUM:
            _fail("kernel_nums", f"integers in [1, {MAX_KERNEL_NUM}]", n)
    for seed in _sequence(config, "seeds"):
        if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
            _fail("seeds", "integers in [0, 2**63 - 1]", seed)
    _int(config, "image_size", 8, MAX_IMAGE_SIZE, optional=True)
    _int(config, "pretrain_epochs", 0, MAX_EPOCHS)
    _int(config, "epochs", 1, MAX_EPOCHS, optional=True)
    _int(config, "batch_size", 2, 1 << 20)  # BatchNorm cannot train on one sample
    _int(config, "latency_runs", 1, 1 << 20)
    _int(config, "limit", 2, 1 << 31, optional=True)
    _int(config, "max_steps_per_epoch", 1, 1 << 31, optional=True)
    _real(config, "pretrain_lr", 0, 100, low_open=True, optional=True)
    _real(config, "lr", 0, 100, low_open=True, optional=True)
    _real(config, "attention_lr_scale", 0, 100, optional=True)
    _real(config, "weight_decay", 0, 1)
    _real(config, "grad_clip", 0, low_open=True, optional=True)
    _real(config, "reduction", 0, 1, low_open=True)
    for name in ("latency", "stats", "quiet", "allow_import"):
        if not isinstance(getattr(config, name), bool):
            _fail(name, "True or False", getattr(config, name))


def _check_paths(config: SweepConfig) -> None:
    if config.from_checkpoint is not None:
        path = Path(config.from_checkpoint).expanduser()
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            raise SweepSettingsError(f"sweep setting {_flag('from_checkpoint')}: cannot read {path} ({exc.strerror})") from None
        if not stat.S_ISREG(mode):
            _fail("from_checkpoint", "a regular file (torch.save(model.state_dict(), path))", str(path))
        if not os.access(path, os.R_OK):
            _fail("from_checkpoint", "a readable file", str(path))
    if config.data is None:
        return
    if not isinstance(config.data, (str, os.PathLike)):
        _fail("data", "'digits', 'textures[?ARGS]' or an ImageFolder directory", config.data)
    try:
        builtin = check_data(config.data, config.image_size)
    except (DatasetError, InvalidValueError) as exc:
        raise SweepSettingsError(f"sweep setting {_flag('data')}: {exc}") from None
    if not builtin and not Path(config.data).expanduser().is_dir():
        _fail("data", "'digits', 'textures[?ARGS]' or an ImageFolder directory", config.data)
