"""Benchmark: all pairwise composition scores, ours vs TransformerLens's ``all_composition_scores``.

Ours computes, per model, the OV and QK SVDs of every head from their factors plus, for each mode, the
full composition scores, the per-component (rank-1) scores and the random-matrix baseline. The peer is
``model.all_composition_scores(mode)`` (full scores only). Both run in this process under
``torch.no_grad()``, with raw matrices (``effective=False``) so that the numbers are comparable; the
benchmark checks they agree to 1e-5.

``all_composition_scores`` materialises ``[L,H,L,H,d_head,d_model]`` broadcast operands (≈ 8-9 GB for
both models; the call was OOM-killed on the 24 GB shared development machine), so by default the peer
runs TransformerLens's identical arithmetic one writer layer at a time (``--peer full`` runs the call
itself). Chunking only lowers the peer's memory; its time is the same arithmetic.

Peak memory is the largest resident set size seen by a 5 ms sampler thread during each call, minus the
resident set size just before it (the model's own memory is already resident).

    python benchmarks/bench_channels.py            # Q, K and V on tiny-gpt2-12l and gemma-3-270m
    python benchmarks/bench_channels.py --quick    # K only (under 3 minutes on 2 cores)

Ends with ``RESULT composition_speedup <TL time / ours> ratio target >= 1`` and
``RESULT composition_extra_memory <GiB> GiB target <= 1`` (worst case over the models).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _common import add_backend_argument, use_backend  # noqa: E402

import interp  # noqa: E402
from interp.attribution.channels import composition_scores, head_svd  # noqa: E402


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measured(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """Run ``fn``; return (result, seconds, peak extra GiB over the RSS before the call)."""
    gc.collect()
    before = rss_bytes()
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        with torch.no_grad():
            result = fn()
    finally:
        elapsed = time.perf_counter() - started
        stop.set()
        sampler.join()
    peak[0] = max(peak[0], rss_bytes())
    return result, elapsed, (peak[0] - before) / 2**30


def ours(lm: interp.LoadedModel, modes: str) -> dict[str, torch.Tensor]:
    ov = head_svd(lm, "OV", effective=False)
    qk = head_svd(lm, "QK", effective=False)
    out = {}
    for mode in modes:
        scores = composition_scores(lm, mode, effective=False, ov=ov, qk=qk, baseline_samples=100)
        out[mode] = scores.scores
        assert scores.component_scores.shape[2] == ov.S.shape[-1]  # per-component scores included
    return out


def transformer_lens(lm: interp.LoadedModel, modes: str) -> dict[str, torch.Tensor]:
    """The peer as shipped: ``model.all_composition_scores(mode)``."""
    out = {}
    for mode in modes:
        out[mode] = lm.native_model().all_composition_scores(mode).detach().clone()
        gc.collect()
    return out


def transformer_lens_chunked(lm: interp.LoadedModel, modes: str) -> dict[str, torch.Tensor]:
    """TransformerLens's own arithmetic (``collapse_l``/``collapse_r`` of ``model.OV``/``model.QK``, the
    batched product and its norms, the same mask), one writer layer at a time so that the
    ``[L,H,L,H,d_head,d_head]`` product and its broadcast operands (≈ 8-9 GB here) never exist at once."""
    model = lm.native_model()
    n_layers = model.cfg.n_layers
    out = {}
    for mode in modes:
        left = model.OV
        right = {"Q": model.QK, "K": model.QK.T, "V": model.OV}[mode]
        new_left, new_right = left.collapse_l(), right.collapse_r()  # [L,H,dh,d], [L,H,d,dh]
        l_norms, r_norms = new_left.norm(dim=[-2, -1]), new_right.norm(dim=[-2, -1])
        scores = torch.zeros(n_layers, model.cfg.n_heads, n_layers, model.cfg.n_heads)
        for layer in range(n_layers):
            product = new_left[layer][:, None, None] @ new_right[None]  # [H, L, H, dh, dh]
            scores[layer] = product.norm(dim=[-2, -1]) / r_norms[None] / l_norms[layer][:, None, None]
        mask = torch.arange(n_layers)[:, None, None, None] < torch.arange(n_layers)[None, None, :, None]
        out[mode] = torch.where(mask, scores, torch.zeros_like(scores))
        gc.collect()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="K mode only")
    parser.add_argument("--models", nargs="+", default=["tiny-gpt2-12l", "gemma-3-270m"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peer", choices=["chunked", "full"], default="chunked",
                        help="full = model.all_composition_scores itself (needs ~9 GB free on these models)")
    add_backend_argument(parser)
    args = parser.parse_args()
    use_backend(args)
    torch.set_num_threads(args.threads)
    modes = "K" if args.quick else "QKV"
    rows = []
    for name in args.models:
        lm = interp.load_model(name)
        n_heads = lm.n_layers * lm.n_heads
        ours(lm, "K")  # warm-up (first-call allocations, thread pools)
        our_scores, our_time, our_mem = measured(lambda lm=lm: ours(lm, modes))
        peer = transformer_lens if args.peer == "full" else transformer_lens_chunked
        tl_scores, tl_time, tl_mem = measured(lambda lm=lm, peer=peer: peer(lm, modes))
        error = max(float((our_scores[m] - tl_scores[m]).abs().max()) for m in modes)
        assert error < 1e-5, f"{name}: ours and TransformerLens differ by {error:.2e}"
        rows.append((name, n_heads, modes, tl_time, our_time, tl_mem, our_mem, error))
        del lm, our_scores, tl_scores
        gc.collect()
    header = f"{'model':<16}{'heads':>6}{'modes':>6}{'TL s':>9}{'ours s':>9}{'speedup':>9}{'TL peak GiB':>13}{'ours peak GiB':>15}{'max |diff|':>12}"
    print(header)
    print("-" * len(header))
    for name, n_heads, mode_str, tl_time, our_time, tl_mem, our_mem, error in rows:
        print(f"{name:<16}{n_heads:>6}{mode_str:>6}{tl_time:>9.2f}{our_time:>9.2f}{tl_time / our_time:>9.2f}"
              f"{tl_mem:>13.3f}{our_mem:>15.3f}{error:>12.1e}")
    print("ours = OV+QK SVDs of every head, full and per-component scores and a 100-sample random baseline per mode;")
    print(f"TL = {'model.all_composition_scores(mode)' if args.peer == 'full' else 'all_composition_scores arithmetic, chunked by writer layer'}"
          ", full scores only. Peak = max RSS during the call minus RSS before.")
    speedup = min(tl_time / our_time for _, _, _, tl_time, our_time, _, _, _ in rows)
    extra = max(our_mem for *_, our_mem, _ in rows)
    print(f"RESULT composition_speedup {speedup:.2f} ratio target >= 1")
    print(f"RESULT composition_extra_memory {extra:.3f} GiB target <= 1")


if __name__ == "__main__":
    main()
