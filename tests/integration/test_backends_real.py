"""Both backends on the bundled real models: every analysis gives the same tidy frame, generation the same
tokens, and a disk-offloaded model the same frames as the in-memory one.

The hooked backend runs TransformerLens's re-implementation of each architecture on converted weights;
the bridge backend runs the Hugging Face modules with TransformerLens hook points. Agreement is checked
per row (every key column equal, values within the tolerance stated per analysis: float32 rounding of two
different programs, plus the relative error of tiny values). Analyses run at reduced sizes; the full
runs are timed in ``benchmarks/bench_backends.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

import interp
from interp.corpus import steering_prompts
from interp.data import default_prompts
from interp.generation import generate
from interp.interventions import ablate_heads

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gemma_pair(gemma):  # the session fixture checks the package is installed (and fails under make test)
    return {"hooked": interp.load_model("gemma-3-270m", backend="hooked"),
            "bridge": interp.load_model("gemma-3-270m", backend="bridge")}


@pytest.fixture(scope="module")
def smollm2_pair(smollm2):
    return {"hooked": interp.load_model("smollm2-135m", backend="hooked"),
            "bridge": interp.load_model("smollm2-135m", backend="bridge")}


#: Metrics decided by a ranking whose near-ties float rounding can flip (which keys an eviction policy keeps):
#: a flipped key changes the value by about a percent, so these agree to 5% rather than float precision.
#: Likewise ``keys_saved`` (the mean of n/k_ε): k_ε is an integer threshold, and a query whose tail mass lies within
#: float rounding of ε moves it by one (seen once, smollm2 L27H6 at ε = 0.3: 34.44 vs 34.53).
LOOSE_METRICS = {"eviction_error": 5e-2, "keys_saved": 1e-2}


def assert_same_frame(a: pd.DataFrame, b: pd.DataFrame, *, rtol: float, atol: float) -> None:
    """Same columns and rows; key columns equal; numeric columns equal within ``rtol``/``atol``."""
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    loose = a["metric"].astype("string").map(LOOSE_METRICS).astype(float).fillna(rtol).to_numpy()
    for column in a.columns:
        left, right = a[column], b[column]
        if pd.api.types.is_float_dtype(left) and pd.api.types.is_float_dtype(right):
            x, y = left.to_numpy(float), right.to_numpy(float)
            close = np.isclose(x, y, rtol=loose if column == "value" else rtol, atol=atol, equal_nan=True)
            assert close.all(), (column, a[~close].head(3).to_dict("records"), y[~close][:3])
        else:
            assert left.astype("string").fillna("<NA>").tolist() == right.astype("string").fillna("<NA>").tolist(), column


_FRAMES: dict[tuple, pd.DataFrame] = {}


def run_frame(lm, analysis: str, prompts, **options) -> pd.DataFrame:
    """The analysis's tidy frame, computed once per session for the same model object and options
    (``test_nnsight_real.py`` compares with the bridge frames computed here)."""
    key = (id(lm), analysis, repr(prompts), repr(sorted(options.items())))
    if key not in _FRAMES:
        _FRAMES[key] = interp.run(analysis, lm, prompts, progress=False, **options).frame
    return _FRAMES[key]


def _both(pair, analysis: str, prompts, **options) -> tuple[pd.DataFrame, pd.DataFrame]:
    frames = [run_frame(pair[b], analysis, prompts, **options) for b in ("hooked", "bridge")]
    return frames[0], frames[1]


def test_facts_weights_and_logits_agree(gemma_pair, smollm2_pair) -> None:
    for pair in (gemma_pair, smollm2_pair):
        hooked, bridge = pair["hooked"], pair["bridge"]
        assert hooked.facts == bridge.facts
        for layer in (0, hooked.n_layers - 1):
            a, b = hooked.head_weights(layer), bridge.head_weights(layer)
            for field in ("W_Q", "W_K", "W_V", "W_O", "b_O", "q_gain", "k_gain", "post_gain"):
                left, right = getattr(a, field), getattr(b, field)
                assert (left is None) == (right is None), field
                if left is not None:
                    assert torch.allclose(left, right, atol=1e-6), field
        batch = hooked.tokenize(["The capital of France is Paris. The capital of Spain is", "Hi"])
        real = batch.attention_mask.bool()
        with torch.inference_mode():
            left, right = hooked.forward(batch), bridge.forward(batch)
        assert float((left - right)[real].abs().max()) < 1e-3 * float(left.abs().max())


def test_attention_sinks_frames_agree(gemma_pair, smollm2_pair) -> None:
    for pair in (gemma_pair, smollm2_pair):
        a, b = _both(pair, "attention-sinks", default_prompts()[:8])
        assert_same_frame(a, b, rtol=1e-4, atol=1e-4)


@pytest.fixture(params=["gemma-3-270m", "smollm2-135m"])
def pair(request, gemma_pair, smollm2_pair):
    return {"gemma-3-270m": gemma_pair, "smollm2-135m": smollm2_pair}[request.param]


def test_head_importance_frames_agree(pair) -> None:
    a, b = _both(pair, "head-importance", default_prompts()[:4], n_sequences=2, half_length=8,
                 max_documents=2, max_tokens=32)
    assert_same_frame(a, b, rtol=2e-3, atol=1e-4)


def test_svd_channels_frames_agree(pair) -> None:
    a, b = _both(pair, "svd-channels", None, baseline_samples=10, sequences=2, half_length=10, heads=2,
                 random_trials=1)
    assert_same_frame(a, b, rtol=1e-4, atol=1e-5)


def test_attention_sparsity_frames_agree(pair) -> None:
    a, b = _both(pair, "attention-sparsity", default_prompts()[:6], max_tokens=96, window=16,
                 rank_prompts=2, min_keys=8, k=16)
    assert_same_frame(a, b, rtol=2e-3, atol=1e-6)


def test_safety_heads_frames_agree(smollm2_pair) -> None:
    """Ships scores per head within float error; with one head per group (well separated) the chosen heads,
    the generations and so the refusal rates are identical."""
    a, b = _both(smollm2_pair, "safety-heads", None, n_attribution=3, n_eval=4, n_harmless=2, max_new_tokens=8,
                 random_groups=1, matched_groups=1, steps=1, pool=0, compare_base="")
    assert_same_frame(a, b, rtol=2e-3, atol=1e-5)


def test_language_steering_frames_agree(pair, tmp_path, monkeypatch) -> None:
    """A 256-latent SAE at layer 1 is trained per backend (in a temporary cache; the cache key holds the backend)
    and its quality measured on 12 held-out texts rather than all of them (the full-vocabulary loss of three
    spliced runs dominated this test's time)."""
    import interp.sae

    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("INTERP_CORPUS_CATALOGS", "0")
    held_out = interp.sae.default_eval_texts()
    monkeypatch.setattr(interp.sae, "default_eval_texts", lambda: held_out[::max(1, len(held_out) // 12)][:12])
    import interp.steering.selection as selection

    real_reference = selection.reference_texts
    monkeypatch.setattr(selection, "reference_texts", lambda langs: {k: v[:40] for k, v in real_reference(langs).items()})
    a, b = _both(pair, "language-steering", steering_prompts()[:8], layer="1", languages="fr", strengths="0.05,0.1",
                 md_layer=3, candidates=2, screen_prompts=3, confirm_prompts=2, heldout_from=4, blind_prompts=3,
                 max_new_tokens=4, sae_tokens=4096, sae_width=256, sae_k=16, sae_epochs=1)
    assert_same_frame(a, b, rtol=1e-3, atol=1e-4)


def test_steered_greedy_generation_gives_the_same_tokens(pair) -> None:
    """A mean-difference steering hook and a head ablation, KV-cached greedy decoding, left-padded batch."""
    prompts = ["The weather today is", "My favourite food is", "Once upon a time, in a small village,"]
    tokens = {backend: steered_tokens(lm, prompts) for backend, lm in pair.items()}
    assert tokens["hooked"] == tokens["bridge"]
    plain = generate(pair["hooked"], prompts, max_new_tokens=10).token_ids
    assert plain != tokens["hooked"]  # the edits are active while decoding, so the comparison can fail


def steered_tokens(lm, prompts) -> list[list[int]]:
    """Greedy KV-cached generation with a French-minus-English direction added at layer 6 and head L5H1
    ablated; the hooks must be gone afterwards."""
    french = lm.capture(lm.tokenize(["Le chat est sur la table."]), ["blocks.6.hook_resid_post"])
    english = lm.capture(lm.tokenize(["The cat is on the table."]), ["blocks.6.hook_resid_post"])
    direction = french["blocks.6.hook_resid_post"][0, 1:].mean(0) - english["blocks.6.hook_resid_post"][0, 1:].mean(0)

    def steer(resid, hook):
        return resid + 4.0 * direction

    with ablate_heads(lm, [(5, 1)], "zero"):
        out = generate(lm, prompts, max_new_tokens=10, fwd_hooks=[("blocks.6.hook_resid_post", steer)])
    assert lm.active_hook_count() == 0
    return out.token_ids


OFFLOAD_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    import interp
    from interp.data import default_prompts
    torch.set_num_threads(2)
    kwargs = json.loads(sys.argv[1])
    lm = interp.load_model("gemma-3-270m", **kwargs)
    out = sys.argv[2]
    interp.run("attention-sinks", lm, default_prompts()[:4], progress=False).frame.to_parquet(out + "-sinks.parquet")
    interp.run("head-importance", lm, default_prompts()[:2], progress=False, n_sequences=2, half_length=6,
               max_documents=1, max_tokens=24).frame.to_parquet(out + "-importance.parquet")
    peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
    print(json.dumps({"placement": lm.info.placement, "processing": lm.info.processing,
                      "peak_gib": int(peak) / 2**20}))
""")


def _offload_run(tmp_path, name: str, kwargs: dict) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    out = str(tmp_path / name)
    done = subprocess.run([sys.executable, "-c", OFFLOAD_SCRIPT, json.dumps(kwargs), out], capture_output=True,
                          text=True, timeout=900, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report, pd.read_parquet(out + "-sinks.parquet"), pd.read_parquet(out + "-importance.parquet")


def test_disk_offloaded_gemma_gives_the_in_memory_frames(gemma, tmp_path, capsys) -> None:
    """A ``max_memory`` below gemma's size sends its last layers to disk (accelerate); the frames must equal
    the in-memory bridge model's (both unprocessed: offloaded weights cannot be folded)."""
    raw = {"fold_ln": False, "center_writing_weights": False, "center_unembed": False, "fold_value_biases": False}
    offloaded, sinks_off, importance_off = _offload_run(
        tmp_path, "offloaded", {"max_memory": {"cpu": "1000MiB"}, "offload_folder": str(tmp_path / "offload")})
    in_memory, sinks_mem, importance_mem = _offload_run(tmp_path, "memory", {"backend": "bridge", "processing": raw})
    assert "disk" in offloaded["placement"].values()
    assert not any(offloaded["processing"].values())
    assert_same_frame(sinks_off, sinks_mem, rtol=1e-5, atol=1e-5)
    assert_same_frame(importance_off, importance_mem, rtol=1e-4, atol=1e-5)
    with capsys.disabled():
        layers_on_disk = sum(1 for v in offloaded["placement"].values() if v == "disk")
        print(f"\n[offload] gemma-3-270m, max_memory cpu=1000MiB: {layers_on_disk} modules on disk; peak RSS "
              f"{offloaded['peak_gib']:.2f} GiB offloaded vs {in_memory['peak_gib']:.2f} GiB in memory")
