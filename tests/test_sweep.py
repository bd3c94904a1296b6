"""Sweep runner end to end on a tiny model: resume after interruption, failure recording, outputs, plots."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from odconv_surgery.experiments.data import load_digits_dataset, load_image_folder
from odconv_surgery.experiments.dir_lock import DirectoryLock, DirectoryLocked
from odconv_surgery.experiments.sweep import (
    SweepConfig,
    SweepOutputError,
    SweepResultsWarning,
    SweepSettingsMismatch,
    markdown_table,
    read_results,
    run_sweep,
    summarise,
)
from odconv_surgery.experiments.training import TrainConfig, train_and_evaluate
from odconv_surgery.errors import PretrainedCheckpointError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Tiny(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@pytest.fixture(scope="module")
def tiny_data():
    return load_digits_dataset(12, limit=48)


def _config(**kw) -> SweepConfig:
    base = dict(model="tests:Tiny", policies=["baseline", "all_but_first"], seeds=[0], epochs=1, image_size=12,
                limit=48, max_steps_per_epoch=2, batch_size=16, latency_runs=2, quiet=True)
    base.update(kw)
    return SweepConfig(**base)


def test_tiny_sweep_resume_and_outputs(tmp_path, tiny_data):
    cfg = _config()
    # First run is "interrupted" after one configuration.
    first = run_sweep(cfg, tmp_path, model_factory=Tiny, data=tiny_data, max_configs=1)
    assert [r["key"] for r in read_results(tmp_path)] == ["baseline|n=0|seed=0"]
    assert first.records[0]["status"] == "ok"
    # Resume: the finished configuration is skipped, the other one runs.
    second = run_sweep(cfg, tmp_path, model_factory=Tiny, data=tiny_data)
    assert second.skipped == 1
    lines = read_results(tmp_path)
    assert [r["key"] for r in lines] == ["baseline|n=0|seed=0", "all_but_first|n=1|seed=0"]
    assert all(r["status"] == "ok" for r in lines)
    odc = lines[1]
    assert odc["converted_layers"] == 2 and odc["params"] > lines[0]["params"] and odc["extra_madds"] > 0
    assert odc["latency_ms"] > 0 and odc["latency_backend"]
    from odconv_surgery.passes.onnx.common import detect_nchwc_block

    fastest = "ort-cpu" if detect_nchwc_block() is not None else "portable"  # the form a CPU user runs fastest
    assert odc["latency_backend"] == f"onnxruntime ({fastest})"
    assert 0 <= odc["top1"] <= 100 and odc["top5"] is not None
    # Outputs
    for name in ("results.csv", "summary.json", "table.md", "acc_vs_latency.png", "acc_vs_params.png"):
        assert (tmp_path / name).is_file(), name
    for png in ("acc_vs_latency.png", "acc_vs_params.png"):
        data = (tmp_path / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
    table = (tmp_path / "table.md").read_text()
    assert "| baseline |" in table and "+ ODConv (1x) to all conv layers except the first" in table
    assert "Latency ratio" in table
    summary = json.loads((tmp_path / "summary.json").read_text())["summary"]
    assert [row["policy"] for row in summary] == ["baseline", "all_but_first"]
    # A third run has nothing left to do.
    third = run_sweep(cfg, tmp_path, model_factory=Tiny, data=tiny_data)
    assert third.skipped == 2 and len(read_results(tmp_path)) == 2


def test_failure_is_recorded_and_sweep_goes_on(tmp_path, tiny_data, monkeypatch):
    from odconv_surgery import ODConv2d
    from odconv_surgery.experiments import sweep as sweep_module

    real = sweep_module.train_and_evaluate

    def fails_for_odconv(model, *args, **kwargs):  # a failure only training reveals (bad settings fail up front)
        if any(isinstance(m, ODConv2d) for m in model.modules()):
            raise RuntimeError("boom in training")
        return real(model, *args, **kwargs)

    monkeypatch.setattr(sweep_module, "train_and_evaluate", fails_for_odconv)
    cfg = _config(policies=["all_but_first", "baseline"], latency=False)
    result = run_sweep(cfg, tmp_path, model_factory=Tiny, data=tiny_data)
    by_key = {r["key"]: r for r in result.records}
    assert by_key["all_but_first|n=1|seed=0"]["status"] == "error"
    assert "boom in training" in by_key["all_but_first|n=1|seed=0"]["error"]
    assert "Traceback" in by_key["all_but_first|n=1|seed=0"]["traceback"]
    assert by_key["baseline|n=0|seed=0"]["status"] == "ok"
    assert "Failed configurations" in (tmp_path / "table.md").read_text()
    # Failures are retried on resume (and recorded again); successes are not re-run.
    again = run_sweep(cfg, tmp_path, model_factory=Tiny, data=tiny_data)
    assert again.skipped == 1
    assert len(read_results(tmp_path)) == 3


def test_settings_mismatch_refuses_to_mix(tmp_path, tiny_data):
    run_sweep(_config(policies=["baseline"], latency=False), tmp_path, model_factory=Tiny, data=tiny_data)
    with pytest.raises(SweepSettingsMismatch, match="another output directory"):
        run_sweep(_config(policies=["baseline"], latency=False, epochs=2), tmp_path, model_factory=Tiny, data=tiny_data)


def _record(policy="baseline", n=0, seed=0, **kw) -> dict:
    rec = {"key": f"{policy}|n={n}|seed={seed}", "policy": policy, "kernel_num": n, "seed": seed, "status": "ok",
           "settings": {}, "top1": 90.0, "top5": 99.0, "params": 10, "madds": 20, "latency_ms": None}
    rec.update(kw)
    return rec


def test_torn_last_line_is_skipped_with_a_warning(tmp_path):
    good = _record()
    (tmp_path / "results.jsonl").write_text(json.dumps(good) + "\n" + '{"key": "all_but')
    with pytest.warns(SweepResultsWarning, match=r"results.jsonl:2: torn last line"):
        assert read_results(tmp_path) == [good]


def test_invalid_records_are_skipped_with_warnings(tmp_path):
    lines = [
        json.dumps(_record()),
        "42",
        "not json",
        json.dumps(_record("3x3", 1, top1=999)),
        json.dumps(_record("1x1", 1, key="other|n=1|seed=0")),
        json.dumps(_record("last:2", 1, status="error", top1=None, error="boom")),  # a failure needs no metrics
        json.dumps(_record("all", 1, kernel_num="1")),
    ]
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.warns(SweepResultsWarning) as caught:
        records = read_results(tmp_path)
    assert [r["key"] for r in records] == ["baseline|n=0|seed=0", "last:2|n=1|seed=0"]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 5
    for line, reason in zip((2, 3, 4, 5, 7), ("not a JSON object", "not valid JSON", "impossible top1=999", "key 'other|n=1|seed=0' does not match",
                                              "kernel_num must be an int")):
        assert any(f"results.jsonl:{line}: {reason}" in m for m in messages), (line, messages)


def test_resume_after_torn_line_and_bad_records(tmp_path, tiny_data):
    """A kill mid-write, then a hand-edited line: the resume re-runs what was lost and appends on fresh lines."""
    cfg = _config(policies=["baseline", "all_but_first"], seeds=[0, 1], latency=False)
    run_sweep(cfg, tmp_path, model_factory=Tiny, data=tiny_data, max_configs=2)
    path = tmp_path / "results.jsonl"
    first, second = path.read_text().splitlines()
    assert json.loads(first)["key"] == "baseline|n=0|seed=0"
    bad = json.loads(second) | {"top1": 999}
    path.write_text(first + "\n" + json.dumps(bad) + "\n42\n" + second[: len(second) // 2])  # torn: no newline
    with pytest.warns(SweepResultsWarning) as caught:
        result = run_sweep(cfg, tmp_path, model_factory=Tiny, data=tiny_data)
    assert sorted(str(w.message).split(": ")[0].rsplit(":", 1)[1] for w in caught) == ["2", "3", "4"]
    assert result.skipped == 1 and len(result.records) == 4 and all(r["status"] == "ok" for r in result.records)
    valid = read_results(path, warn=False)
    assert sorted(r["key"] for r in valid) == sorted(
        f"{p}|n={n}|seed={s}" for s in (0, 1) for p, n in (("baseline", 0), ("all_but_first", 1))
    )
    assert path.read_text().endswith("\n")


def test_second_sweep_on_a_locked_directory_refuses(tmp_path, tiny_data):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from odconv_surgery.experiments.dir_lock import DirectoryLock; "
         f"lock = DirectoryLock({str(tmp_path)!r}, 'sweep').acquire(); print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        calls = []
        with pytest.raises(DirectoryLocked, match=rf"another sweep \(pid {holder.pid}\) is writing to .*another output directory"):
            run_sweep(_config(latency=False), tmp_path, model_factory=lambda n: calls.append(n) or Tiny(n), data=tiny_data)
        assert not calls and not (tmp_path / "results.jsonl").exists()
    finally:
        holder.communicate("")
    # The holder is gone (the kernel drops its lock however it exits): the directory is usable again.
    run_sweep(_config(policies=["baseline"], latency=False), tmp_path, model_factory=Tiny, data=tiny_data)
    assert len(read_results(tmp_path)) == 1


def test_lock_is_released_and_exclusive_within_a_process(tmp_path):
    with DirectoryLock(tmp_path, "sweep"):
        with pytest.raises(DirectoryLocked, match=rf"pid {os.getpid()}"):
            DirectoryLock(tmp_path, "sweep").acquire()
    DirectoryLock(tmp_path).acquire().release()


def test_bad_output_paths_fail_before_training(tmp_path, tiny_data):
    calls = []

    def factory(n):
        calls.append(n)
        return Tiny(n)

    (tmp_path / "afile").write_text("")
    with pytest.raises(SweepOutputError, match="afile is not a directory"):
        run_sweep(_config(latency=False), tmp_path / "afile", model_factory=factory, data=tiny_data)
    (tmp_path / "out" / "results.jsonl").mkdir(parents=True)
    with pytest.raises(SweepOutputError, match="results.jsonl is not a regular file"):
        run_sweep(_config(latency=False), tmp_path / "out", model_factory=factory, data=tiny_data)
    assert not calls


def test_summarise_mean_std_and_table():
    recs = [
        {"policy": "baseline", "kernel_num": 0, "status": "ok", "top1": 90.0, "top5": 99.0, "latency_ms": 1.0, "params": 1e6, "madds": 5e6, "latency_backend": "onnxruntime"},
        {"policy": "baseline", "kernel_num": 0, "status": "ok", "top1": 92.0, "top5": 99.0, "latency_ms": 1.0, "params": 1e6, "madds": 5e6, "latency_backend": "onnxruntime"},
        {"policy": "3x3", "kernel_num": 1, "status": "ok", "top1": 95.0, "top5": 100.0, "latency_ms": 2.0, "params": 2e6, "madds": 6e6, "latency_backend": "onnxruntime"},
        {"policy": "3x3", "kernel_num": 1, "status": "error", "error": "boom"},
    ]
    rows = summarise(recs, ["baseline", "3x3"])
    assert rows[0]["top1_mean"] == 91.0 and rows[0]["top1_std"] == pytest.approx(1.41421, rel=1e-4)
    assert rows[1]["latency_ratio"] == 2.0 and rows[1]["top1_gain"] == 4.0 and rows[1]["failed"] == 1
    table = markdown_table(rows)
    assert "91.00 ± 1.41" in table and "2.00x" in table and "(+4.00)" in table and "boom" in table


def test_the_top1_change_pairs_each_seed_with_its_own_baseline():
    """Seeds whose static models differ by 6 points: the difference of means hides a steady +1 that pairing shows."""
    recs = [{"policy": "baseline", "kernel_num": 0, "seed": s, "status": "ok", "top1": t, "top5": 99.0}
            for s, t in ((0, 80.0), (1, 74.0), (2, 77.0))]
    recs += [{"policy": "all_but_first", "kernel_num": 1, "seed": s, "status": "ok", "top1": t, "top5": 99.0}
             for s, t in ((0, 81.0), (1, 75.5), (2, 77.5))]
    recs.append({"policy": "1x1", "kernel_num": 1, "seed": 0, "status": "ok", "top1": 79.0, "top5": 99.0})
    rows = {row["policy"]: row for row in summarise(recs, ["baseline", "all_but_first", "1x1"])}
    assert rows["all_but_first"]["top1_std"] == pytest.approx(2.784, abs=1e-3)  # the seeds' spread...
    assert rows["all_but_first"]["top1_gain"] == pytest.approx(1.0)  # ...cancels in the paired change
    assert rows["all_but_first"]["top1_gain_std"] == pytest.approx(0.5) and rows["all_but_first"]["paired_seeds"] == 3
    assert rows["1x1"]["top1_gain"] == pytest.approx(79.0 - 77.0) and rows["1x1"]["top1_gain_std"] is None  # one seed
    table = markdown_table(list(rows.values()))
    assert "(+1.00 ± 0.50)" in table and "(+2.00)" in table and "each seed's top-1 minus the baseline's" in table


def test_training_anneals_temperature(tiny_data):
    from odconv_surgery import apply_odconv
    from odconv_surgery.nn.temperature import get_temperature

    model, _ = apply_odconv(Tiny(), "all_but_first")
    result = train_and_evaluate(model, tiny_data, TrainConfig(epochs=2, batch_size=8, max_steps_per_epoch=5, progress=False))
    assert result.steps == 10
    assert result.history[0]["temperature"] < 30 and get_temperature(model) == 1.0
    assert result.history[-1]["lr"] == pytest.approx(0.0, abs=1e-9)  # cosine to zero
    assert not model.training


def test_digits_split_is_fixed():
    a, b = load_digits_dataset(16), load_digits_dataset(16)
    assert len(a.train) + len(a.test) == 1797 and len(a.test) == 450
    assert torch.equal(a.test.tensors[1], b.test.tensors[1])
    assert a.train[0][0].shape == (3, 16, 16)


def test_image_folder(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.new("RGB", (20, 20), color=(i * 40, 10, 200 if cls == "dog" else 0)).save(tmp_path / cls / f"{i}.png")
    bundle = load_image_folder(tmp_path, image_size=16)
    assert bundle.num_classes == 2 and len(bundle.train) == 8 and len(bundle.test) == 2
    assert bundle.train[0][0].shape == (3, 16, 16)
    with pytest.raises(FileNotFoundError, match="ImageFolder"):
        load_image_folder(tmp_path / "missing")


def test_from_trained_sweep_converts_the_cached_static_model(tmp_path, tiny_data):
    cfg = _config(policies=["baseline", "all_but_first", "3x3"], pretrain_epochs=2, latency=False)
    assert cfg.from_trained and cfg.init == "pretrained" and cfg.lr == 0.01 and cfg.attention_lr_scale == 0.1
    result = run_sweep(cfg, tmp_path, model_factory=Tiny, data=tiny_data)
    assert (tmp_path / "pretrained" / "static_seed0.pt").is_file()
    by_policy = {r["policy"]: r for r in result.records}
    assert all(r["status"] == "ok" for r in result.records)
    static = {r["top1_static"] for r in result.records}
    assert len(static) == 1  # every policy starts from the same trained weights
    for policy in ("baseline", "all_but_first", "3x3"):  # function-preserving: same accuracy right after surgery
        assert by_policy[policy]["top1_converted"] == by_policy[policy]["top1_static"]
    assert "Top-1 at conversion" in (tmp_path / "table.md").read_text()
    assert "trained 2 epochs, then converted and fine-tuned" in (tmp_path / "table.md").read_text()


def test_pretrained_cache_is_reused_and_retrained_when_settings_change(tmp_path, tiny_data):
    from odconv_surgery.experiments.distributed import DistContext
    from odconv_surgery.experiments.pretrain import trained_static_model

    recipe = TrainConfig(epochs=1, batch_size=16, max_steps_per_epoch=2, progress=False)
    first, top1 = trained_static_model(Tiny, tiny_data, 0, recipe, tmp_path, DistContext())
    again, top1_again = trained_static_model(Tiny, tiny_data, 0, recipe, tmp_path, DistContext())
    assert top1 == top1_again
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    longer = TrainConfig(epochs=2, batch_size=16, max_steps_per_epoch=2, progress=False)
    retrained, _ = trained_static_model(Tiny, tiny_data, 0, longer, tmp_path, DistContext())
    assert not torch.equal(retrained.fc.weight, first.fc.weight)
    assert torch.load(tmp_path / "static_seed0.pt", weights_only=True)["settings"]["epochs"] == 2


def test_from_checkpoint_sweep_uses_the_users_weights(tmp_path, tiny_data):
    from odconv_surgery.experiments.training import evaluate

    torch.manual_seed(5)
    trained = Tiny()
    train_and_evaluate(trained, tiny_data, TrainConfig(epochs=1, batch_size=16, max_steps_per_epoch=3, progress=False))
    ckpt = tmp_path / "static.pt"
    torch.save(trained.state_dict(), ckpt)
    expected, _ = evaluate(trained, tiny_data.test)
    cfg = _config(policies=["baseline", "1x1"], from_checkpoint=str(ckpt), latency=False)
    assert cfg.settings()["from_checkpoint_sha256"]
    result = run_sweep(cfg, tmp_path / "out", model_factory=Tiny, data=tiny_data)
    assert [r["top1_static"] for r in result.records] == [expected, expected]
    assert result.records[1]["top1_converted"] == expected

    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "wrong.pt")
    with pytest.raises(PretrainedCheckpointError, match="does not fit the sweep's model"):  # before anything runs
        run_sweep(_config(policies=["baseline"], from_checkpoint=str(tmp_path / "wrong.pt"), latency=False),
                  tmp_path / "bad", model_factory=Tiny, data=tiny_data)
    assert not (tmp_path / "bad").exists()


def test_scratch_mode_defaults():
    cfg = _config(pretrain_epochs=0)
    assert not cfg.from_trained and cfg.init == "neutral" and cfg.lr == 0.05 and cfg.attention_lr_scale == 0.1
    assert cfg.epochs == 1  # explicit settings win over the mode's defaults
    with pytest.raises(ValueError, match="pretrain_epochs"):
        _config(pretrain_epochs=-1)


def test_param_groups_scale_the_attention_lr_and_skip_frozen():
    from odconv_surgery import ODConv2d, apply_odconv
    from odconv_surgery import param_groups

    model, _ = apply_odconv(Tiny(), "all_but_first")
    model.fc.bias.requires_grad_(False)
    groups = param_groups(model, lr=0.1, weight_decay=1e-4, attention_lr_scale=0.1)
    attention = {id(p) for m in model.modules() if isinstance(m, ODConv2d) for p in m.attention.parameters()}
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters() if p.requires_grad)
    for group in groups:
        is_attention = {id(p) in attention for p in group["params"]}
        assert len(is_attention) == 1
        assert group["lr"] == pytest.approx(0.01 if is_attention.pop() else 0.1)
        assert group["weight_decay"] == (1e-4 if group["params"][0].ndim > 1 else 0.0)


def test_variants_sweep_methods_and_ablations(tmp_path, tiny_data):
    from odconv_surgery.experiments.sweep_variants import parse_variant

    variants = ["odconv", "dyconv", "odconv:attentions=spatial+channel", "odconv:kernel_num=2"]
    cfg = _config(policies=["baseline", "default"], variants=variants, kernel_nums=[1], latency=False)
    assert [c[1:] for c in cfg.configurations()] == [(0, 0, "odconv"), (1, 0, "odconv"), (4, 0, "dyconv"),
                                                   (1, 0, "odconv:attentions=spatial+channel"), (2, 0, "odconv:kernel_num=2")]
    result = run_sweep(cfg, tmp_path, model_factory=Tiny, data=tiny_data)
    keys = [r["key"] for r in read_results(tmp_path)]
    assert keys[:2] == ["baseline|n=0|seed=0", "default|n=1|seed=0"]  # the default variant keeps the old keys
    assert keys[2] == "default|n=4|seed=0|variant=dyconv"
    assert all(r["status"] == "ok" for r in result.records)
    by_variant = {r.get("variant", "odconv"): r for r in result.records if r["policy"] != "baseline"}
    assert by_variant["dyconv"]["converted_layers"] == 2  # all but the stem
    assert by_variant["odconv:kernel_num=2"]["params"] > by_variant["odconv"]["params"]
    table = (tmp_path / "table.md").read_text()
    assert "+ DyConv (4x) to its paper's layers" in table and "+ ODConv (1x) [attentions=spatial+channel]" in table
    attentions = (tmp_path / "table_attentions.md").read_text()
    assert "| α_s | α_c | α_f | α_w |" in attentions
    assert "| + DyConv (4x) to its paper's layers | - | - | - | ✓ |" in attentions
    # a resumed sweep with the same variants has nothing to do
    assert run_sweep(cfg, tmp_path, model_factory=Tiny, data=tiny_data).skipped == 5
    assert parse_variant("odconv:reduction=1/4:attention_trunk=off").settings == {"reduction": 0.25, "attention_trunk": False}


@pytest.mark.parametrize("variant,match", [
    ("odkonv", "unknown method 'odkonv'"),
    ("odconv:kernel_num", "is not key=value"),
    ("odconv:kernels=4", "is not key=value"),
    ("odconv:kernel_num=four", "is not a valid value"),
    ("odconv:attentions=spatial:kernel_num=4", "add 'kernel' to attentions"),
])
def test_bad_variants_name_the_fix(variant, match):
    from odconv_surgery.errors import SweepSettingsError

    with pytest.raises(SweepSettingsError, match=match):
        _config(variants=[variant])
def test_stats_flag_writes_each_converted_models_statistics(tmp_path, tiny_data):
    from odconv_surgery import AttentionStats
    from odconv_surgery.experiments.sweep_manifest import foreign_outputs
    from odconv_surgery.experiments.sweep_stats import SweepStatsWarning, stats_name

    variant = "odconv:attentions=filter+kernel"
    cfg = _config(policies=["baseline", "1x1"], variants=["odconv", variant], latency=False, stats=True)
    result = run_sweep(cfg, tmp_path, model_factory=Tiny, data=tiny_data)
    by_key = {r["key"]: r for r in result.records}
    assert "stats" not in by_key["baseline|n=0|seed=0"]  # nothing converted, nothing to measure
    assert by_key["1x1|n=1|seed=0"]["stats"] == "stats/1x1-n1-seed0.json"
    stats = AttentionStats.read(tmp_path / "stats" / "1x1-n1-seed0.json")
    assert stats.samples == len(tiny_data.test) and [layer.name for layer in stats.layers] == ["features.6"]
    assert set(stats.layer("features.6").attentions()) == {"channel", "filter"}
    named = by_key[f"1x1|n=1|seed=0|variant={variant}"]["stats"]  # each variant its own files
    assert named == "stats/1x1-odconv%3Aattentions%3Dfilter%2Bkernel-n1-seed0.json"
    assert set(AttentionStats.read(tmp_path / named).layer("features.6").attentions()) == {"filter"}
    assert stats_name("last:2", 4, 1) == "stats/last%3A2-n4-seed1"  # any policy name is one file name
    assert (tmp_path / "stats" / "1x1-n1-seed0.png").read_bytes().startswith(PNG_MAGIC)
    assert result.files["stats"] == tmp_path / "stats" and foreign_outputs(tmp_path) == []
    (tmp_path / "stats" / "other.json").write_text("{}")  # a file the sweep did not write is never overwritten
    assert foreign_outputs(tmp_path) == ["stats/other.json"]
    # A sweep that finished without --stats has no model left to measure: re-running with it says so.
    plain = tmp_path / "plain"
    run_sweep(_config(policies=["1x1"], latency=False), plain, model_factory=Tiny, data=tiny_data)
    with pytest.warns(SweepStatsWarning, match="1 finished configuration"):
        again = run_sweep(_config(policies=["1x1"], latency=False, stats=True), plain, model_factory=Tiny, data=tiny_data)
    assert again.skipped == 1 and not (plain / "stats").exists()
