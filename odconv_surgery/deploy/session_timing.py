"""The timing loop the export's tuning shares (per-layer forms, whole files): interleaved rounds whose order rotates,
each session run about ``round_s`` seconds a round, the fastest round kept (another process on the machine only
ever adds time, and drift between rounds hits every session alike)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any, Hashable, Mapping


def rotating_rounds(keys: Sequence[Hashable], rounds: int) -> Iterator[list[Hashable]]:
    """Each round's timing order: every key once, each round starting one key later than the last (timed right
    after another session, a session measured up to 10 % slower in a fixed order)."""
    keys = list(keys)
    for r in range(rounds):
        yield keys[r % len(keys):] + keys[:r % len(keys)]


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
    best = dict.fromkeys(sessions, float("inf"))
    for order in rotating_rounds(list(sessions), rounds):
        for key in order:
            sess, feed = sessions[key]
            start = time.perf_counter()
            for _ in range(runs[key]):
                sess.run(None, feed)
            best[key] = min(best[key], (time.perf_counter() - start) / runs[key])
    return best
