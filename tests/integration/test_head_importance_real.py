"""Head importance on the real bundled models (gemma-3-270m: 4 query heads sharing 1 KV head, post-norms,
q/k-norm; smollm2-135m: 9 query heads over 3 KV heads). Kept small: a few short induction sequences.

* induction heads (high attention to the token after the earlier occurrence) are among the heads whose
  ablation hurts the loss of the repeated half most;
* the fast scan equals the naive loop on real weights (rotary, local attention windows, post-norms);
* DLA components sum to the logit difference through Gemma's post-attention norms;
* scale-query collapses one query head of a shared KV group to the causal-uniform pattern and leaves the
  group's other query heads alone.
"""

from __future__ import annotations

import pytest
import torch

from interp.attribution.ablation_scan import ablation_scan, naive_ablation_scan
from interp.attribution.head_scores import direct_logit_attribution, induction_pattern_scores
from interp.interventions import ablate_heads, causal_uniform_pattern
from interp.tasks import induction_task


@pytest.fixture(params=["gemma", "smollm2"])
def real(request):
    return request.getfixturevalue(request.param)


def _rank(values: torch.Tensor) -> list[tuple[int, int]]:
    n_heads = values.shape[1]
    order = torch.nan_to_num(values, nan=-float("inf")).flatten().argsort(descending=True)
    return [(int(i) // n_heads, int(i) % n_heads) for i in order]


def test_induction_heads_are_among_the_top_heads_by_ablation(real) -> None:
    lm = real
    task = induction_task(lm, n_sequences=2, half_length=8, seed=0)
    patterns = induction_pattern_scores(lm, task)
    scan = ablation_scan(lm, task, metrics=("loss",))
    by_induction = _rank(patterns.induction)
    by_ablation = _rank(scan.delta("loss"))
    total = lm.n_layers * lm.n_heads
    top_ablation = set(by_ablation[: max(5, total // 20)])  # top 5% (at least 5) by Δloss
    assert float(patterns.induction.max()) > 0.3  # the models do have induction heads
    assert top_ablation & set(by_induction[:3]), (by_induction[:5], by_ablation[:10])
    # The induction head that ablation ranks highest raises the repeated-half loss clearly.
    best = min(by_induction[:3], key=by_ablation.index)
    assert float(scan.delta("loss")[best]) > 0.1


def test_fast_scan_equals_the_naive_loop_on_real_weights(real) -> None:
    lm = real
    task = induction_task(lm, n_sequences=2, half_length=5, seed=1)
    heads = [(1, 0), (lm.n_layers - 2, lm.n_heads - 1)]
    for mode in ("zero", "scale_query"):
        fast = ablation_scan(lm, task, heads=heads, mode=mode)
        naive = naive_ablation_scan(lm, task, heads=heads, mode=mode)
        for metric in fast.values:
            torch.testing.assert_close(fast.values[metric], naive.values[metric], atol=1e-4, rtol=0, equal_nan=True)


def test_dla_sums_to_the_logit_difference(real) -> None:
    lm = real
    dla = direct_logit_attribution(lm, induction_task(lm, n_sequences=2, half_length=6, seed=2))
    scale = float(dla.logit_diff.abs().max()) + 1.0
    assert dla.residual_error < 1e-3 * scale


def test_scale_query_spares_the_other_query_heads_of_a_kv_group(real) -> None:
    lm = real
    assert lm.info.n_kv_heads < lm.n_heads  # grouped-query attention
    batch = lm.tokenize(["The quick brown fox jumps over the lazy dog."])
    layer, head = 3, 1
    name = f"blocks.{layer}.attn.hook_pattern"
    seen: dict[str, torch.Tensor] = {}

    def keep(pattern: torch.Tensor, hook) -> None:
        seen[hook.name] = pattern.detach().clone()

    with torch.inference_mode():
        lm.forward(batch, fwd_hooks=[(name, keep)], stop_at_layer=layer + 1)
        clean = seen[name]
        with ablate_heads(lm, [(layer, head)], mode="scale_query", eps=1e-6):
            lm.forward(batch, fwd_hooks=[(name, keep)], stop_at_layer=layer + 1)
    ablated = seen[name]
    n = batch.tokens.shape[1]
    torch.testing.assert_close(ablated[0, head], causal_uniform_pattern(n), atol=1e-4, rtol=0)
    others = [h for h in range(lm.n_heads) if h != head]
    torch.testing.assert_close(ablated[0, others], clean[0, others], atol=0, rtol=0)
