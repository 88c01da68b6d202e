"""Cost of the attention-sparsity analysis against the attention-sinks analysis on the same prompts.

On gemma-3-270m, 64 prompts of 256 tokens (three consecutive shipped paragraphs each, cut to 256 tokens):
time ``interp.attribution.sinks.attention_sinks(max_tokens=256)`` and
``interp.attribution.sparsity.attention_sparsity`` (defaults: both reported ε, all four eviction scores at four
budgets, truncation certificate, entropy, effective rank on the first 2 prompts), after a one-prompt warm-up of each, in one process, alternating them so that load from
other processes hits both alike. Both make one streaming pass over every layer; the sparsity pass adds its
per-layer reductions. Checks that the two agree on the quantity they share (Gu et al.'s α₀ per head).

    python benchmarks/bench_sparsity.py            # 64 prompts x 256 tokens, 3 rounds
    python benchmarks/bench_sparsity.py --quick    # 8 prompts x 256 tokens, 3 rounds
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import add_backend_argument, print_table, result_line, use_backend  # noqa: E402

MODEL = "gemma-3-270m"
SEQ = 256


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--prompts", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    add_backend_argument(parser)
    args = parser.parse_args()
    use_backend(args)
    import interp
    from interp.attribution.sinks import attention_sinks
    from interp.attribution.sparsity import attention_sparsity, long_prompts
    from interp.data import default_prompts

    torch.set_num_threads(2)
    n_prompts = args.prompts or (8 if args.quick else 64)
    rounds = args.rounds or 3  # median of 3 alternated rounds (one round of 8 prompts varies by ±20%)
    lm = interp.load_model(MODEL)
    prompts = long_prompts(default_prompts(), n_prompts, per_prompt=3)
    lengths = [min(len(lm.encode(p)), SEQ) for p in prompts]
    assert min(lengths) == SEQ, f"a prompt is shorter than {SEQ} tokens: {min(lengths)}"

    def sinks():
        return attention_sinks(lm, prompts, max_tokens=SEQ, progress=False)

    def sparsity():
        return attention_sparsity(lm, prompts, max_tokens=SEQ, progress=False)

    # Warm-up on one prompt: the first pass pays one-time costs (allocator, kernels) that must not land on
    # whichever analysis runs first.
    attention_sinks(lm, prompts[:1], max_tokens=SEQ, progress=False)
    attention_sparsity(lm, prompts[:1], max_tokens=SEQ, progress=False)
    sinks_times, sparsity_times = [], []
    sink_result = sparsity_result = None
    for _ in range(rounds):
        for fn, times in ((sinks, sinks_times), (sparsity, sparsity_times)):
            start = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - start)
            if fn is sinks:
                sink_result = out
            else:
                sparsity_result = out
    assert sink_result is not None and sparsity_result is not None
    max_diff = float((sink_result.bos_attention - sparsity_result.bos_attention).abs().max())
    assert max_diff < 1e-5, f"sinks and sparsity disagree on α₀ by {max_diff}"
    t_sinks, t_sparsity = statistics.median(sinks_times), statistics.median(sparsity_times)
    ratio = t_sparsity / t_sinks
    print(f"model {MODEL}, {n_prompts} prompts x {SEQ} tokens, batch 8, torch threads 2, {rounds} round(s)")
    print_table(
        [("attention_sinks (max_tokens=256)", f"{t_sinks:.1f}", "1.00",
          " ".join(f"{t:.1f}" for t in sinks_times)),
         ("attention_sparsity (defaults)", f"{t_sparsity:.1f}", f"{ratio:.2f}",
          " ".join(f"{t:.1f}" for t in sparsity_times))],
        ("analysis", "seconds (median)", "x sinks", "each round"),
    )
    print(f"agreement on α₀ (attention to the first token) per head: max |diff| = {max_diff:.2e}")
    for eps in sparsity_result.reported_epsilons:
        mean_ratio, total_ratio = sparsity_result.mean_keys_saved(eps)
        print(f"keys saved at ε={eps}: mean n/k {mean_ratio:.2f}, Σn/Σk {total_ratio:.2f}")
    for budget in (0.25, 0.5):
        ratios = ", ".join(f"{s} {sparsity_result.eviction_ratio(s, budget):.3f}" for s in ("value", "key", "joint"))
        print(f"eviction error vs accumulated attention at budget {budget}: {ratios}")
    print(result_line("sparsity_vs_sinks_cost", ratio, "ratio", "<=", 1.5))


if __name__ == "__main__":
    main()
