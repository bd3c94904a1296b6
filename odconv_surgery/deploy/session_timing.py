"""The timing loop the export's tuning shares (per-layer forms, whole files): interleaved rounds whose order rotates,
each session run about ``round_s`` seconds a round, the fastest round kept (another process on the machine only
ever adds time, and drift between rounds hits every session alike)."""

from __future__ import annotations

import time
from typing import Any, Hashable, Mapping


def fastest_round_seconds(sessions: Mapping[Hashable, tuple[Any, dict]], rounds: int = 5, round_s: float = 0.004,
                          min_runs: int = 5) -> dict[Hashable, float]:
    """Seconds per run of each ``key -> (onnxruntime session, feed)``: the fastest of ``rounds`` interleaved rounds.
    Each session is warmed up once first, which also sizes its runs per round."""
    runs = {}
    for key, (sess, feed) in sessions.items():
        sess.run(None, feed)
        start = time.perf_counter()
        sess.run(None, feed)
        runs[key] = max(min_runs, int(round_s / max(time.perf_counter() - start, 1e-6)))
    keys = list(sessions)
    best = dict.fromkeys(keys, float("inf"))
    for r in range(rounds):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            sess, feed = sessions[key]
            start = time.perf_counter()
            for _ in range(runs[key]):
                sess.run(None, feed)
            best[key] = min(best[key], (time.perf_counter() - start) / runs[key])
    return best
