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
from interp.models import LoadedModel, ModelInfo, byte_tokenizer

MARKER = byte_tokenizer()("#", add_special_tokens=False)["input_ids"][0]
LETTERS = byte_tokenizer()("abcdefghijklmnopqrstuvwxyz", add_special_tokens=False)["input_ids"]

# ----------------------------------------------------------------------------------------------------
# A tiny attention-only model with a planted K-composition channel
# ----------------------------------------------------------------------------------------------------

POS_A, POS_B, MARK_DIM, CONST_DIM, CHANNEL_DIM = 0, 1, 2, 3, 4
WRITER, READER = (0, 1), (1, 2)


def _wrap(model, name: str) -> LoadedModel:
    cfg = model.cfg
    info = ModelInfo(name=name, source="test", origin="planted by hand", architecture="HookedTransformer (planted)",
                     dtype="float32", device="cpu", processing={}, prepend_bos=True,
                     n_params=sum(p.numel() for p in model.parameters()), n_layers=cfg.n_layers, n_heads=cfg.n_heads,
                     n_kv_heads=cfg.n_heads, d_model=cfg.d_model, d_head=cfg.d_head, n_ctx=cfg.n_ctx, is_encoder=False)
    return LoadedModel(model, byte_tokenizer(), info)


def planted_channel_model(seed: int = 0, sigma: float = 8.0, noise: float = 0.05) -> LoadedModel:
    """Attention-only, no norms. Head 0.1 is a previous-token head whose dominant OV component reads the
    'marker' dimension and writes the channel dimension with gain ``sigma``; head 1.2's key reads only
    the channel dimension and its query a constant one, so 1.2 attends to the tokens right after a marker.
    Every other head is random but writes nothing into the five reserved dimensions.
    """
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(seed)
    cfg = HookedTransformerConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, n_ctx=64, d_vocab=259, attn_only=True,
                                  normalization_type=None, act_fn=None, seed=seed, default_prepend_bos=True)
    model = HookedTransformer(cfg, tokenizer=byte_tokenizer(), default_padding_side="right")
    model.eval()
    reserved = slice(0, 8)
    theta, beta = 0.25, 600.0
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.embed.W_E[:] = 0.5 * torch.randn(259, 64, generator=gen)
        model.embed.W_E[:, reserved] = 0.0
        model.embed.W_E[:, CONST_DIM] = 1.0
        model.embed.W_E[MARKER, MARK_DIM] = 1.0
        positions = torch.arange(64, dtype=torch.float32)
        model.pos_embed.W_pos[:, POS_A] = torch.cos(theta * positions)
        model.pos_embed.W_pos[:, POS_B] = torch.sin(theta * positions)
        for block in model.blocks:  # random background heads that keep out of the reserved dims
            attn = block.attn
            attn.W_Q[:] = 0.2 * torch.randn(attn.W_Q.shape, generator=gen)
            attn.W_K[:] = 0.2 * torch.randn(attn.W_K.shape, generator=gen)
            attn.W_V[:] = 0.2 * torch.randn(attn.W_V.shape, generator=gen)
            attn.W_O[:] = 0.2 * torch.randn(attn.W_O.shape, generator=gen)
            attn.W_O[:, :, reserved] = 0.0
        writer = model.blocks[0].attn
        h = WRITER[1]
        writer.W_Q[h] = 0.0
        writer.W_K[h] = 0.0
        rotation = torch.tensor([[math.cos(-theta), math.sin(-theta)], [-math.sin(-theta), math.cos(-theta)]])
        writer.W_Q[h, POS_A:POS_B + 1, 0:2] = math.sqrt(beta) * rotation  # query at t looks for position t-1
        writer.W_K[h, POS_A:POS_B + 1, 0:2] = math.sqrt(beta) * torch.eye(2)
        writer.W_V[h] = noise * torch.randn(64, 16, generator=gen)
        writer.W_V[h, :, 0] = 0.0
        writer.W_V[h, MARK_DIM, 0] = 1.0
        writer.W_O[h] = noise * torch.randn(16, 64, generator=gen)
        writer.W_O[h, 0] = 0.0
        writer.W_O[h, 0, CHANNEL_DIM] = sigma
        reader = model.blocks[1].attn
        r = READER[1]
        reader.W_Q[r] = 0.0
        reader.W_K[r] = 0.0
        reader.W_Q[r, CONST_DIM, 0] = 2.5
        reader.W_K[r, CHANNEL_DIM, 0] = 2.5
    return _wrap(model, "planted-channel")


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
def planted() -> LoadedModel:
    return planted_channel_model()


def test_marker_token_id_is_the_hash_byte():
    assert byte_tokenizer().decode([MARKER]) == "#"


# ----------------------------------------------------------------------------------------------------
# SVD and exact identities
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["OV", "QK"])
def test_factored_svd_reconstructs_the_head_matrices_and_components_sum_to_them(tiny_gpt2, which):
    svd = head_svd(tiny_gpt2, which)
    attn = tiny_gpt2.model.blocks[1].attn
    full = ((attn.W_V[2] @ attn.W_O[2]) if which == "OV" else (attn.W_Q[2] @ attn.W_K[2].T)).cpu()
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
    reference = lm.model.all_composition_scores(mode).detach().cpu()
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
    attn = tiny_gpt2.model.blocks[1].attn
    reader = {"Q": attn.W_Q[3] @ attn.W_K[3].T, "K": (attn.W_Q[3] @ attn.W_K[3].T).T,
              "V": attn.W_V[3] @ attn.W_O[3]}[mode].detach().double().cpu()
    for i in (0, 5, 15):
        component = ov.component(0, 2, i).double()
        expected = (component @ reader).norm() / (component.norm() * reader.norm())
        assert abs(float(scores.component_scores[0, 2, i, 1, 3]) - float(expected)) < 1e-5


def test_gqa_readers_use_their_own_kv_head(tiny_llama):
    """Query head 3 of a 2-KV-head layer reads keys through the shared _W_K[1] (not an average)."""
    attn = tiny_llama.model.blocks[1].attn
    left, right = head_factors(tiny_llama, "QK", effective=False)
    assert torch.equal(right[1, 3], attn._W_K[1].detach().T)
    assert torch.equal(right[1, 2], attn._W_K[1].detach().T)
    assert torch.equal(right[1, 0], attn._W_K[0].detach().T)
    scores = composition_scores(tiny_llama, "K", baseline_samples=5)
    w0 = tiny_llama.model.blocks[0].attn
    writer = (w0._W_V[0] @ w0.W_O[1]).detach().double().cpu()  # head 0.1 shares KV head 0
    reader = (attn.W_Q[3] @ attn._W_K[1].T).detach().double().cpu()
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
    head_out = clean["blocks.0.attn.hook_z"][:, :, 1] @ tiny_gpt2.model.blocks[0].attn.W_O[1].detach()
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


def test_head_shares_sum_to_the_attention_output_under_a_post_attention_norm():
    """With Gemma-3-style post-attention RMSNorm, the per-head shares used by the edits add up exactly."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, n_ctx=32, d_vocab=259, attn_only=True,
                                  normalization_type="RMS", use_normalization_before_and_after=True,
                                  use_qk_norm=True, act_fn=None, seed=3, default_prepend_bos=True)
    model = HookedTransformer(cfg, tokenizer=byte_tokenizer(), default_padding_side="right")
    with torch.no_grad():
        model.blocks[0].ln1_post.w[:] = torch.rand(32) * 3
        model.blocks[1].attn.q_norm.w[:] = torch.rand(8) + 0.5
    lm = _wrap(model, "post-norm")
    batch = lm.tokenize(["post norm shares"])
    shares = {}

    def record(head):
        def edit(share):
            shares[head] = share.detach().clone()
            return torch.zeros_like(share)
        return edit

    with edit_head_writes(lm, {(0, h): record(h) for h in range(4)}):
        out = _capture(lm, batch, ["blocks.0.hook_attn_out", "blocks.0.ln1_post.hook_scale"])
    b_o_share = model.blocks[0].attn.b_O.detach() / out["blocks.0.ln1_post.hook_scale"] * model.blocks[0].ln1_post.w.detach()
    assert torch.allclose(sum(shares.values()) + b_o_share, out["blocks.0.hook_attn_out"], atol=1e-5)
    # the effective OV folds the post-norm gain; the effective QK folds the q/k-norm gains
    left, right = head_factors(lm, "OV")
    attn = model.blocks[0].attn
    assert torch.allclose(left[0, 1] @ right[0, 1], (attn.W_V[1] @ attn.W_O[1] * model.blocks[0].ln1_post.w).detach(), atol=1e-6)
    q_left, q_right = head_factors(lm, "QK")
    attn1 = model.blocks[1].attn
    expected_qk = (attn1.W_Q[0] * attn1.q_norm.w) @ (attn1.W_K[0] * attn1.k_norm.w).T
    assert torch.allclose(q_left[1, 0] @ q_right[1, 0], expected_qk.detach(), atol=1e-6)


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
    _, cache = tiny_gpt2.model.run_with_cache(torch.tensor(rows))
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
