"""StreamingLLM's sink test on the real bundled models, at a reduced size (w = 32, 256 tokens)."""

from __future__ import annotations

import pytest
import torch

from interp.attribution.sink_streaming import sink_streaming
from interp.data import shipped_path

W, T = 32, 256


def explicit_mask(n: int, kept: tuple[int, ...]) -> torch.Tensor:
    mask = torch.full((1, 1, n, n), float("-inf"))
    for t in range(n):
        for j in sorted(set(j for j in kept if j <= t) | set(range(max(0, t - (W - len(kept)) + 1), t + 1))):
            mask[0, 0, t, j] = 0.0
    return mask


@pytest.mark.integration
@pytest.mark.parametrize("name", ["gemma-3-270m", "smollm2-135m"])
def test_streaming_table_and_the_sink_effect_on_real_models(name, request, hf_reference):
    lm = request.getfixturevalue({"gemma-3-270m": "gemma", "smollm2-135m": "smollm2"}[name])
    result = sink_streaming(lm, window=W, ks=(1, 4), max_tokens=T, queries=8, progress=False)
    # structure: every budget under the masked scheme, the same budgets on the sample under re-assignment
    masked = [(c.condition, c.k) for c in result.conditions if c.scheme == "masked"]
    skipped = {entry.split("'")[1] for entry in result.skipped}
    expected = [("full", 0), ("window", 0), ("sinks", 1), ("sinks", 4)]
    expected += [(kind, 4) for kind in ("newline", "period", "random") if kind not in skipped]
    assert masked == expected and "random" not in skipped
    assert [(c.condition, c.k) for c in result.conditions if c.scheme == "reassigned"] == expected
    assert all(len(c.nll) == T - 1 - W for c in result.conditions if c.scheme == "masked")
    assert all(c.queries == result.sampled_queries for c in result.conditions if c.scheme == "reassigned")
    frame = result.to_frame()
    assert len(frame.query("metric == 'perplexity'")) == 2 * len(expected) + len(expected)  # masked all + sample, reassigned
    # Gemma 3 keeps its own local window (512) on 15 of 18 layers; w = 32 is below it, so every layer is cut
    assert result.sliding_window == lm.facts.sliding_window
    assert result.sliding_layers == tuple(lm.facts.sliding_layers)
    if name == "gemma-3-270m":
        assert result.sliding_window == 512 and len(result.sliding_layers) == 15
    # the effect where it is robust (original positions): losing the first tokens costs a lot, keeping
    # them restores most of it, and four line breaks kept instead do not (measured: smollm2 148 / 48 / 165,
    # gemma 232 / 43 / 381 against full attention 36 and 33)
    full = result.perplexity("masked", "full")
    window = result.perplexity("masked", "window")
    kept4 = result.perplexity("masked", "sinks", 4)
    assert window > 2 * kept4 and window > 2 * full
    assert kept4 < 2 * full
    if "newline" not in skipped:
        assert result.perplexity("masked", "newline", 4) > 2 * kept4
    # the masking equals Hugging Face's own eager attention given the same key sets as a 4-D mask
    hf = hf_reference(name)
    ids = lm.encode(shipped_path("streaming_story.txt").read_text(encoding="utf-8"))[:T]
    for condition, k in (("window", 0), ("sinks", 4)):
        entry = result.condition("masked", condition, k)
        with torch.no_grad():
            logp = hf(torch.tensor([ids]), attention_mask=explicit_mask(len(ids), entry.kept)).logits[0].float().log_softmax(-1)
        reference = torch.tensor([-float(logp[t, ids[t + 1]]) for t in entry.queries], dtype=torch.float64)
        assert torch.allclose(torch.tensor(entry.nll, dtype=torch.float64), reference, atol=5e-4), condition
