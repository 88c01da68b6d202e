"""The nnsight backend on the bundled real models: every analysis gives the bridge backend's tidy frame.

The analyses run at the reduced sizes and tolerances of ``test_backends_real.py`` and are compared with the
bridge frames computed there (the default bridge, with TransformerLens's weight processing: on these RMSNorm
models processing changes weights, not activations, patterns or ablation effects). svd-channels reads the
weights themselves, and nnsight runs the raw checkpoint, so its reference — and that of the weights and logits —
is the bridge backend with processing off. Timings of the full runs are in ``benchmarks/bench_backends.py``.
Skipped where nnsight is not installed.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import interp
from interp.corpus import steering_prompts
from interp.data import default_prompts
from interp.generation import generate

from .test_backends_real import assert_same_frame, run_frame, steered_tokens

pytestmark = pytest.mark.integration
pytest.importorskip("nnsight")

RAW = {"fold_ln": False, "center_writing_weights": False, "center_unembed": False, "fold_value_biases": False}


def _pair(name: str) -> dict[str, interp.LoadedModel]:
    return {"bridge": interp.load_model(name, backend="bridge"), "nnsight": interp.load_model(name, backend="nnsight")}


@pytest.fixture(scope="module")
def gemma_nn(gemma):
    return _pair("gemma-3-270m")


@pytest.fixture(scope="module")
def smollm2_nn(smollm2):
    return _pair("smollm2-135m")


@pytest.fixture(params=["gemma-3-270m", "smollm2-135m"])
def pair(request, gemma_nn, smollm2_nn):
    return {"gemma-3-270m": gemma_nn, "smollm2-135m": smollm2_nn}[request.param]


def _both(pair, analysis: str, prompts, **options) -> tuple[pd.DataFrame, pd.DataFrame]:
    return run_frame(pair["bridge"], analysis, prompts, **options), run_frame(pair["nnsight"], analysis, prompts, **options)


def _raw_bridge(name: str) -> interp.LoadedModel:
    return interp.load_model(name, backend="bridge", processing=RAW)


def test_facts_weights_and_logits_agree(pair) -> None:
    nn = pair["nnsight"]
    bridge = _raw_bridge(nn.name)
    assert nn.info.backend == "nnsight" and not any(nn.info.processing.values())
    assert bridge.facts == nn.facts
    for layer in (0, nn.n_layers - 1):
        a, b = bridge.head_weights(layer), nn.head_weights(layer)
        for field in ("W_Q", "W_K", "W_V", "W_O", "b_O", "q_gain", "k_gain", "post_gain"):
            left, right = getattr(a, field), getattr(b, field)
            assert (left is None) == (right is None), field
            if left is not None:
                assert torch.allclose(left, right, atol=1e-6), field
    batch = nn.tokenize(["The capital of France is Paris. The capital of Spain is", "Hi"])
    real = batch.attention_mask.bool()
    with torch.inference_mode():
        left, right = bridge.forward(batch), nn.forward(batch)
    assert float((left - right)[real].abs().max()) < 1e-4 * float(left.abs().max())


def test_attention_sinks_frames_agree(pair) -> None:
    a, b = _both(pair, "attention-sinks", default_prompts()[:8])
    assert_same_frame(a, b, rtol=1e-4, atol=1e-4)


def test_head_importance_frames_agree(pair) -> None:
    a, b = _both(pair, "head-importance", default_prompts()[:4], n_sequences=2, half_length=8,
                 max_documents=2, max_tokens=32)
    assert_same_frame(a, b, rtol=2e-3, atol=1e-4)


def test_svd_channels_frames_agree(pair) -> None:
    raw = {"bridge": _raw_bridge(pair["nnsight"].name), "nnsight": pair["nnsight"]}
    a, b = _both(raw, "svd-channels", None, baseline_samples=10, sequences=2, half_length=10, heads=2,
                 random_trials=1)
    assert_same_frame(a, b, rtol=1e-4, atol=1e-5)


def test_attention_sparsity_frames_agree(pair) -> None:
    a, b = _both(pair, "attention-sparsity", default_prompts()[:6], max_tokens=96, window=16,
                 rank_prompts=2, min_keys=8, k=16)
    assert_same_frame(a, b, rtol=2e-3, atol=1e-6)


def test_safety_heads_frames_agree(smollm2_nn) -> None:
    """Against the unprocessed bridge: Sahara's greedy choice among near-equal heads can flip with the float
    rounding that folding the norm gains brings (seen at step 2 on smollm2-135m), which the same coordinates avoid."""
    raw = {"bridge": _raw_bridge("smollm2-135m"), "nnsight": smollm2_nn["nnsight"]}
    a, b = _both(raw, "safety-heads", None, n_attribution=3, n_eval=4, n_harmless=2, max_new_tokens=8,
                 random_groups=1, matched_groups=1, steps=1, pool=0, compare_base="")
    assert_same_frame(a, b, rtol=2e-3, atol=1e-5)


def test_language_steering_frames_agree(smollm2_nn, tmp_path, monkeypatch) -> None:
    """sae-lens trains on a TransformerLens model: on nnsight that is a bridge over the same weight tensors,
    unprocessed (the same residual stream), and everything after training runs through nnsight."""
    import interp.sae
    import interp.steering.selection as selection

    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("INTERP_CORPUS_CATALOGS", "0")
    held_out = interp.sae.default_eval_texts()
    monkeypatch.setattr(interp.sae, "default_eval_texts", lambda: held_out[::max(1, len(held_out) // 12)][:12])
    real_reference = selection.reference_texts
    monkeypatch.setattr(selection, "reference_texts", lambda langs: {k: v[:40] for k, v in real_reference(langs).items()})
    a, b = _both(smollm2_nn, "language-steering", steering_prompts()[:8], layer="1", languages="fr",
                 strengths="0.05,0.1", md_layer=3, candidates=2, screen_prompts=3, confirm_prompts=2, heldout_from=4,
                 blind_prompts=3, max_new_tokens=4, sae_tokens=4096, sae_width=256, sae_k=16, sae_epochs=1)
    assert_same_frame(a, b, rtol=1e-3, atol=1e-4)


def test_steered_greedy_generation_gives_the_same_tokens(pair) -> None:
    prompts = ["The weather today is", "My favourite food is", "Once upon a time, in a small village,"]
    tokens = {backend: steered_tokens(lm, prompts) for backend, lm in pair.items()}
    assert tokens["bridge"] == tokens["nnsight"]
    assert generate(pair["nnsight"], prompts, max_new_tokens=10).token_ids != tokens["nnsight"]


def test_sink_streaming_and_explanations_agree(smollm2_nn) -> None:
    """The two analyses that write attention scores (StreamingLLM's masks) and differentiate through the
    embeddings (Captum), against the unprocessed bridge on smollm2-135m at small sizes."""
    import numpy as np

    from interp.attribution.sink_streaming import sink_streaming

    bridge, nn = _raw_bridge("smollm2-135m"), smollm2_nn["nnsight"]
    streams = [sink_streaming(lm, window=16, ks=(1,), controls=("newline",), max_tokens=48, queries=2,
                              progress=False).to_frame() for lm in (bridge, nn)]
    assert_same_frame(*streams, rtol=1e-4, atol=1e-4)
    prompts, targets = ["The keys to the old cabinet", "The key to the old cabinets"], [(" are", " is"), (" is", " are")]
    methods = ["attention_last", "rollout", "saliency", "integrated_gradients", "occlusion"]
    a, b = (interp.explain(lm, prompts, target=targets, methods=methods, steps=8).frame for lm in (bridge, nn))
    assert a[["prompt", "position", "token", "method"]].equals(b[["prompt", "position", "token", "method"]])
    for method, left in a.groupby("method"):
        right = b[b.method == method]
        scale = max(1e-6, float(np.abs(left.value).max()))
        assert np.allclose(left.value, right.value, rtol=2e-3, atol=2e-3 * scale), method
