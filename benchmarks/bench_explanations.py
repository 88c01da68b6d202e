"""Token attributions: the suite's batched integrated gradients against Captum called the plain way, and what a
whole explanation costs per prompt in forward passes.

1. Integrated gradients on P prompts of the shipped sentiment and agreement tasks (logit difference of the
   answer and its contrast, pad-token baseline, Gauss–Legendre). The peer is how a Captum user writes it: a
   forward function that runs the model with a hook putting the inputs in place of the token embeddings and
   reads the full logits, and ``IntegratedGradients(f).attribute(x, baselines, n_steps)`` once per prompt.
   Ours (:func:`interp.attribution.token_attribution.token_attributions`) pads the prompts into one batch, runs
   Captum's steps for all of them at once and reads only the two logits it needs. The token scores must
   agree to 1e-4 (relative to the largest score), then the times are compared.
2. The whole explanation (all ten methods, then agreement and faithfulness) per prompt, divided by the time
   of one bare forward pass of one prompt (the median over the prompts).

    python benchmarks/bench_explanations.py [--quick] [--model gemma-3-270m] [--steps 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _common import add_backend_argument, use_backend  # noqa: E402

import interp  # noqa: E402
from interp.attribution.explanation_agreement import explanation_agreement  # noqa: E402
from interp.attribution.explanation_faithfulness import explanation_faithfulness  # noqa: E402
from interp.attribution.token_attribution import METHODS, token_attributions  # noqa: E402
from interp.explanation_tasks import explanation_examples  # noqa: E402


def captum_plain(lm, prompt: str, target: tuple[str, str], steps: int) -> np.ndarray:
    """Captum's IntegratedGradients called the plain way on one prompt: per-token signed sums."""
    from captum.attr import IntegratedGradients

    batch = lm.tokenize([prompt])
    a = lm.encode(target[0], prepend_bos=False)[0]
    b = lm.encode(target[1], prepend_bos=False)[0]
    with torch.inference_mode():
        embedding = lm.capture(batch, [lm.embedding_hook])[lm.embedding_hook]
        pad_row = lm.pad([[lm.pad_token_id] * len(batch.tokens[0])])
        pad = lm.capture(pad_row, [lm.embedding_hook])[lm.embedding_hook]
    embedding, pad = embedding.clone(), pad.clone()
    baseline = embedding.clone()
    baseline[:, 1:] = pad[:, 1:]  # BOS kept, every other token replaced by the pad token

    def forward(x: torch.Tensor) -> torch.Tensor:
        tokens = batch.tokens.expand(len(x), -1)
        mask = batch.attention_mask.expand(len(x), -1)
        rows = interp.models.TokenBatch(tokens, mask, mask.sum(-1))
        logits = lm.forward(rows, fwd_hooks=[(lm.embedding_hook, lambda act, hook: x)])[:, -1]
        return logits[:, a] - logits[:, b]

    with torch.enable_grad():
        attribution = IntegratedGradients(forward).attribute(embedding, baselines=baseline, n_steps=steps,
                                                             method="gausslegendre")
    return attribution.sum(-1)[0].detach().double().numpy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 prompts, 1 round (under 3 minutes)")
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    add_backend_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    use_backend(args)
    lm = interp.load_model(args.model)
    n_prompts, rounds = (4, 1) if args.quick else (16, 3)
    examples = []
    for task in ("agreement", "sentiment"):
        examples += explanation_examples(lm, task, max_examples=n_prompts // 2)[0]
    prompts = [str(e.prompt) for e in examples]
    targets = [e.target for e in examples]

    ours_times, peer_times = [], []
    ours = peer = None
    for _ in range(rounds):
        start = time.perf_counter()
        ours = token_attributions(lm, prompts, targets, methods=["integrated_gradients"], steps=args.steps)
        ours_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        peer = [captum_plain(lm, p, lm.token_strings(list(t)), args.steps) for p, t in zip(prompts, targets, strict=True)]
        peer_times.append(time.perf_counter() - start)
    assert ours is not None and peer is not None
    gap = 0.0
    for i, row in enumerate(peer):
        mine = ours.scores["integrated_gradients"][i][1:]
        gap = max(gap, float(np.abs(mine - row[1:]).max() / max(1e-9, np.abs(row[1:]).max())))
    if gap > 1e-4:
        print(f"MISMATCH: batched integrated gradients differ from Captum's plain call by {gap:.2e} (relative)",
              file=sys.stderr)
        return 1

    bare = []
    with torch.inference_mode():
        for prompt in prompts:
            batch = lm.tokenize([prompt])
            lm.forward(batch)
            start = time.perf_counter()
            lm.forward(batch)
            bare.append(time.perf_counter() - start)
    start = time.perf_counter()
    explained = token_attributions(lm, prompts, targets, methods=METHODS, steps=args.steps, samples=args.samples)
    explanation_agreement(explained)
    explanation_faithfulness(lm, explained)
    whole = (time.perf_counter() - start) / len(prompts)
    t_bare = statistics.median(bare)
    t_ours, t_peer = statistics.median(ours_times), statistics.median(peer_times)
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in explained.seconds.items())
    print(f"model {args.model} ({lm.backend}), {len(prompts)} prompts ({len(examples[0].prompt)}+ chars), "
          f"{args.steps} Gauss–Legendre steps, Kernel SHAP {args.samples} samples, {args.threads} threads, "
          f"{rounds} round(s); max relative |difference| {gap:.1e}")
    print("| what | seconds | per prompt |\n| --- | --- | --- |")
    print(f"| Captum IntegratedGradients, one call per prompt (peer) | {t_peer:.2f} | {t_peer / len(prompts):.3f} |")
    print(f"| interp token_attributions, integrated_gradients, batched | {t_ours:.2f} | {t_ours / len(prompts):.3f} |")
    print(f"| bare forward pass of one prompt | {t_bare:.3f} | {t_bare:.3f} |")
    print(f"| whole explanation: 10 methods + agreement + faithfulness | {whole * len(prompts):.1f} | {whole:.2f} |")
    print(f"stages of the whole explanation: {stages}")
    print(f"RESULT ig_speedup_vs_captum {t_peer / t_ours:.2f} ratio target >= 1")
    print(f"RESULT explanation_cost_per_prompt {whole / t_bare:.1f} forwards target <= 80")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
