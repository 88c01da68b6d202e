"""Benchmark: the head atlas's cost against the attention-sinks analysis on the same prompts (gemma-3-270m).

* **detectors' pass**: :func:`interp.attribution.head_detectors.attention_detectors` — the one streaming pass
  over the prompts (previous-token, duplicate-token and induction scores with TransformerLens's definitions,
  α₀, current-token attention, attention distance and entropy, with their nulls, and the example patterns),
  timed against ``interp.run("attention-sinks")`` on the same prompts (the shipped default set, cut to the
  same 64 tokens), alternating the two so that load from other processes hits both alike; medians.
* **whole atlas**: ``interp.atlas`` with its defaults — the detectors' pass, the repeated-random-token pass,
  the OV copying and successor scores with their shuffled nulls, and the joins it computes itself (ablation
  importance on the induction task, composition partners; Ships only with a chat template, which gemma-3-270m
  lacks) — with its per-part times.
* **page size**: the report ``result.to_html`` writes (the atlas section of :mod:`interp.viewer`: grid,
  cards, token-level viewer with the example patterns).

Checks that the atlas's α₀ equals the sinks analysis's (the quantity both compute).

    python benchmarks/bench_atlas.py            # 64 prompts, 3 rounds of sinks vs detectors, atlas twice
    python benchmarks/bench_atlas.py --quick    # 64 prompts, 1 round, atlas once (< 3 min on a quiet machine)

Ends with ``RESULT atlas_detectors_vs_sinks_cost <x> ratio target <= 1.5``,
``RESULT atlas_total_vs_sinks_cost <x> ratio target <= 4`` and ``RESULT atlas_page_mb <x> MB target <= 15``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spin-waiting skews 2-thread timings
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _common import add_backend_argument, print_table, result_line, use_backend  # noqa: E402

MODEL = "gemma-3-270m"
MAX_TOKENS = 64


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 round, the atlas once (< 3 min)")
    parser.add_argument("--prompts", type=int, default=64, help="prompts from the shipped default set")
    parser.add_argument("--rounds", type=int, default=None)
    add_backend_argument(parser)
    args = parser.parse_args()
    use_backend(args)
    import interp
    from interp.attribution.head_detectors import attention_detectors
    from interp.data import default_prompts

    torch.set_num_threads(min(2, torch.get_num_threads()))
    rounds = args.rounds or (1 if args.quick else 3)
    atlas_rounds = 1 if args.quick else 2
    lm = interp.load_model(MODEL)
    prompts = default_prompts()[: args.prompts]
    print(f"{MODEL} ({lm.backend}): {len(prompts)} prompts cut to {MAX_TOKENS} tokens, "
          f"{lm.n_layers} layers x {lm.n_heads} heads, {torch.get_num_threads()} threads", flush=True)

    def sinks():
        return interp.run("attention-sinks", lm, prompts, progress=False, max_tokens=MAX_TOKENS)

    def detectors():
        return attention_detectors(lm, prompts, max_tokens=MAX_TOKENS, exclude_bos=True, n_examples=4,
                                   example_tokens=48, progress=False)

    # warm-up: first-call costs (lazy imports, the token pool, caches) out of the timing
    interp.run("attention-sinks", lm, prompts[:2], progress=False, max_tokens=MAX_TOKENS)
    attention_detectors(lm, prompts[:2], max_tokens=MAX_TOKENS, progress=False)
    sinks_s, detectors_s = [], []
    sink_result = detector_result = None
    for _ in range(rounds):
        started = time.perf_counter()
        sink_result = sinks()
        sinks_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        detector_result = detectors()
        detectors_s.append(time.perf_counter() - started)
    assert sink_result is not None and detector_result is not None
    sinks_median, detectors_median = statistics.median(sinks_s), statistics.median(detectors_s)

    atlas_s, result = [], None
    for _ in range(atlas_rounds):
        started = time.perf_counter()
        result = interp.atlas(lm, prompts, progress=False, max_tokens=MAX_TOKENS)
        atlas_s.append(time.perf_counter() - started)
    assert result is not None
    atlas_median = statistics.median(atlas_s)
    timings = result.metadata["timings"]

    alpha_sinks = sink_result.metric("bos_attention").sort_values(["layer", "head"])["value"].to_numpy()
    alpha_atlas = torch.tensor(result.metadata["atlas"]["scores"]["bos_attention"]).flatten().numpy()
    gap = float(abs(alpha_sinks - alpha_atlas).max())

    with tempfile.TemporaryDirectory() as folder:
        page = result.to_html(Path(folder) / "head-atlas.html")
        page_mb = page.stat().st_size / 1e6
        standalone_mb = None
        try:
            from interp.viewer import render_atlas_page

            standalone_mb = len(render_atlas_page(result.metadata["atlas"]).encode("utf-8")) / 1e6
        except ImportError:
            pass

    print(f"\nsinks vs detectors' pass ({rounds} round(s), alternating; medians)")
    print_table([("attention-sinks analysis", f"{sinks_median:.2f}", ", ".join(f"{s:.1f}" for s in sinks_s)),
                 ("atlas detectors' pass", f"{detectors_median:.2f}", ", ".join(f"{s:.1f}" for s in detectors_s)),
                 ("whole atlas (interp.atlas)", f"{atlas_median:.2f}", ", ".join(f"{s:.1f}" for s in atlas_s))],
                ("what", "median s", "rounds s"))
    print("\nwhole atlas, last round, by part (s): "
          + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    counts = result.metadata["summary"]["role_counts"]
    print("heads per role: " + ", ".join(f"{k} {v}" for k, v in counts.items())
          + f"; no role: {result.metadata['summary']['unexplained_share']:.1%}")
    print(f"α₀ atlas vs attention-sinks: max |difference| {gap:.2e} (tolerance 1e-5)")
    if standalone_mb is not None:
        print(f"page: report {page_mb:.2f} MB (standalone render_atlas_page {standalone_mb:.2f} MB)")
    if gap > 1e-5:
        print("DISAGREEMENT between the atlas and the sinks analysis: the timings above do not count", file=sys.stderr)
        return 1
    print(result_line("atlas_detectors_vs_sinks_cost", detectors_median / sinks_median, "ratio", "<=", 1.5))
    print(result_line("atlas_total_vs_sinks_cost", atlas_median / sinks_median, "ratio", "<=", 4))
    print(result_line("atlas_page_mb", page_mb, "MB", "<=", 15))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
