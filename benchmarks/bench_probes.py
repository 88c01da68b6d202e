"""Probe overhead and memory: the sinks probe vs a bare forward pass vs TransformerLens run_with_cache.

On the GPT-2-small-shaped test model (12 layers x 12 heads, d_model 768): time the attention-sinks probe
(patterns of every layer + residual streams, reduced on the fly) against a bare forward pass over the same
batches (no hooks, no unembedding — the cheapest pass through all blocks), and against the naive way
(``run_with_cache`` of the same hooks, then the same reduction from the cache). Checks that the probe and
the naive way agree. Peak memory is measured in fresh processes for a small and a large prompt count.

    python benchmarks/bench_probes.py            # 256 prompts for speed, 64 -> 1024 prompts for memory
    python benchmarks/bench_probes.py --quick    # 32 prompts for speed, 16 -> 64 prompts for memory
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import (  # noqa: E402
    add_backend_argument,
    peak_rss_in_fresh_process,
    print_table,
    result_line,
    timed,
    use_backend,
)

SEQ = 128
MODEL = "tiny-gpt2-12l"


def token_rows(n_prompts: int, seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    body = torch.randint(3, 50257, (n_prompts, SEQ - 1), generator=generator)
    return [[0] + row.tolist() for row in body]  # 0 is <bos>


def sinks_probe(n_prompts: int, batch_size: int) -> None:
    import interp
    from interp.attribution.sinks import attention_sinks

    torch.set_num_threads(2)
    lm = interp.load_model(MODEL)
    attention_sinks(lm, token_rows(n_prompts), max_tokens=SEQ, batch_size=batch_size, progress=False)


def naive_cache(n_prompts: int, batch_size: int) -> None:
    import interp

    torch.set_num_threads(2)
    lm = interp.load_model(MODEL)
    rows = token_rows(n_prompts)
    _naive(lm, rows, batch_size, keep=True)


def _naive(lm, rows, batch_size, keep: bool):
    """The usual notebook way: run_with_cache every batch (keeping the caches), reduce afterwards."""
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(lm.n_layers)] + [
        f"blocks.{layer}.hook_resid_post" for layer in range(lm.n_layers)]
    caches = []
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            tokens = torch.tensor(rows[start : start + batch_size])
            _, cache = lm.native_model().run_with_cache(tokens, names_filter=names, return_type=None)
            caches.append(cache)
    bos = torch.zeros(lm.n_layers, lm.n_heads, dtype=torch.float64)
    for cache in caches:
        for layer in range(lm.n_layers):
            bos[layer] += cache[f"blocks.{layer}.attn.hook_pattern"][:, :, :, 0].double().mean(dim=2).sum(dim=0)
    return bos / len(rows)


def speed(n_prompts: int, batch_size: int, repeats: int) -> float:
    """Time bare forward, the probe and run_with_cache on the same batches; returns probe / bare."""
    import interp
    from interp.attribution.sinks import attention_sinks

    lm = interp.load_model(MODEL)
    rows = token_rows(n_prompts)
    batches = [lm.pad(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]

    def bare():
        # The cheapest pass through every block on this backend: no hooks, no unembedding (the protocol's
        # forward with return_type=None ends after the final norm on both backends).
        with torch.inference_mode():
            for batch in batches:
                lm.forward(batch, return_type=None)

    def probe():
        return attention_sinks(lm, rows, max_tokens=SEQ, batch_size=batch_size, progress=False)

    bare()  # warm-up of both: first calls pay for lazy imports and allocator growth
    scores = probe()
    # Interleaved rounds, ratio per round: load that comes and goes hits both sides of each ratio alike.
    bare_times, probe_times = [], []
    for _ in range(repeats):
        t_b, _ = timed(bare, repeats=1)
        t_p, scores = timed(probe, repeats=1)
        bare_times.append(t_b)
        probe_times.append(t_p)
    t_bare, t_probe = statistics.median(bare_times), statistics.median(probe_times)
    ratio = statistics.median(p / b for p, b in zip(probe_times, bare_times, strict=True))
    t_naive, naive_bos = timed(lambda: _naive(lm, rows, batch_size, keep=True), repeats=1)
    max_diff = float((scores.bos_attention.double() - naive_bos).abs().max())
    assert max_diff < 1e-5, f"probe and run_with_cache disagree by {max_diff}"

    print(f"model {MODEL} ({lm.backend} backend), {n_prompts} prompts x {SEQ} tokens, batch {batch_size}, "
          "torch threads 2")
    print_table(
        [
            ("bare forward (no hooks, no unembed)", f"{t_bare:.2f}", "1.00"),
            ("sinks probe (streaming)", f"{t_probe:.2f}", f"{t_probe / t_bare:.2f}"),
            ("run_with_cache + reduce", f"{t_naive:.2f}", f"{t_naive / t_bare:.2f}"),
        ],
        ("pass", "seconds", "x bare"),
    )
    print(f"agreement probe vs run_with_cache (BOS attention): max |diff| = {max_diff:.2e}")
    print("per-round probe / bare: " + ", ".join(f"{p / b:.3f}" for p, b in zip(probe_times, bare_times, strict=True)))
    sys.stdout.flush()  # the memory runs take minutes: show the speed table first
    return ratio


def memory(small: int, large: int, batch_size: int) -> float:
    """Peak RSS of the probe (small, large prompt counts) and run_with_cache (small, <= 256) in fresh processes.

    Returns the probe's growth in percent.
    """
    naive_large = min(large, 256)  # keeping every cache of 1024 prompts would need ~15 GiB; 256 shows the trend
    mem = {}
    for label, target, sizes in (("probe", sinks_probe, (small, large)),
                                 ("run_with_cache", naive_cache, (small, naive_large))):
        for n in sizes:
            mem[(label, n)] = peak_rss_in_fresh_process(target, n, batch_size)[1]
    growth = 100.0 * (mem[("probe", large)] - mem[("probe", small)]) / mem[("probe", small)]
    naive_growth = 100.0 * (mem[("run_with_cache", naive_large)] - mem[("run_with_cache", small)]) / mem[
        ("run_with_cache", small)]
    print_table(
        [(label, n, f"{rss / 2**30:.2f}") for (label, n), rss in sorted(mem.items())],
        ("peak memory", "prompts", "GiB (process peak RSS, VmHWM)"),
    )
    print(f"probe memory growth {small} -> {large} prompts: {growth:.1f}%; "
          f"run_with_cache {small} -> {naive_large}: {naive_growth:.1f}%")
    return growth


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["speed", "memory"], default=None, help="run one half of the benchmark")
    add_backend_argument(parser)
    args = parser.parse_args()
    use_backend(args)
    torch.set_num_threads(2)
    batch_size = 8
    overhead = growth = None
    if args.only in (None, "speed"):
        overhead = speed(32 if args.quick else 256, batch_size, repeats=3)
    if args.only in (None, "memory"):
        small, large = (16, 64) if args.quick else (64, 1024)
        growth = memory(small, large, batch_size)
    if overhead is not None:
        print(result_line("probe_overhead", overhead, "ratio", "<=", 1.25))
    if growth is not None:
        print(result_line("probe_memory_growth", growth, "%", "<", 10))


if __name__ == "__main__":
    main()
