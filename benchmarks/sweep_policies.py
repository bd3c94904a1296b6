"""Benchmark entry: the placement-policy sweep (the paper's Table 9 on your model and data).

Default: torchvision mobilenet_v2 width 0.5 adapted to 10 classes, trained on scikit-learn's digits (upsampled
to 32x32, fixed split), baseline + the four Table 9 policies (all_but_first, 1x1, 3x3, last:6), n = 1, seeds
0-2, from a static model trained 5 epochs then converted and fine-tuned 3 epochs (`--pretrain-epochs 0`: from scratch, 5 epochs); latency is ONNX Runtime CPU batch 1 one thread. Resumable: re-run the same command after an
interruption. Options are those of ``odconv-surgery sweep`` (see ``--help``).

    python benchmarks/sweep_policies.py -o benchmarks/results/sweep            # default sweep
    python benchmarks/sweep_policies.py --epochs 1 --seeds 1 -q -o /tmp/quick  # smoke run
    python benchmarks/sweep_policies.py --data textures -o benchmarks/results/tex  # the harder generated set
    torchrun --nproc_per_node 2 benchmarks/sweep_policies.py -o results/ddp    # DDP training (gloo on CPU)

The wall time of the invocation is appended to ``<output>/wall_time.jsonl``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from odconv_surgery.atomic_file import open_for_append
from odconv_surgery.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a in ("-o", "--output") or a.startswith("--output=") for a in argv):
        argv += ["-o", str(Path(__file__).resolve().parent / "results" / "sweep")]
    if "-h" in argv or "--help" in argv:
        return cli_main(["sweep", "--help"])
    start = time.perf_counter()
    rc = cli_main(["sweep", *argv])
    wall = time.perf_counter() - start
    out = Path(argv[argv.index("-o") + 1] if "-o" in argv else argv[argv.index("--output") + 1])
    if int(os.environ.get("RANK", "0")) == 0 and out.is_dir():
        with open_for_append(out / "wall_time.jsonl") as fh:  # a regular file, never through a link
            fh.write((json.dumps({"argv": argv, "wall_seconds": round(wall, 1), "exit_code": rc, "cpu_count": os.cpu_count(),
                                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n").encode("utf-8"))
        print(f"sweep wall time: {wall / 60:.1f} min (exit code {rc})", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
