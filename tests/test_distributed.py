"""DDP training under torchrun with 2 CPU processes (gloo): attention BatchNorms become SyncBatchNorm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import torch
from torch import nn

from odconv_surgery.experiments.distributed import CPUSyncBatchNorm, DistContext, convert_attention_sync_batchnorm
from odconv_surgery.nn.odconv import ODConv2d

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from torch import nn
    from odconv_surgery.experiments.data import load_digits_dataset
    from odconv_surgery.experiments.distributed import CPUSyncBatchNorm, init_distributed, is_sync_batchnorm
    from odconv_surgery.nn.odconv import ODConv2d
    from odconv_surgery.experiments.training import TrainConfig, train_and_evaluate

    out = sys.argv[1]
    ctx = init_distributed()
    assert ctx.distributed and ctx.backend == "gloo", ctx

    # 1) CPUSyncBatchNorm == BatchNorm over the concatenated batch (forward, input grads, param grads).
    torch.manual_seed(0)
    full = torch.randn(8, 4, 3, 3)
    shard = full[ctx.rank * 4:(ctx.rank + 1) * 4].clone().requires_grad_(True)
    sbn = CPUSyncBatchNorm(4)
    y = sbn(shard)
    (y * torch.arange(4.0).view(1, 4, 1, 1)).sum().backward()
    ref_in = full.clone().requires_grad_(True)
    bn = nn.BatchNorm2d(4)
    yr = bn(ref_in)
    (yr * torch.arange(4.0).view(1, 4, 1, 1)).sum().backward()
    torch.distributed.all_reduce(sbn.weight.grad)
    bn_ok = (torch.allclose(y, yr[ctx.rank * 4:(ctx.rank + 1) * 4], atol=1e-5)
             and torch.allclose(shard.grad, ref_in.grad[ctx.rank * 4:(ctx.rank + 1) * 4], atol=1e-5)
             and torch.allclose(sbn.weight.grad, bn.weight.grad, atol=1e-4)
             and torch.allclose(sbn.running_mean, bn.running_mean, atol=1e-6)
             and torch.allclose(sbn.running_var, bn.running_var, atol=1e-5))

    # 2) A tiny ODConv model trained with DDP.
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        ODConv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )
    data = load_digits_dataset(8, limit=64)
    result = train_and_evaluate(model, data, TrainConfig(epochs=1, batch_size=8, max_steps_per_epoch=3, progress=False), ctx)
    norm = model[3].attention.norm
    gathered = [torch.zeros_like(norm.running_mean) for _ in range(ctx.world_size)]
    torch.distributed.all_gather(gathered, norm.running_mean)
    report = {
        "rank": ctx.rank, "world_size": result.world_size, "sync_batchnorms": result.sync_batchnorms,
        "norm_type": type(norm).__name__, "is_sync": is_sync_batchnorm(norm), "bn_matches": bool(bn_ok),
        "running_mean_equal": all(torch.allclose(g, gathered[0]) for g in gathered),
        "weights_equal": True, "top1": result.top1, "steps": result.steps,
    }
    w = model[3].weight.detach().clone()
    ws = [torch.zeros_like(w) for _ in range(ctx.world_size)]
    torch.distributed.all_gather(ws, w)
    report["weights_equal"] = all(torch.allclose(x, ws[0]) for x in ws)
    with open(os.path.join(out, f"rank{ctx.rank}.json"), "w") as fh:
        json.dump(report, fh)
    torch.distributed.barrier()  # both ranks done before the group goes (gloo's shutdown race)
    ctx.close()
    """
)


def test_ddp_two_cpu_processes_with_sync_batchnorm(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    if proc.returncode and "terminate called without an active exception" in proc.stderr:
        # gloo's threads sometimes abort at interpreter exit on a loaded 2-core machine (seen 2 in 6 full runs,
        # never alone): one more try, the same assertions after it
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rep in reports:
        assert rep["world_size"] == 2 and rep["sync_batchnorms"] == 1
        assert rep["is_sync"] and rep["norm_type"] == "CPUSyncBatchNorm"
        assert rep["bn_matches"], "CPUSyncBatchNorm must equal BatchNorm over the global batch"
        assert rep["running_mean_equal"] and rep["weights_equal"]
        assert rep["steps"] == 3
    assert reports[0]["top1"] == reports[1]["top1"]  # both evaluate the full test set


def test_convert_only_attention_batchnorms():
    model = nn.Sequential(ODConv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
    assert convert_attention_sync_batchnorm(model, "cpu") == 1
    assert isinstance(model[0].attention.norm, CPUSyncBatchNorm)
    assert type(model[1]) is nn.BatchNorm2d
    assert convert_attention_sync_batchnorm(model, "cpu") == 0  # idempotent
    # Outside a process group it behaves like BatchNorm (train and eval).
    x = torch.randn(4, 8, 5, 5)
    model.train()
    model(x)
    model.eval()
    assert model(x).shape == (4, 8, 5, 5)


def test_single_process_context_is_a_no_op(monkeypatch):
    from odconv_surgery.experiments.distributed import init_distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_distributed("cpu")
    assert isinstance(ctx, DistContext) and not ctx.distributed and ctx.is_main
    ctx.barrier()
