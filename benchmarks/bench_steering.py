"""Generation speed: the suite's (steered) generation against Hugging Face ``generate`` and TransformerLens.

Runs in one process on the same model (``gemma-3-270m`` by default), batch and length, greedy:

* Hugging Face ``model.generate`` (the converted plain checkpoint, left padding, KV cache) — the peer;
* TransformerLens ``HookedTransformer.generate`` (the naive way; only at batch 1 and few tokens: it is slow);
* ``interp.generation.generate`` unsteered, and steered (a mean-difference vector added at all positions of
  ``blocks.6.hook_resid_post``, the edit ``interp.steer_language(method="mean-diff")`` makes).

It checks that ours equals a naive greedy loop with the same hooks on a short run, reports how many greedy
tokens agree with Hugging Face (the suite's model has TransformerLens's folded weights, so small numeric
differences may flip near-ties), prints a table, and ends with the two target lines.

    python benchmarks/bench_steering.py [--quick] [--model gemma-3-270m] [--threads 2]
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
from interp.attribution.language_steering import SteeringSpec, mean_difference_directions, steering_hooks  # noqa: E402
from interp.corpus import steering_prompts  # noqa: E402
from interp.generation import GenerationState, generate  # noqa: E402
from interp.models import cache_dir  # noqa: E402


def hf_generate(hf, tokenizer, rows: list[list[int]], new_tokens: int) -> tuple[list[list[int]], float]:
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    started = time.perf_counter()
    with torch.inference_mode():
        out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                          do_sample=False, pad_token_id=pad)
    seconds = time.perf_counter() - started
    return out[:, width:].tolist(), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs (under 3 minutes)")
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None)
    add_backend_argument(parser)
    args = parser.parse_args()
    use_backend(args)
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM

    lm = interp.load_model(args.model)
    hf = AutoModelForCausalLM.from_pretrained(str(cache_dir() / "models" / args.model), dtype=torch.float32).eval()
    prompts = steering_prompts()
    layer = 6 if lm.n_layers > 6 else lm.n_layers // 2
    vector = mean_difference_directions(lm, [layer], ["fr"])[("fr", layer)]
    spec = SteeringSpec(layer=layer, direction=vector, coefficient=1.0, positions="all")
    configs = [(1, 16), (20, 16)] if args.quick else [(1, 32), (20, 32)]
    repeats = args.repeats or (1 if args.quick else 2)

    # Exactness: batched KV-cached steered generation = naive full-recompute greedy with the same edit.
    check_prompts = prompts[:2]
    state = GenerationState()
    ours = generate(lm, check_prompts, 6, fwd_hooks=steering_hooks([spec] * 2, state), state=state, stop_at_eos=False)
    for prompt, ids in zip(check_prompts, ours.token_ids, strict=True):
        seq = lm.encode(prompt)
        naive = []
        with torch.inference_mode():
            for _ in range(6):
                logits = lm.forward(lm.pad([seq]), fwd_hooks=[(f"blocks.{layer}.hook_resid_post",
                                                                lambda a, hook: a + vector.to(a.dtype))])
                naive.append(int(logits[0, -1].argmax()))
                seq.append(naive[-1])
        assert ids == naive, f"steered generation differs from the naive loop: {ids} vs {naive}"
    print("check: steered batched KV-cached generation equals naive greedy recompute (2 prompts x 6 tokens)")

    # Warm-up (weight re-layout cache, allocator).
    generate(lm, prompts[:2], 2, stop_at_eos=False)
    hf_generate(hf, lm.tokenizer, [lm.encode(p) for p in prompts[:2]], 2)

    rows_out = []
    ratios_hf: list[float] = []
    overheads: list[float] = []
    for batch, new_tokens in configs:
        chosen = (prompts * ((batch // len(prompts)) + 1))[:batch]
        rows = [lm.encode(p) for p in chosen]
        times = {"hf": [], "ours": [], "steered": []}
        agree = None
        for _ in range(repeats):
            # interleave so that machine load hits every contender alike
            hf_ids, hf_s = hf_generate(hf, lm.tokenizer, rows, new_tokens)
            times["hf"].append(batch * new_tokens / hf_s)
            plain = generate(lm, rows, new_tokens, batch_size=batch, stop_at_eos=False)
            times["ours"].append(plain.tokens_per_second)
            st = GenerationState()
            steered = generate(lm, rows, new_tokens, batch_size=batch, stop_at_eos=False,
                               fwd_hooks=steering_hooks([spec] * batch, st), state=st)
            times["steered"].append(steered.tokens_per_second)
            matches = sum(a == b for x, y in zip(hf_ids, plain.token_ids, strict=True) for a, b in zip(x, y, strict=False))
            agree = matches / (batch * new_tokens)
        med = {k: statistics.median(v) for k, v in times.items()}
        ratios_hf.append(med["steered"] / med["hf"])
        overheads.append(med["ours"] / med["steered"])
        rows_out.append((batch, new_tokens, med["hf"], med["ours"], med["steered"], agree))

    tl_rate = float("nan")
    if True:
        tokens = torch.tensor([lm.encode(prompts[0])])
        n_tl = 4 if args.quick else 8
        started = time.perf_counter()
        with torch.inference_mode():
            lm.native_model().generate(tokens, max_new_tokens=n_tl, do_sample=False, verbose=False, use_past_kv_cache=True)
        tl_rate = n_tl / (time.perf_counter() - started)

    print(f"\nmodel {args.model}, {args.threads} threads, greedy, medians of {repeats} interleaved runs; tokens/s")
    print(f"{'batch':>5} {'new':>4} {'HF generate':>12} {'ours':>8} {'ours steered':>13} {'steered/HF':>11} "
          f"{'overhead':>9} {'HF agree':>9}")
    for (batch, new_tokens, hf_r, ours_r, st_r, agree), ratio, over in zip(rows_out, ratios_hf, overheads, strict=True):
        print(f"{batch:>5} {new_tokens:>4} {hf_r:>12.1f} {ours_r:>8.1f} {st_r:>13.1f} {ratio:>11.2f} {over:>9.3f} "
              f"{agree:>9.2f}")
    print(f"TransformerLens generate (batch 1, KV cache): {tl_rate:.2f} tokens/s")
    print(f"RESULT steered_vs_hf_speed {min(ratios_hf):.3f} ratio target >= 0.8")
    print(f"RESULT steered_generation_overhead {max(overheads):.3f} ratio target <= 1.15")


if __name__ == "__main__":
    main()
