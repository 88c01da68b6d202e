"""Attention sparsity on the bundled real models: masking and GQA layout of the hooks, the streaming
eviction errors against a brute-force recomputation for one layer, and the certificate on real heads."""

from __future__ import annotations

import math

import pytest
import torch

from interp.attribution.sparsity import SCORES, attention_sparsity, evicted_output, obcache_saliencies
from interp.data import default_prompts

pytestmark = pytest.mark.integration

WINDOW, MIN_KEYS, BUDGET = 16, 8, 0.25


def capture(lm, texts, layer):
    batch = lm.tokenize(texts)
    store = {}

    def keep(activation, hook):
        store[hook.name.split(".")[-1]] = activation.detach().clone()

    names = ("hook_attn_scores", "hook_pattern", "hook_v", "hook_z")
    lm.forward(batch, fwd_hooks=[(f"blocks.{layer}.attn.{n}", keep) for n in names], return_type=None)
    return batch, store


def check_hooks(lm, layer):
    """Masked score entries are −inf (causal and padding), hook_v is grouped, pattern @ v is hook_z."""
    texts = default_prompts()[:2]
    texts = [texts[0], texts[1][:40]]  # two lengths: the second row is padded
    batch, store = capture(lm, texts, layer)
    scores, pattern, v, z = (store[n] for n in ("hook_attn_scores", "hook_pattern", "hook_v", "hook_z"))
    mask = batch.attention_mask.bool()
    width = mask.shape[1]
    allowed = mask[:, None, None, :].expand_as(scores)
    if not lm.is_encoder:
        allowed = allowed & torch.ones(width, width, dtype=torch.bool).tril()
    real_queries = mask[:, None, :, None].expand_as(scores)
    assert bool(torch.isneginf(scores[~allowed & real_queries]).all())
    assert bool(torch.isfinite(scores[allowed & real_queries]).all())
    n_kv = lm.n_kv_heads
    assert v.shape[2] == n_kv  # both backends keep hook_v grouped
    expanded = v.repeat_interleave(lm.n_heads // n_kv, dim=2)  # query head h reads KV head h // group
    recomputed = torch.einsum("bhqk,bkhd->bqhd", pattern, expanded)
    assert torch.allclose(recomputed[mask], z[mask], atol=1e-4)


def brute_force_eviction(lm, texts, layer):
    """RMS relative window error per head and score for one layer, one prompt at a time, no padding."""
    errors = {s: torch.zeros(lm.n_heads, dtype=torch.float64) for s in SCORES}
    outputs = torch.zeros(lm.n_heads, dtype=torch.float64)
    for text in texts:
        batch, store = capture(lm, [text], layer)
        n = int(batch.lengths[0])
        scores, v = store["hook_attn_scores"][0].double(), store["hook_v"][0].double()
        group = lm.n_heads // v.shape[1]
        queries = list(range(n - WINDOW, n))
        for head in range(lm.n_heads):
            logits = scores[head, queries, :n]
            values = v[:n, head // group]
            base = torch.softmax(logits, -1) @ values
            outputs[head] += float((base**2).sum())
            saliency = obcache_saliencies(logits, values)
            evictable = n - WINDOW
            n_evict = evictable - math.ceil(BUDGET * evictable)
            for name in SCORES:
                chosen = saliency[name].sum(0)[:evictable].argsort(stable=True)[:n_evict]
                evicted = torch.zeros(n, dtype=torch.bool)
                evicted[chosen] = True
                new = evicted_output(logits, values, evicted.expand(WINDOW, n))
                errors[name][head] += float(((new - base) ** 2).sum())
    return {s: (e / outputs).sqrt() for s, e in errors.items()}


def check_model(lm, layer, texts):
    result = attention_sparsity(lm, texts, budgets=(BUDGET, 0.5), window=WINDOW, min_keys=MIN_KEYS, rank_prompts=2,
                                batch_size=len(texts), progress=False)
    brute = brute_force_eviction(lm, texts, layer)
    for s, name in enumerate(SCORES):
        assert torch.allclose(result.eviction_error[s, 0, layer].double(), brute[name], rtol=5e-3, atol=1e-4), name
    eps = result.reported_epsilons[0]
    assert bool((result.keys_saved >= 1).all())
    assert bool((result.truncation_tau <= eps + 1e-5).all())
    assert bool((result.truncation_error <= result.truncation_bound * (1 + 1e-4) + 1e-6).all())
    assert bool((result.effective_rank >= 1 - 1e-4).all())
    return result


def test_gemma_hooks_mask_with_minus_inf_and_keep_one_value_head(gemma):
    check_hooks(gemma, layer=5)


def test_gemma_eviction_errors_match_brute_force_and_sinks_are_kept_by_accumulated_attention(gemma):
    texts = default_prompts()[:3]
    result = check_model(gemma, layer=5, texts=texts)
    assert float(result.bos_attention[5].mean()) > 0.5  # OFFLINE.md: layer 5 parks ~0.86 on BOS
    acc = SCORES.index("accumulated")
    sink_heads = result.bos_attention > 0.5
    assert float(result.sink_evicted[acc, 0][sink_heads].max()) == 0.0


def test_smollm2_grouped_query_attention(smollm2):
    check_hooks(smollm2, layer=3)
    check_model(smollm2, layer=3, texts=default_prompts()[:2])


def test_minilm_encoder_sees_every_key(minilm):
    check_hooks(minilm, layer=2)
    result = check_model(minilm, layer=2, texts=default_prompts()[:2])
    assert result.n_window_prompts == 2
