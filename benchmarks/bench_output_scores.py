"""Output scores of steering directions: the suite's batched pass against a plain hooked forward per direction.

For each of N directions (random unit vectors and the dense French mean difference) over P English prompts,
the output score is the next-token probability mass on French tokens with the direction added at every
position of ``blocks.L.hook_resid_post``. The peer is the plain way a TransformerLens user would write it: one
full forward pass with a hook per direction (``lm.forward(batch, fwd_hooks=...)``). Ours
(:func:`interp.steering.output_scores`) runs the blocks before L once, resumes from the cached residual with the
directions as a batch dimension, and unembeds only the last position. Both run in this process on the same
model; they must agree to 1e-4, then the table and the RESULT lines are printed.

    python benchmarks/bench_output_scores.py [--quick] [--model gemma-3-270m] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _common import add_backend_argument, use_backend  # noqa: E402

import interp  # noqa: E402
from interp.attribution.language_steering import mean_difference_directions  # noqa: E402
from interp.corpus import parallel_sentences, steering_prompts  # noqa: E402
from interp.steering import language_token_sets, output_scores, residual_norm  # noqa: E402


def naive(lm, layer: int, directions: torch.Tensor, token_set: torch.Tensor, prompts: list[str], size: float) -> torch.Tensor:
    """One full forward pass per direction, with a hook; the mass at each prompt's last position."""
    batch = lm.tokenize(prompts)
    last = batch.lengths - 1
    out = []
    with torch.inference_mode():
        for direction in directions:
            unit = direction / direction.norm()

            def hook(act, hook, unit=unit):
                return act + size * unit.to(act)

            logits = lm.forward(batch, fwd_hooks=[(f"blocks.{layer}.hook_resid_post", hook)])
            probs = torch.softmax(logits[torch.arange(len(prompts)), last].float(), -1)
            out.append(float(probs[:, token_set].sum(-1).mean()))
    return torch.tensor(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="16 directions, 1 round (under 3 minutes)")
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--layer", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    add_backend_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_directions, rounds = (16, 1) if args.quick else (64, 3)
    use_backend(args)
    lm = interp.load_model(args.model)
    sentences = parallel_sentences("discovery")
    sets = language_token_sets(lm, sentences)
    prompts = steering_prompts()[:8]
    norm = residual_norm(lm, args.layer, [s for v in sentences.values() for s in v])
    french = mean_difference_directions(lm, [args.layer], ["fr"])[("fr", args.layer)]
    directions = torch.cat([french[None], torch.randn(n_directions - 1, lm.d_model,
                                                      generator=torch.Generator().manual_seed(0))])
    strength = 0.1
    ours_times, peer_times = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        ours = output_scores(lm, args.layer, directions, sets["fr"], prompts, strength=strength, norm=norm)
        ours_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        peer = naive(lm, args.layer, directions, sets["fr"], prompts, strength * norm)
        peer_times.append(time.perf_counter() - start)
    gap = float((ours.mass - peer).abs().max())
    if gap > 1e-4:
        print(f"MISMATCH: output scores differ from the hooked forward by {gap:.2e}", file=sys.stderr)
        return 1
    t_ours, t_peer = statistics.median(ours_times), statistics.median(peer_times)
    print(f"model {args.model} ({lm.backend}), layer {args.layer}, {n_directions} directions x {len(prompts)} prompts, "
          f"{args.threads} threads, {rounds} round(s); max |difference| {gap:.1e}")
    print(f"French direction: mass {float(ours.mass[0]):.3f} (unsteered {ours.base_mass:.3f}); random directions: "
          f"mean mass {float(ours.mass[1:].mean()):.3f}")
    print("| method | seconds | per direction |\n| --- | --- | --- |")
    print(f"| hooked forward per direction (peer) | {t_peer:.2f} | {t_peer / n_directions:.3f} |")
    print(f"| interp.steering.output_scores | {t_ours:.2f} | {t_ours / n_directions:.3f} |")
    print(f"RESULT output_scores_speedup {t_peer / t_ours:.2f} ratio target >= 3")
    print(f"RESULT output_scores_per_direction {t_ours / n_directions:.3f} s target <= 0.5")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
