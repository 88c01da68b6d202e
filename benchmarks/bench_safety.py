"""Ships scan and a 3-step Sahara on smollm2-135m: our engine against the naive loop.

The naive loop is the official code's way: one full forward pass (all layers, logits at every position) per
head per step, with the ablation as a hook. Ours caches the clean (or group-ablated) run, recomputes only the
layers from the candidate's layer on, stacks a layer's heads along the batch dimension and unembeds only
the last prompt position. Both run in this process on the same requests (raw template of the official
scripts), the scores are checked equal (KL and angles to 1e-4) and the speed ratios printed.

    python benchmarks/bench_safety.py           # all 270 heads, 8 requests
    python benchmarks/bench_safety.py --quick   # 6 evenly spaced layers (54 heads), 4 requests: < 3 minutes
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_backend_argument, print_table, result_line, use_backend  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    add_backend_argument(parser)
    args = parser.parse_args()
    use_backend(args)
    torch.set_num_threads(args.threads)

    import interp
    from interp.attribution.safety_heads import naive_sahara, naive_ships_scan, sahara, ships_scan
    from interp.refusal import safety_prompts

    lm = interp.load_model("smollm2-135m")
    n_requests = 4 if args.quick else 8
    requests = safety_prompts("harmful", "train")[:n_requests]
    if args.quick:
        layers = [0, 5, 11, 17, 23, 29]
        candidates = [(layer, head) for layer in layers for head in range(lm.n_heads)]
    else:
        candidates = None
    n_candidates = len(candidates) if candidates else lm.n_layers * lm.n_heads
    common = dict(template="raw", candidates=candidates, batch_size=16)

    ships_scan(lm, requests[:2], template="raw", candidates=[(0, 0)])  # warm-up
    start = time.perf_counter()
    naive = naive_ships_scan(lm, requests, **common)
    naive_scan_s = time.perf_counter() - start
    start = time.perf_counter()
    fast = ships_scan(lm, requests, **common)
    fast_scan_s = time.perf_counter() - start
    chosen = ~torch.isnan(naive.mean)
    kl_diff = float((fast.per_query - naive.per_query)[:, chosen].abs().max())
    angle_diff = float((fast.generalized - naive.generalized)[chosen].abs().max())

    start = time.perf_counter()
    naive_group = naive_sahara(lm, requests, steps=3, **common)
    naive_sahara_s = time.perf_counter() - start
    start = time.perf_counter()
    fast_group = sahara(lm, requests, steps=3, **common)
    fast_sahara_s = time.perf_counter() - start
    both = ~torch.isnan(naive_group.step_scores)
    sahara_diff = float((fast_group.step_scores[both] - naive_group.step_scores[both]).abs().max())

    print(f"smollm2-135m, {n_candidates} candidate heads, {n_requests} requests (raw template), "
          f"{args.threads} threads, float32")
    print_table([
        ("Ships scan (KL + generalized Ships)", f"{naive_scan_s:.1f}", f"{fast_scan_s:.1f}",
         f"{naive_scan_s / fast_scan_s:.2f}x", f"KL {kl_diff:.2e}, angle {angle_diff:.2e} deg"),
        ("Sahara, 3 steps", f"{naive_sahara_s:.1f}", f"{fast_sahara_s:.1f}", f"{naive_sahara_s / fast_sahara_s:.2f}x",
         f"angle {sahara_diff:.2e} deg; groups {naive_group.heads} / {fast_group.heads}"),
    ], ("task", "naive s", "ours s", "speed-up", "max |difference|"))
    agree = kl_diff <= 1e-4 and angle_diff <= 1e-4 and sahara_diff <= 1e-4 and naive_group.heads == fast_group.heads
    print(f"scores agree to 1e-4: {agree}")
    if not agree:
        raise SystemExit("the fast engine and the naive loop disagree")
    print(result_line("ships_scan_speedup", naive_scan_s / fast_scan_s, "ratio", ">=", 2))
    print(result_line("sahara_speedup", naive_sahara_s / fast_sahara_s, "ratio", ">=", 2))


if __name__ == "__main__":
    main()
