"""SVD channels and composition scores: exact identities, TransformerLens agreement, a planted channel."""

from __future__ import annotations

import math

import pytest
import torch

import interp
from interp.attribution.channel_interventions import (
    channel_traversal,
    edit_head_writes,
    project_out,
    repeated_token_rows,
    repeated_token_scores,
    scale_directions,
)
from interp.attribution.channels import (
    composition_scores,
    effective_rank,
    factored_svd,
    head_factors,
    head_svd,
    random_baseline,
    svd_channels,
)
from interp.errors import OptionError
from interp.models import LoadedModel, byte_tokenizer, load_model
from interp.models.tiny import tiny_hf_model

MARKER = byte_tokenizer()("#", add_special_tokens=False)["input_ids"][0]
LETTERS = byte_tokenizer()("abcdefghijklmnopqrstuvwxyz", add_special_tokens=False)["input_ids"]

# ----------------------------------------------------------------------------------------------------
# A tiny attention-only model with a planted K-composition channel
# ----------------------------------------------------------------------------------------------------

MARK_DIM, CONST_DIM, CHANNEL_DIM = 2, 3, 4
WRITER, READER = (0, 1), (1, 2)
D_MODEL, N_HEADS, D_HEAD = 64, 4, 16
#: rotary frequencies are base^(-i/8) for d_head 16: base 4⁸ makes pair 1 turn by θ = 1/4 per position (the
#: previous-token pair) and pair 7 by 4⁻⁷ ≈ 6e-5 (the reader's pair: position-free over a few dozen tokens).
ROPE_BASE, THETA, PREV_PAIR, STILL_PAIR = 4.0**8, 0.25, 1, 7
#: RMSNorm made exactly linear: in float32 ε = 2⁴⁰ swamps the mean square (< 2¹⁵ here), so x/√(ms + ε) is
#: x·2⁻²⁰ exactly, which the gain 2²⁰ undoes. The model therefore has no effective norms.
NORM_EPS, NORM_GAIN = 2.0**40, 2.0**20


def _save(hf, folder) -> str:
    hf.save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return str(folder)


def planted_channel_hf(seed: int = 0, sigma: float = 8.0, noise: float = 0.05):
    """A Llama (Hugging Face) that is attention-only and norm-free in effect (MLPs zero, norms linear, see
    ``NORM_EPS``). Head 0.1 is a previous-token head (through the rotary pair that turns by ``THETA``) whose
    dominant OV component reads the 'marker' dimension and writes the channel dimension with gain ``sigma``;
    head 1.2's key reads only the channel dimension and its query a constant one (through a rotary pair that
    barely turns), so 1.2 attends to the tokens right after a marker. Every other head is random but writes
    nothing into the reserved dimensions 0-7.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=259, hidden_size=D_MODEL, intermediate_size=16, num_hidden_layers=2,
                         num_attention_heads=N_HEADS, num_key_value_heads=N_HEADS, head_dim=D_HEAD,
                         max_position_embeddings=64, rms_norm_eps=NORM_EPS, rope_theta=ROPE_BASE,
                         tie_word_embeddings=False, bos_token_id=0, eos_token_id=1, pad_token_id=2,
                         attn_implementation="eager")
    config.architectures = ["LlamaForCausalLM"]
    hf = LlamaForCausalLM(config).eval()
    reserved = slice(0, 8)
    beta = 600.0
    gen = torch.Generator().manual_seed(seed)

    def heads(linear):  # q/k/v_proj [head·d_head, d_model] as per-head [d_model, d_head] views
        return linear.weight.view(N_HEADS, D_HEAD, D_MODEL).transpose(1, 2)

    def out_heads(linear):  # o_proj [d_model, head·d_head] as per-head [d_head, d_model] views
        return linear.weight.view(D_MODEL, N_HEADS, D_HEAD).permute(1, 2, 0)

    with torch.no_grad():
        for parameter in hf.parameters():
            parameter.zero_()  # MLPs and the unembedding stay zero
        embed = hf.model.embed_tokens.weight
        embed[:] = 0.5 * torch.randn(259, D_MODEL, generator=gen)
        embed[:, reserved] = 0.0
        embed[:, CONST_DIM] = 1.0
        embed[MARKER, MARK_DIM] = 1.0
        for norm in [hf.model.norm] + [n for layer in hf.model.layers
                                        for n in (layer.input_layernorm, layer.post_attention_layernorm)]:
            norm.weight[:] = NORM_GAIN
        for layer in hf.model.layers:  # random background heads that keep out of the reserved dims
            attn = layer.self_attn
            for linear in (attn.q_proj, attn.k_proj, attn.v_proj):
                linear.weight[:] = 0.2 * torch.randn(linear.weight.shape, generator=gen)
            attn.o_proj.weight[:] = 0.2 * torch.randn(attn.o_proj.weight.shape, generator=gen)
            attn.o_proj.weight[reserved] = 0.0
        writer = hf.model.layers[0].self_attn
        h = WRITER[1]
        w_q, w_k, w_v, w_o = heads(writer.q_proj), heads(writer.k_proj), heads(writer.v_proj), out_heads(writer.o_proj)
        w_q[h] = 0.0
        w_k[h] = 0.0
        # Rotary turns the pair (i, i + d_head/2) by position·θ: a query at angle -θ meets a key at angle 0 best
        # when the key is one position earlier, so the query at t looks for position t-1.
        w_q[h, CONST_DIM, PREV_PAIR] = math.sqrt(beta) * math.cos(-THETA)
        w_q[h, CONST_DIM, PREV_PAIR + D_HEAD // 2] = math.sqrt(beta) * math.sin(-THETA)
        w_k[h, CONST_DIM, PREV_PAIR] = math.sqrt(beta)
        w_v[h] = noise * torch.randn(D_MODEL, D_HEAD, generator=gen)
        w_v[h, :, 0] = 0.0
        w_v[h, MARK_DIM, 0] = 1.0
        w_o[h] = noise * torch.randn(D_HEAD, D_MODEL, generator=gen)
        w_o[h, 0] = 0.0
        w_o[h, 0, CHANNEL_DIM] = sigma
        reader = hf.model.layers[1].self_attn
        r = READER[1]
        r_q, r_k = heads(reader.q_proj), heads(reader.k_proj)
        r_q[r] = 0.0
        r_k[r] = 0.0
        r_q[r, CONST_DIM, STILL_PAIR] = 2.5
        r_k[r, CHANNEL_DIM, STILL_PAIR] = 2.5
    return hf


def planted_channel_model(folder, **kwargs) -> LoadedModel:
    """:func:`planted_channel_hf` saved to ``folder`` and loaded on the backend under test."""
    return load_model(_save(planted_channel_hf(**kwargs), folder), reuse=False)


def marker_rows(lm: LoadedModel, n: int = 6, length: int = 22, seed: int = 0) -> tuple[list[list[int]], list[list[int]]]:
    """Random byte rows (BOS first) with two markers each; returns rows and the positions right after a marker."""
    gen = torch.Generator().manual_seed(seed)
    rows, targets = [], []
    for _ in range(n):
        body = [LETTERS[i] for i in torch.randint(0, len(LETTERS), (length,), generator=gen).tolist()]
        spots = sorted(torch.randperm(length - 6, generator=gen)[:2].add(2).tolist())
        for spot in spots:
            body[spot] = MARKER
        rows.append([int(lm.bos_token_id)] + body)
        targets.append([s + 2 for s in spots])  # +1 for BOS, +1 for "right after"
    return rows, targets


def attention_after_marker(lm: LoadedModel, rows: list[list[int]], targets: list[list[int]]) -> float:
    """Mean attention reader 1.2 puts on after-marker positions, over queries after the first one."""
    batch = lm.pad(rows)
    captured = {}

    def grab(pattern, hook):
        captured["p"] = pattern[:, READER[1]].detach()

    lm.forward(batch, fwd_hooks=[("blocks.1.attn.hook_pattern", grab)])
    totals = []
    for row, positions in enumerate(targets):
        for query in range(positions[0], len(rows[row])):
            totals.append(float(captured["p"][row, query, [p for p in positions if p <= query]].sum()))
    return sum(totals) / len(totals)


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> LoadedModel:
    return planted_channel_model(tmp_path_factory.mktemp("planted-channel"))


def test_planted_model_is_attention_only_in_effect(planted):
    """The construction's premise: every block adds its attention output to its input and nothing else."""
    rows, _ = marker_rows(planted, n=2)
    batch = planted.pad(rows)
    names = [f"blocks.{layer}.{n}" for layer in range(2) for n in ("hook_resid_pre", "hook_attn_out", "hook_resid_post")]
    acts = planted.capture(batch, names)
    for layer in range(2):
        resid = acts[f"blocks.{layer}.hook_resid_pre"] + acts[f"blocks.{layer}.hook_attn_out"]
        assert torch.allclose(acts[f"blocks.{layer}.hook_resid_post"], resid, atol=1e-5)


def test_only_the_marker_token_carries_the_marker_dimension_in_the_loaded_model(planted):
    """The planted channel starts at the marker: the model's own tokenizer must turn '#' into ``MARKER``, and
    in the loaded model (processing included) only that token's embedding may carry the marker dimension,
    which the writer head reads; otherwise the channel tests below would probe an empty mechanism."""
    text = "ab#cd#e"
    ids = planted.encode(text)
    assert [i for i, t in enumerate(ids) if t == MARKER] == [3, 6]  # BOS, a, b, # …
    embed = planted.capture(planted.tokenize([text]), ["hook_embed"])["hook_embed"][0]
    carries = (embed[:, MARK_DIM].abs() > 0.5).nonzero().flatten().tolist()
    assert carries == [3, 6]
    assert torch.allclose(planted.W_E[:, MARK_DIM].abs().topk(2).values, torch.tensor([1.0, 0.0]), atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# SVD and exact identities
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["OV", "QK"])
def test_factored_svd_reconstructs_the_head_matrices_and_components_sum_to_them(tiny_gpt2, which):
    svd = head_svd(tiny_gpt2, which)
    w = tiny_gpt2.head_weights(1)
    full = ((w.W_V[2] @ w.W_O[2]) if which == "OV" else (w.W_Q[2] @ w.W_K[2].T)).cpu()
    rebuilt = svd.U[1, 2] @ torch.diag(svd.S[1, 2]) @ svd.Vh[1, 2]
    assert torch.allclose(rebuilt, full.detach(), atol=1e-5)
    summed = sum(svd.component(1, 2, i) for i in range(svd.S.shape[-1]))
    assert torch.allclose(summed, full.detach(), atol=1e-5)
    # singular values agree with a dense SVD of the formed matrix
    assert torch.allclose(svd.S[1, 2], torch.linalg.svdvals(full.detach().double()).float()[:16], atol=1e-5)
    # write directions are orthonormal
    gram = svd.Vh[1, 2] @ svd.Vh[1, 2].T
    assert torch.allclose(gram, torch.eye(16), atol=1e-5)


@pytest.mark.parametrize("model_name", ["tiny-gpt2", "tiny-llama"])
@pytest.mark.parametrize("mode", ["Q", "K", "V"])
def test_composition_scores_match_transformer_lens(model_name, mode):
    lm = interp.load_model(model_name)
    ours = composition_scores(lm, mode, effective=False, baseline_samples=5).scores
    reference = lm.native_model().all_composition_scores(mode).detach().cpu()  # TransformerLens's own function
    assert float((ours - reference).abs().max()) < 1e-5


@pytest.mark.parametrize("mode", ["Q", "K", "V"])
def test_full_score_squared_is_the_sigma_weighted_sum_of_component_scores(tiny_llama, mode):
    scores = composition_scores(tiny_llama, mode, baseline_samples=5)
    sigma_sq = scores.writer_singular_values.double().pow(2)
    lhs = scores.scores.double().pow(2) * sigma_sq.sum(-1)[:, :, None, None]
    rhs = (scores.component_scores.double().pow(2) * sigma_sq[..., None, None]).sum(dim=2)
    assert torch.allclose(lhs, rhs, atol=1e-7)
    share = scores.contribution_share((0, 1), (1, 3))
    assert abs(float(share.sum()) - 1.0) < 1e-5


@pytest.mark.parametrize("mode", ["Q", "K", "V"])
def test_component_scores_match_a_brute_force_with_formed_matrices(tiny_gpt2, mode):
    scores = composition_scores(tiny_gpt2, mode, baseline_samples=5)
    ov = head_svd(tiny_gpt2, "OV")
    w = tiny_gpt2.head_weights(1)
    reader = {"Q": w.W_Q[3] @ w.W_K[3].T, "K": (w.W_Q[3] @ w.W_K[3].T).T,
              "V": w.W_V[3] @ w.W_O[3]}[mode].detach().double().cpu()
    for i in (0, 5, 15):
        component = ov.component(0, 2, i).double()
        expected = (component @ reader).norm() / (component.norm() * reader.norm())
        assert abs(float(scores.component_scores[0, 2, i, 1, 3]) - float(expected)) < 1e-5


def test_gqa_readers_use_their_own_kv_head(tiny_llama):
    """Query head 3 of a 2-KV-head layer reads keys through the shared KV head 1 (not an average).

    The reference is the Hugging Face model itself (the same seeded weights, k_proj/v_proj unexpanded), with the
    input norm's gain folded in as TransformerLens's fold_ln does (it is 1 at initialisation)."""
    hf = tiny_hf_model("tiny-llama", seed=0)
    d_head = tiny_llama.d_head

    def kv_head(layer: int, which: str, group: int) -> torch.Tensor:  # [d_model, d_head]
        block = hf.model.layers[layer]
        weight = getattr(block.self_attn, f"{which}_proj").weight[group * d_head:(group + 1) * d_head]
        return (weight * block.input_layernorm.weight[None, :]).T.detach()

    def q_head(layer: int, head: int) -> torch.Tensor:
        block = hf.model.layers[layer]
        weight = block.self_attn.q_proj.weight[head * d_head:(head + 1) * d_head]
        return (weight * block.input_layernorm.weight[None, :]).T.detach()

    def o_head(layer: int, head: int) -> torch.Tensor:  # [d_head, d_model]
        return hf.model.layers[layer].self_attn.o_proj.weight[:, head * d_head:(head + 1) * d_head].T.detach()

    left, right = head_factors(tiny_llama, "QK", effective=False)
    right = right.cpu()
    assert torch.allclose(right[1, 3], kv_head(1, "k", 1).T, atol=1e-6)
    assert torch.allclose(right[1, 2], kv_head(1, "k", 1).T, atol=1e-6)
    assert torch.allclose(right[1, 0], kv_head(1, "k", 0).T, atol=1e-6)
    assert not torch.allclose(right[1, 0], right[1, 3], atol=1e-3)
    scores = composition_scores(tiny_llama, "K", baseline_samples=5)
    writer = (kv_head(0, "v", 0) @ o_head(0, 1)).double()  # head 0.1 shares KV head 0
    reader = (q_head(1, 3) @ kv_head(1, "k", 1).T).double()
    expected = (writer @ reader.T).norm() / (writer.norm() * reader.norm())
    assert abs(float(scores.scores[0, 1, 1, 3]) - float(expected)) < 1e-5


def test_effective_rank_of_known_spectra():
    assert abs(float(effective_rank(torch.ones(16))) - 16.0) < 1e-9
    assert abs(float(effective_rank(torch.tensor([3.0, 0, 0, 0]))) - 1.0) < 1e-9
    assert float(effective_rank(torch.zeros(4))) == 0.0


def test_random_baseline_matches_theory_and_a_dense_simulation():
    baseline = random_baseline(48, 8, 8, samples=300, seed=1)
    assert abs(baseline.mean_square * 48 - 1.0) < 0.06  # E[score²] = 1/d_model exactly
    assert abs(baseline.component_mean**2 - 1 / 48) < 0.01
    gen = torch.Generator().manual_seed(7)
    shape = (300, 48, 8)
    a = torch.randn(shape, generator=gen, dtype=torch.float64) @ torch.randn(shape, generator=gen, dtype=torch.float64).mT
    b = torch.randn(shape, generator=gen, dtype=torch.float64) @ torch.randn(shape, generator=gen, dtype=torch.float64).mT
    dense = (a @ b).norm(dim=(-2, -1)) / (a.norm(dim=(-2, -1)) * b.norm(dim=(-2, -1)))
    standard_error = float(dense.std()) / math.sqrt(300)
    assert abs(baseline.mean - float(dense.mean())) < 6 * standard_error
    assert 0.7 < baseline.std / float(dense.std()) < 1.4


def test_bad_inputs_raise_one_line_errors(tiny_gpt2):
    with pytest.raises(OptionError, match="mode"):
        composition_scores(tiny_gpt2, "X")
    with pytest.raises(OptionError, match="does not exist"):
        with project_out(tiny_gpt2, 5, 0, torch.eye(64)[:1]):
            pass
    with pytest.raises(OptionError, match="earlier layer"):
        channel_traversal(tiny_gpt2, repeated_token_rows(tiny_gpt2, 1, 4), (1, 0), (0, 1), torch.ones(64), [0.0],
                          positions=[2])
    with pytest.raises(OptionError, match="samples"):
        random_baseline(16, 4, 4, samples=1)


# ----------------------------------------------------------------------------------------------------
# Edits of what a head writes
# ----------------------------------------------------------------------------------------------------


def _capture(lm, batch, names):
    captured = {}

    def grab(value, hook):
        captured[hook.name] = value.detach().clone()

    lm.forward(batch, fwd_hooks=[(name, grab) for name in names])
    return captured


def test_project_out_removes_exactly_the_projection_of_the_head_output(tiny_gpt2):
    batch = tiny_gpt2.tokenize(["The planted channel test.", "Another prompt"])
    clean = _capture(tiny_gpt2, batch, ["blocks.0.attn.hook_z", "blocks.0.hook_attn_out"])
    directions = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))
    basis, _ = torch.linalg.qr(directions.T)
    basis = basis.to(tiny_gpt2.device)
    head_out = clean["blocks.0.attn.hook_z"][:, :, 1] @ tiny_gpt2.head_weights(0).W_O[1].to(tiny_gpt2.device)
    expected = clean["blocks.0.hook_attn_out"] - head_out @ basis @ basis.T
    with project_out(tiny_gpt2, 0, 1, directions):
        edited = _capture(tiny_gpt2, batch, ["blocks.0.hook_attn_out"])
    assert torch.allclose(edited["blocks.0.hook_attn_out"], expected, atol=1e-5)
    # hooks are gone afterwards
    again = _capture(tiny_gpt2, batch, ["blocks.0.hook_attn_out"])
    assert torch.equal(again["blocks.0.hook_attn_out"], clean["blocks.0.hook_attn_out"])
    with scale_directions(tiny_gpt2, 0, 1, directions, 2.0):
        doubled = _capture(tiny_gpt2, batch, ["blocks.0.hook_attn_out"])
    assert torch.allclose(doubled["blocks.0.hook_attn_out"], clean["blocks.0.hook_attn_out"] + head_out @ basis @ basis.T,
                          atol=1e-5)


def post_norm_hf(seed: int = 3):
    """A tiny Gemma 3 (Hugging Face): post-attention RMSNorm and q/k norms, with gains made far from 1."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(vocab_size=259, hidden_size=32, intermediate_size=16, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=4, head_dim=8, max_position_embeddings=32,
                              bos_token_id=0, eos_token_id=1, pad_token_id=2, attn_implementation="eager")
    config.architectures = ["Gemma3ForCausalLM"]
    torch.manual_seed(seed)
    hf = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():  # Gemma's norms compute x·(1 + w)
        hf.model.layers[0].post_attention_layernorm.weight[:] = torch.rand(32) * 3 - 1
        hf.model.layers[0].input_layernorm.weight[:] = torch.rand(32) - 0.5
        hf.model.layers[1].self_attn.q_norm.weight[:] = torch.rand(8) - 0.5
        hf.model.layers[1].self_attn.k_norm.weight[:] = torch.rand(8) - 0.5
    return hf


def test_head_shares_sum_to_the_attention_output_under_a_post_attention_norm(tmp_path, backend_name):
    """With Gemma-3-style post-attention RMSNorm, the per-head shares used by the edits add up exactly."""
    if backend_name == "hooked":
        pytest.skip("the hooked backend loads Gemma 3 only under TransformerLens's official names (hard-coded "
                    "configs), so a tiny Gemma 3 with a post-attention norm exists on the bridge backend only")
    hf = post_norm_hf()
    lm = load_model(_save(hf, tmp_path / "post-norm"), reuse=False)
    assert lm.facts.post_attn_norm and lm.facts.qk_norm
    batch = lm.tokenize(["post norm shares"])
    shares = {}

    def record(head):
        def edit(share):
            shares[head] = share.detach().clone()
            return torch.zeros_like(share)
        return edit

    with edit_head_writes(lm, {(0, h): record(h) for h in range(4)}):
        out = _capture(lm, batch, ["blocks.0.hook_attn_out", "blocks.0.ln1_post.hook_scale"])
    weights = lm.head_weights(0)
    post_gain = 1 + hf.model.layers[0].post_attention_layernorm.weight.detach()  # from the HF model itself
    assert torch.allclose(weights.post_gain.cpu(), post_gain, atol=1e-6)
    b_o_share = weights.b_O.to(lm.device) / out["blocks.0.ln1_post.hook_scale"] * post_gain.to(lm.device)
    assert torch.allclose(sum(shares.values()) + b_o_share, out["blocks.0.hook_attn_out"], atol=1e-5)
    # ... and without the post-norm (the raw z W_O) they would not
    raw = out["blocks.0.hook_attn_out"] * out["blocks.0.ln1_post.hook_scale"] / post_gain.to(lm.device)
    assert not torch.allclose(sum(shares.values()), raw, atol=1e-2)
    # the effective OV folds the post-norm gain; the effective QK folds the q/k-norm gains. Reference: the HF
    # weights (o_proj/v_proj per head; the input norm's gain folded into W_V/W_Q/W_K where fold_ln is on)
    d_head = 8

    def per_head(layer, name, head):
        block = hf.model.layers[layer]
        weight = getattr(block.self_attn, name).weight.detach()
        if name == "o_proj":
            return weight[:, head * d_head:(head + 1) * d_head].T
        gain = (1 + block.input_layernorm.weight.detach()) if lm.info.processing.get("fold_ln") else 1.0
        return (weight[head * d_head:(head + 1) * d_head] * gain).T  # unprocessed backends keep the raw weights

    left, right = head_factors(lm, "OV")
    expected_ov = per_head(0, "v_proj", 1) @ per_head(0, "o_proj", 1) * post_gain
    assert torch.allclose((left[0, 1] @ right[0, 1]).cpu(), expected_ov, atol=1e-6)
    q_left, q_right = head_factors(lm, "QK")
    attn1 = hf.model.layers[1].self_attn
    q_gain, k_gain = 1 + attn1.q_norm.weight.detach(), 1 + attn1.k_norm.weight.detach()
    expected_qk = (per_head(1, "q_proj", 0) * q_gain) @ (per_head(1, "k_proj", 0) * k_gain).T
    assert torch.allclose((q_left[1, 0] @ q_right[1, 0]).cpu(), expected_qk, atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# The planted channel
# ----------------------------------------------------------------------------------------------------


def test_planted_pair_has_the_top_k_composition_and_one_component_carries_it(planted):
    channels = svd_channels(planted, modes=("K",), baseline_samples=50)
    k_comp = channels.composition["K"]
    (writer, reader, score), *_ = k_comp.top_pairs(3)
    assert (writer, reader) == (WRITER, READER)
    assert score > 0.95
    assert float(k_comp.z[WRITER + READER]) > 10
    share = k_comp.contribution_share(WRITER, READER)
    assert int(share.argmax()) == 0 and float(share[0]) > 0.99
    assert float(k_comp.component_scores[WRITER[0], WRITER[1], 0, READER[0], READER[1]]) > 0.99
    assert float(k_comp.component_scores[WRITER[0], WRITER[1], 1:, READER[0], READER[1]].max()) < 0.5
    # the writer's top write direction is the channel dimension
    assert abs(float(channels.ov.Vh[WRITER][0, CHANNEL_DIM])) > 0.999


def test_planted_writer_is_found_as_a_previous_token_head(planted):
    rows = [[0] + list(range(40, 52)) * 2 for _ in range(2)]
    scores = repeated_token_scores(planted, rows=rows)
    assert float(scores.previous_token[WRITER]) > 0.95
    assert scores.top("previous_token", 1)[0][0] == WRITER


def test_removing_the_channel_component_removes_the_reader_behaviour_but_a_random_direction_does_not(planted):
    rows, targets = marker_rows(planted)
    clean = attention_after_marker(planted, rows, targets)
    ov = head_svd(planted, "OV")
    with project_out(planted, *WRITER, ov.Vh[WRITER][0:1]):
        removed = attention_after_marker(planted, rows, targets)
    gen = torch.Generator().manual_seed(0)
    random_effects = []
    for _ in range(5):
        with project_out(planted, *WRITER, torch.randn(1, 64, generator=gen)):
            random_effects.append(attention_after_marker(planted, rows, targets))
    with project_out(planted, *WRITER, ov.Vh[WRITER][1:2]):
        other_component = attention_after_marker(planted, rows, targets)
    uniform = attention_after_marker_uniform(rows, targets)
    assert clean > 0.9
    assert abs(removed - uniform) < 0.05  # back to uniform causal attention
    assert min(random_effects) > clean - 0.1
    assert abs(other_component - clean) < 0.02


def attention_after_marker_uniform(rows, targets) -> float:
    totals = []
    for row, positions in enumerate(targets):
        for query in range(positions[0], len(rows[row])):
            totals.append(sum(1 for p in positions if p <= query) / (query + 1))
    return sum(totals) / len(totals)


def test_traversal_along_the_channel_moves_the_reader_attention(planted):
    rows, _ = marker_rows(planted, n=4, seed=3)
    ov = head_svd(planted, "OV")
    direction = ov.Vh[WRITER][0]
    sign = float(direction[CHANNEL_DIM].sign())
    traversal = channel_traversal(planted, rows, WRITER, READER, sign * direction, [-8.0, 0.0, 8.0, 16.0],
                                  positions=[6])
    attention = traversal.attention_to_positions
    assert float(attention[2]) > float(attention[1]) + 0.2
    assert float(attention[3]) > 0.8
    assert float(attention[0]) < float(attention[1])
    assert float(traversal.shift[1]) < 1e-6  # α = 0 changes nothing
    orthogonal = torch.zeros(64)
    orthogonal[10] = 1.0  # a dimension the reader does not read
    flat = channel_traversal(planted, rows, WRITER, READER, orthogonal, [16.0], positions=[6])
    assert float(flat.shift[0]) < 1e-6


def test_repeated_token_scores_match_a_brute_force(tiny_gpt2):
    rows = repeated_token_rows(tiny_gpt2, 3, 7, seed=2)
    scores = repeated_token_scores(tiny_gpt2, rows=rows)
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(2)]
    cache = tiny_gpt2.capture(tiny_gpt2.pad(rows), names)
    for layer in range(2):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"].double().cpu()  # [b, h, q, k]
        prev = torch.stack([pattern[:, :, t, t - 1] for t in range(2, 15)], -1).mean(dim=(0, 2))
        induction = torch.stack([pattern[:, :, t, t - 6] for t in range(8, 15)], -1).mean(dim=(0, 2))
        assert torch.allclose(scores.previous_token[layer].double(), prev, atol=1e-6)
        assert torch.allclose(scores.induction[layer].double(), induction, atol=1e-6)


def test_singular_vector_signs_are_canonical_whatever_the_solver_returns():
    """The SVD's sign choice is the solver's (CPU LAPACK and CUDA differ); factored_svd fixes it: negating the
    left factor flips U and leaves Vh alone, and every Vh row's largest-magnitude entry is positive."""
    generator = torch.Generator().manual_seed(0)
    left, right = torch.randn(3, 32, 8, generator=generator), torch.randn(3, 8, 32, generator=generator)
    u, s, vh = factored_svd(left, right)
    u_neg, s_neg, vh_neg = factored_svd(-left, right)
    assert torch.allclose(vh_neg, vh, atol=1e-10) and torch.allclose(u_neg, -u, atol=1e-10)
    assert torch.allclose(s_neg, s)
    assert bool((vh.gather(-1, vh.abs().argmax(-1, keepdim=True)) > 0).all())
    assert torch.allclose(u @ torch.diag_embed(s) @ vh, (left @ right).double(), atol=1e-5)
