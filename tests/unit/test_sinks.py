"""Sink metrics: exact values on hand-built patterns, and planted sinks found where they were planted."""

from __future__ import annotations

import torch

from interp.attribution.sinks import attention_sinks
from interp.probes import attention_received
from tests.unit.planted import plant_sinks

PROMPTS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Attention heads often park their attention on the first token.",
    "Seven small boats sailed past the old lighthouse at dawn today.",
    "A planted mechanism gives an answer that is known by construction.",
]


def causal_uniform(n: int) -> torch.Tensor:
    pattern = torch.tril(torch.ones(n, n))
    return pattern / pattern.sum(dim=1, keepdim=True)


def test_attention_received_matches_the_definition_on_a_uniform_pattern():
    n = 6
    pattern = causal_uniform(n)[None, None]  # [1, 1, q, k]
    mask = torch.ones(1, n, dtype=torch.long)
    received = attention_received(pattern, mask)[0, 0]
    for k in range(n):
        expected = sum(1.0 / (t + 1) for t in range(k, n)) / (n - k)
        assert abs(float(received[k]) - expected) < 1e-6


def test_attention_received_ignores_padded_queries_and_excludes_the_diagonal_on_request():
    n, real = 6, 4
    pattern = torch.zeros(1, 1, n, n)
    pattern[0, 0, :real, :real] = causal_uniform(real)
    pattern[0, 0, real:, 0] = 1.0  # garbage in padded query rows must not count
    mask = torch.tensor([[1] * real + [0] * (n - real)])
    received = attention_received(pattern, mask)[0, 0]
    expected0 = sum(1.0 / (t + 1) for t in range(real)) / real
    assert abs(float(received[0]) - expected0) < 1e-6
    assert float(received[real:].abs().sum()) == 0.0
    strict = attention_received(pattern, mask, include_diagonal=False)[0, 0]
    expected_strict0 = sum(1.0 / (t + 1) for t in range(1, real)) / (real - 1)
    assert abs(float(strict[0]) - expected_strict0) < 1e-6
    assert float(strict[real - 1]) == 0.0  # the last real token has no later query


def test_planted_first_token_sink_is_reported_at_exactly_that_head():
    lm = plant_sinks(bos_layer=0, bos_head=2)
    scores = attention_sinks(lm, PROMPTS, max_tokens=32, progress=False)
    bos = scores.bos_attention
    assert bos[0, 2] > 0.95
    others = torch.cat([bos[0, [0, 1, 3]], bos[1]])
    assert float(others.max()) < 0.3
    assert scores.sink_fraction[0, 2] == 1.0
    assert float(scores.sink_fraction.sum()) == 1.0  # no other head crosses ε on any prompt
    # Gu et al.: exactly one of the L*H heads sinks on every prompt.
    assert abs(scores.gu_sink_metric - 1 / 8) < 1e-9


def test_planted_secondary_sink_is_found_at_its_position_and_layer():
    lm = plant_sinks(seed=1, secondary_layer=1, secondary_position=5)
    scores = attention_sinks(lm, PROMPTS, max_tokens=32, tau=0.3, progress=False)
    found = {(s.prompt, s.position, s.birth_layer) for s in scores.secondary_sinks}
    for prompt in range(len(PROMPTS)):
        assert (prompt, 5, 1) in found
    assert all(s.position == 5 for s in scores.secondary_sinks)
    assert all(s.peak_score > 0.9 for s in scores.secondary_sinks)
    # The token text is the one at position 5 (BOS + 4 bytes): the fifth character of the prompt.
    assert {s.token for s in scores.secondary_sinks if s.prompt == 0} == {PROMPTS[0][4]}


def test_padding_does_not_change_the_scores(tiny_gpt2):
    alone = [attention_sinks(tiny_gpt2, [p], max_tokens=40, progress=False) for p in PROMPTS]
    together = attention_sinks(tiny_gpt2, PROMPTS + ["Short."], max_tokens=40, batch_size=5, progress=False)
    mean_alone = torch.stack([s.bos_attention for s in alone]).mean(0)
    short = attention_sinks(tiny_gpt2, ["Short."], max_tokens=40, progress=False)
    expected = (mean_alone * 4 + short.bos_attention) / 5
    assert torch.allclose(together.bos_attention, expected, atol=1e-5)


def test_massive_activation_scan_reports_the_true_largest_entries(tiny_gpt2):
    scores = attention_sinks(tiny_gpt2, PROMPTS, max_tokens=24, top_k=3, progress=False)
    tokens = [tiny_gpt2.encode(p)[:24] for p in PROMPTS]
    for layer in range(tiny_gpt2.n_layers):
        sites: dict = {}  # (position, dim) -> [(|value|, prompt)] over the prompts that have that position
        for index, row in enumerate(tokens):
            name = f"blocks.{layer}.hook_resid_post"
            resid = tiny_gpt2.capture(tiny_gpt2.pad([row]), [name])[name][0].abs()  # one unpadded run per prompt
            for position in range(resid.shape[0]):
                for dim in range(resid.shape[1]):
                    sites.setdefault((position, dim), []).append((float(resid[position, dim]), index))
        best = {site: max(v for v, _ in entries) for site, entries in sites.items()}
        truth = sorted(best, key=lambda site: -best[site])[:3]  # distinct sites, largest occurrence of each
        ours = [m for m in scores.massive if m.layer == layer]
        assert [(m.position, m.dim) for m in ours] == truth
        for m in ours:
            site = (m.position, m.dim)
            assert abs(m.value - best[site]) < 1e-4
            # The first token's state is the same in every prompt (causal model), so the prompt reported for a
            # position-0 site is any one of those tied at the largest value (up to float noise).
            tied = {prompt for value, prompt in sites[site] if value > best[site] - 1e-4}
            assert m.prompt in tied
            assert len(tied) == 1 or m.position == 0
