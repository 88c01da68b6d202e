"""Benchmark: exact all-heads ablation scan vs the naive one-forward-pass-per-head loop.

Runs, in one process and on the same induction task, the peer — one ``run_with_hooks`` pass per head with
the full logits, as TransformerLens's patching helpers and the official Safety-Heads code do — and the
suite's scan (:func:`interp.attribution.ablation_scan.ablation_scan`: clean residual cached, restart at
the head's layer, a layer's heads stacked along the batch, unembedding only at scored positions). It
checks that the two agree to 1e-4 on every metric (loss on the repeated half, logit difference, KL,
accuracy), and prints wall time, the speed ratio and the peak resident memory of each phase (RSS sampled
every 10 ms, above the level at the phase's start, after returning freed memory to the OS).

    python benchmarks/bench_head_importance.py            # full: every head, both models
    python benchmarks/bench_head_importance.py --quick    # a head subset per layer, under 3 minutes

The last lines are ``RESULT ablation_scan_speedup_tiny <x> ratio target >= 2`` and
``RESULT ablation_scan_speedup_gemma <x> ratio target >= 2``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import psutil  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import interp  # noqa: E402
from interp.attribution.ablation_scan import ablation_scan, naive_ablation_scan  # noqa: E402
from interp.tasks import induction_task  # noqa: E402

TOLERANCE = 1e-4


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def measured(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """Run ``fn``; return (result, seconds, peak RSS above the starting RSS in MiB)."""
    _trim()
    process = psutil.Process()
    start_rss = process.memory_info().rss
    peak = [start_rss]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.01)  # coarse enough not to compete for the GIL

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    started = time.perf_counter()
    try:
        result = fn()
    finally:
        seconds = time.perf_counter() - started
        done.set()
        thread.join()
    return result, seconds, (peak[0] - start_rss) / 2**20


def bench_model(name: str, *, n_sequences: int, half_length: int, heads_per_layer: int | None) -> dict[str, Any]:
    lm = interp.load_model(name)
    task = induction_task(lm, n_sequences=n_sequences, half_length=half_length, seed=0)
    heads = None
    if heads_per_layer is not None:
        step = max(1, lm.n_heads // heads_per_layer)
        heads = [(layer, head) for layer in range(lm.n_layers) for head in range(0, lm.n_heads, step)][
            : heads_per_layer * lm.n_layers]
    with torch.inference_mode():  # warm-up: first-call allocations and kernel selection
        lm.forward(task.tensors(lm).batch)
    naive, naive_s, naive_mb = measured(lambda: naive_ablation_scan(lm, task, heads=heads))
    fast, fast_s, fast_mb = measured(lambda: ablation_scan(lm, task, heads=heads))
    worst = 0.0
    for metric, values in fast.values.items():
        diff = (values - naive.values[metric]).abs().nan_to_num(0.0).max()
        worst = max(worst, float(diff))
    n_heads = sum(1 for _ in (heads or range(lm.n_layers * lm.n_heads)))
    return dict(model=name, heads=n_heads, sequences=n_sequences, tokens=len(task.examples[0].tokens),
                naive_s=naive_s, fast_s=fast_s, speedup=naive_s / fast_s, naive_mb=naive_mb, fast_mb=fast_mb,
                naive_passes=naive.forward_passes, fast_passes=fast.forward_passes, max_abs_diff=worst)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a head subset per layer (finishes in < 3 minutes)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--only", choices=["tiny", "gemma"], default=None, help="run one model only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    plan = [(key, name) for key, name in (("tiny", "tiny-gpt2-12l"), ("gemma", "gemma-3-270m"))
            if args.only in (None, key)]
    rows = []
    for key, name in plan:
        if args.quick:
            row = bench_model(name, n_sequences=2, half_length=8, heads_per_layer=4 if key == "tiny" else 1)
        else:
            row = bench_model(name, n_sequences=4, half_length=12, heads_per_layer=None)
        rows.append((key, row))
        print(f"done {name}: {row['speedup']:.2f}x", file=sys.stderr, flush=True)
    header = (f"{'model':15s} {'heads':>5s} {'seqs':>4s} {'tokens':>6s} {'naive s':>8s} {'scan s':>8s} {'ratio':>6s} "
              f"{'naive MiB':>9s} {'scan MiB':>9s} {'passes n/s':>11s} {'max |diff|':>10s}")
    print(header)
    print("-" * len(header))
    ok = True
    for _, r in rows:
        print(f"{r['model']:15s} {r['heads']:5d} {r['sequences']:4d} {r['tokens']:6d} {r['naive_s']:8.2f} "
              f"{r['fast_s']:8.2f} {r['speedup']:6.2f} {r['naive_mb']:9.1f} {r['fast_mb']:9.1f} "
              f"{r['naive_passes']:5d}/{r['fast_passes']:<5d} {r['max_abs_diff']:10.2e}")
        ok &= r["max_abs_diff"] <= TOLERANCE
    print(f"agreement with the naive loop: {'OK' if ok else 'FAILED'} (tolerance {TOLERANCE})")
    for key, r in rows:
        print(f"RESULT ablation_scan_speedup_{key} {r['speedup']:.2f} ratio target >= 2")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
