"""The head detectors against TransformerLens's own ``detect_head`` (an independent reference).

The suite computes previous-token, duplicate-token and induction scores in one streaming, batched, padded
pass; TransformerLens runs one unpadded sequence at a time with ``run_with_cache``. They must agree to 1e-6
for every combination of ``exclude_bos``, ``exclude_current_token`` and the error measure, on a GQA model, on
the planted model (where the scores are far from 0), and for the repeated-random-token pass.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from transformer_lens.head_detector import detect_head

import interp
from interp.attribution.head_detectors import attention_detectors, repeated_token_detectors
from tests.unit.planted_heads import PROMPTS, planted_model

TL_NAMES = {"previous_token": "previous_token_head", "duplicate_token_text": "duplicate_token_head",
            "induction_text": "induction_head"}
TEXTS = ["The cat sat on the mat and the cat sat.", "abcabcabc xyz xyz", "Hello hello hello world", "ab"]
OPTIONS = list(itertools.product((False, True), (False, True), ("mul", "abs")))


@pytest.fixture(scope="module")
def planted():
    return planted_model()


def _check_tokens(lm, texts):
    native = lm.native_model()
    for text in texts:  # the same sequences: the suite's BOS handling equals TransformerLens's to_tokens
        assert lm.encode(text) == native.to_tokens(text)[0].tolist()


@pytest.mark.parametrize("model_name", ["tiny-gpt2", "tiny-llama", "planted"])
def test_natural_text_scores_equal_detect_head(model_name, planted):
    lm = planted if model_name == "planted" else interp.load_model(model_name)
    texts = PROMPTS[:4] + TEXTS if model_name == "planted" else TEXTS
    _check_tokens(lm, texts)
    worst = 0.0
    for exclude_bos, exclude_current, measure in OPTIONS:
        ours = attention_detectors(lm, texts, max_tokens=None, exclude_bos=exclude_bos,
                                   exclude_current_token=exclude_current, error_measure=measure, batch_size=3,
                                   progress=False)
        for name, tl_name in TL_NAMES.items():
            reference = detect_head(lm.native_model(), texts, tl_name, exclude_bos=exclude_bos,
                                    exclude_current_token=exclude_current, error_measure=measure)
            gap = float((ours.scores[name].double() - reference.double().cpu()).abs().max())
            worst = max(worst, gap)
            assert gap < 1e-6, (name, exclude_bos, exclude_current, measure, gap)
    if model_name == "planted":  # the comparison is not vacuous: the planted heads score far from 0
        reference = detect_head(lm.native_model(), texts, "previous_token_head", exclude_bos=True)
        assert float(reference[0, 0]) > 0.9


@pytest.mark.parametrize("measure", ["mul", "abs"])
def test_repeated_token_scores_equal_detect_head(planted, measure):
    """The repeated random tokens as text (the byte tokenizer round-trips them), scored by detect_head."""
    lm = planted
    ours = repeated_token_detectors(lm, n_sequences=4, half_length=12, seed=3, exclude_bos=True,
                                    error_measure=measure, batch_size=3, progress=False)
    texts = [lm.decode(row[1:], skip_special_tokens=False) for row in ours.token_rows]
    for text, row in zip(texts, ours.token_rows, strict=True):
        assert lm.native_model().to_tokens(text)[0].tolist() == list(row)
    for name, tl_name in (("induction", "induction_head"), ("duplicate_token", "duplicate_token_head")):
        reference = detect_head(lm.native_model(), texts, tl_name, exclude_bos=True, error_measure=measure)
        assert float((ours.scores[name].double() - reference.double().cpu()).abs().max()) < 1e-6
    assert float(ours.scores["induction"][1, 0]) > 0.5  # the planted induction head


def test_pattern_statistics_equal_a_brute_force_over_run_with_cache():
    lm = interp.load_model("tiny-llama")
    native = lm.native_model()
    ours = attention_detectors(lm, TEXTS, max_tokens=None, batch_size=2, progress=False)
    sums = {name: torch.zeros(lm.n_layers, lm.n_heads, dtype=torch.float64)
            for name in ("bos_attention", "current_token", "attention_distance", "attention_entropy")}
    for text in TEXTS:
        tokens = native.to_tokens(text)
        _, cache = native.run_with_cache(tokens)
        n = tokens.shape[1]
        for layer in range(lm.n_layers):
            pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0].double()
            for head in range(lm.n_heads):
                a = pattern[head]
                sums["bos_attention"][layer, head] += sum(float(a[q, 0]) for q in range(n)) / n
                sums["current_token"][layer, head] += sum(float(a[q, q]) for q in range(1, n)) / (n - 1)
                weighted = sum(float(a[q, k]) * (q - k) for q in range(n) for k in range(1, q + 1))
                mass = sum(float(a[q, k]) for q in range(n) for k in range(1, q + 1))
                sums["attention_distance"][layer, head] += weighted / mass
                entropy = 0.0
                for q in range(1, n):
                    row = a[q, : q + 1]
                    entropy += float(-(row[row > 0] * row[row > 0].log()).sum()) / float(torch.log(torch.tensor(q + 1.0)))
                sums["attention_entropy"][layer, head] += entropy / (n - 1)
    for name, total in sums.items():
        assert float((ours.scores[name].double() - total / len(TEXTS)).abs().max()) < 1e-5, name
