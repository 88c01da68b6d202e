"""Token attributions, their agreement and their faithfulness, checked against independent references:
finite differences, plain forward passes with a hand-written hook, brute-force rollout and a linear-program
max-flow, hand-computed rank statistics, and models whose token dependence is planted."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

import interp
from interp.attribution.explanation_agreement import explanation_agreement, rank_agreement
from interp.attribution.explanation_faithfulness import explanation_faithfulness
from interp.attribution.token_attribution import (
    ATTENTION_METHODS,
    attention_flow,
    attention_rollout,
    rollout_matrices,
    token_attributions,
)
from interp.errors import OptionError, PromptError
from tests.unit.planted_tokens import plant_decider, plant_uniform

FAITHFUL = ("top_head", "saliency", "gradient_x_input", "integrated_gradients", "occlusion", "kernel_shap")


def pad_embedding(lm) -> torch.Tensor:
    """The pad token's embedding, read straight from the embedding matrix's hook on a one-token input."""
    batch = lm.pad([[lm.pad_token_id]])
    return lm.capture(batch, [lm.embedding_hook])[lm.embedding_hook][0, 0].clone()


def replace_with_pad(lm, positions):
    pad = pad_embedding(lm)

    def hook(activation, hook):
        out = activation.clone()
        out[:, list(positions)] = pad.to(out.dtype)
        return out

    return hook


def plain_logit(lm, text: str, target: int, zero_positions=()) -> float:
    """The target's logit at the last position from a full forward pass, with the tokens at
    ``zero_positions`` replaced by the pad token's embedding by a hook written here (not the module's)."""
    hooks = [(lm.embedding_hook, replace_with_pad(lm, zero_positions))] if zero_positions else []
    with torch.no_grad():
        logits = lm.forward(lm.tokenize([text]), fwd_hooks=hooks)
    return float(logits[0, -1, target])


def test_a_planted_deciding_token_is_ranked_first_by_every_faithful_method_and_the_planted_head_is_found():
    lm = plant_decider(position=2, head=1)
    prompts, targets = ["xkqwerty", "zmabcde", "hello world"], ["k", "m", "e"]
    result = token_attributions(lm, prompts, targets=targets)
    assert result.top_head == (0, 1)
    for method in FAITHFUL:
        for i in range(len(prompts)):
            assert int(np.nanargmax(result.scores[method][i])) == 2, (method, i, result.scores[method][i])


def test_uniform_attention_gives_flat_attention_scores_while_gradients_vary():
    lm = plant_uniform()
    result = token_attributions(lm, ["a planted prompt"], methods=("attention_last", "attention_mean", "saliency"))
    for method in ("attention_last", "attention_mean"):
        values = result.values(method, 0)
        assert np.allclose(values, 1.0 / len(result.tokens[0]), atol=1e-6)
    assert np.ptp(result.values("saliency", 0)) > 1e-3


def test_integrated_gradients_are_complete_against_a_plain_forward_pass():
    lm = interp.load_model("tiny-llama", dtype="float64", reuse=False)
    text = "an example"
    # the random tiny model is far from smooth along the path: 64 points leave a delta of 0.06, 256 of 1e-8
    result = token_attributions(lm, [text], targets="x", methods=("integrated_gradients",), steps=256)
    target = result.targets[0]
    n = len(result.tokens[0])
    full = plain_logit(lm, text, target)
    empty = plain_logit(lm, text, target, zero_positions=range(1, n))
    total = float(np.nansum(result.scores["integrated_gradients"][0]))
    assert abs(result.output[0] - full) < 1e-8
    assert abs(total - (full - empty) - result.convergence_delta[0]) < 1e-8
    assert abs(result.convergence_delta[0]) < 1e-6 * max(1.0, abs(full - empty))


def test_saliency_and_gradient_times_input_equal_finite_differences():
    lm = interp.load_model("tiny-gpt2", dtype="float64", reuse=False)
    text, eps = "finite", 1e-5
    result = token_attributions(lm, [text], targets="x", methods=("saliency", "gradient_x_input"))
    target, batch = result.targets[0], lm.tokenize([text])
    embedding = lm.capture(batch, [lm.embedding_hook])[lm.embedding_hook].clone()

    def logit(x):
        with torch.no_grad():
            return float(lm.forward(batch, fwd_hooks=[(lm.embedding_hook, lambda a, hook: x)])[0, -1, target])

    for position in (1, 3, len(result.tokens[0]) - 1):
        grad = torch.zeros(embedding.shape[-1], dtype=torch.float64)
        for d in range(embedding.shape[-1]):
            step = torch.zeros_like(embedding)
            step[0, position, d] = eps
            grad[d] = (logit(embedding + step) - logit(embedding - step)) / (2 * eps)
        assert abs(float(grad.norm()) - result.scores["saliency"][0][position]) < 1e-5
        along = torch.zeros_like(embedding)
        along[0, position] = embedding[0, position] * eps
        directional = (logit(embedding + along) - logit(embedding - along)) / (2 * eps)
        assert abs(directional - result.scores["gradient_x_input"][0][position]) < 1e-5


def test_occlusion_is_the_drop_when_one_token_is_replaced_by_the_baseline():
    lm = interp.load_model("tiny-llama")
    text = "occlude me"
    result = token_attributions(lm, [text], targets=("a", "b"), methods=("occlusion",))
    a, b = result.targets[0], result.contrasts[0]
    assert b is not None
    full = plain_logit(lm, text, a) - plain_logit(lm, text, b)
    for position in result.scored_positions(0):
        dropped = plain_logit(lm, text, a, [position]) - plain_logit(lm, text, b, [position])
        assert abs((full - dropped) - result.scores["occlusion"][0][position]) < 1e-4


def random_causal_patterns(n_layers=3, n_heads=2, n=4, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(n_layers, n_heads, n, n, generator=generator) + 0.05
    scores = scores * torch.tril(torch.ones(n, n))
    return scores / scores.sum(-1, keepdim=True)


def test_rollout_equals_the_sum_over_every_path_of_the_product_of_mixed_attention():
    patterns = random_causal_patterns()
    mixed = rollout_matrices(patterns).numpy()
    n_layers, n = mixed.shape[0], mixed.shape[-1]
    rollout = attention_rollout(patterns).numpy()
    for top, source in itertools.product(range(n), range(n)):
        total = 0.0
        for path in itertools.product(range(n), repeat=n_layers - 1):  # intermediate positions, layer 1 … L−1
            nodes = (source, *path, top)
            total += float(np.prod([mixed[layer, nodes[layer + 1], nodes[layer]] for layer in range(n_layers)]))
        assert abs(total - rollout[top, source]) < 1e-6


def test_attention_flow_equals_a_linear_program_max_flow():
    patterns = random_causal_patterns(seed=1)
    mixed = rollout_matrices(patterns).numpy()
    n_layers, n = mixed.shape[0], mixed.shape[-1]
    target = n - 1
    flows = attention_flow(patterns, target)
    edges = [(layer, j, i) for layer in range(n_layers) for i in range(n) for j in range(n) if mixed[layer, i, j] > 0]
    for source in range(n):
        # maximise the flow out of (0, source) subject to conservation at every inner node
        nodes = [(layer, p) for layer in range(n_layers + 1) for p in range(n)]
        inner = [v for v in nodes if v not in ((0, source), (n_layers, target))]
        a_eq = np.zeros((len(inner), len(edges)))
        for e, (layer, j, i) in enumerate(edges):
            tail, head = (layer, j), (layer + 1, i)
            if tail in inner:
                a_eq[inner.index(tail), e] -= 1
            if head in inner:
                a_eq[inner.index(head), e] += 1
        cost = np.array([-1.0 if (layer == 0 and j == source) else 0.0 for layer, j, _ in edges])
        bounds = [(0.0, float(mixed[layer, i, j])) for layer, j, i in edges]
        solution = linprog(cost, A_eq=a_eq, b_eq=np.zeros(len(inner)), bounds=bounds, method="highs")
        assert solution.status == 0
        assert abs(-solution.fun - flows[source]) < 1e-6


def test_rank_statistics_match_hand_computed_values():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    b = np.array([1.0, 3.0, 2.0, 4.0])
    tau, rho, overlap = rank_agreement(a, b, k=2)
    assert abs(tau - 4 / 6) < 1e-12  # 5 concordant pairs, 1 discordant
    assert abs(rho - 0.8) < 1e-12  # 1 − 6·Σd² / (n(n² − 1)) = 1 − 12/60
    assert overlap == 0.5  # top-2 {3, 2} vs {3, 1}
    assert rank_agreement(a, -a, k=4)[:2] == (-1.0, -1.0)
    assert all(np.isnan(v) for v in rank_agreement(a, np.ones(4), k=2)[:2])


def test_agreement_matrices_are_symmetric_with_a_unit_diagonal_and_skip_flat_rankings():
    lm = plant_uniform()
    result = token_attributions(lm, ["one prompt", "and another"], methods=("attention_last", "saliency", "occlusion"))
    agreement = explanation_agreement(result)
    spearman = agreement.matrix("spearman")
    assert np.allclose(spearman.to_numpy(), spearman.to_numpy().T, equal_nan=True)
    assert spearman.loc["saliency", "saliency"] == 1.0
    assert np.isnan(spearman.loc["attention_last", "saliency"])  # uniform attention has no ranking
    assert agreement.matrix("spearman", "count").loc["attention_last", "saliency"] == 0
    assert set(agreement.frame["metric"]) == {"kendall", "spearman", "top_k"}


def test_faithfulness_curves_read_the_probability_of_a_plain_forward_and_beat_the_random_floor():
    lm = plant_decider(position=2, head=1)
    prompts, targets = ["xkqwerty", "zmabcde"], ["k", "m"]
    result = token_attributions(lm, prompts, targets=targets, methods=("occlusion", "attention_last"))
    faith = explanation_faithfulness(lm, result, random_orders=4)
    curves = faith.curves
    for i, text in enumerate(prompts):
        with torch.no_grad():
            plain = lm.forward(lm.tokenize([text]))[0, -1].double().softmax(-1)[result.targets[i]]
        assert abs(faith.full_probability[i] - float(plain)) < 1e-5
        one = curves[(curves.prompt == i) & (curves.method == "occlusion") & (curves.kind == "deletion")
                     & (curves.n_tokens == 1)].probability.iloc[0]

        with torch.no_grad():
            removed = lm.forward(lm.tokenize([text]), fwd_hooks=[(lm.embedding_hook, replace_with_pad(lm, [2]))])[0, -1]
        assert abs(one - float(removed.double().softmax(-1)[result.targets[i]])) < 1e-5
        at_zero = curves[(curves.prompt == i) & (curves.kind == "deletion") & (curves.fraction == 0.0)]
        assert np.allclose(at_zero.probability, faith.full_probability[i])
    summary = faith.summary
    assert summary.loc["occlusion", "comprehensiveness"] > summary.loc["random", "comprehensiveness"]
    assert summary.loc["occlusion", "sufficiency"] < summary.loc["random", "sufficiency"]


def test_the_frame_is_tidy_and_leaves_out_special_tokens():
    lm = interp.load_model("tiny-gpt2")
    result = token_attributions(lm, ["ab", "abc"], methods=("rollout", "saliency"))
    frame = result.frame
    assert {"prompt", "position", "token", "method", "value"} <= set(frame.columns)
    assert frame.position.min() == 1  # BOS is not scored
    assert len(frame) == 2 * (2 + 3)


@pytest.mark.parametrize(("kwargs", "error", "words"), [
    (dict(methods=("saliency", "nope")), OptionError, "choose from attention_last"),
    (dict(targets="two"), PromptError, "exactly one token"),
    (dict(targets=("a", "b", "c")), PromptError, "(target, contrast)"),
    (dict(steps=0), OptionError, "steps must be between"),
])
def test_bad_input_gets_one_clear_line(kwargs, error, words):
    lm = interp.load_model("tiny-gpt2")
    with pytest.raises(error, match=None) as caught:
        token_attributions(lm, ["a prompt"], **kwargs)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_empty_prompts_and_an_encoder_without_a_mask_token_are_refused():
    with pytest.raises(PromptError, match="non-empty prompt"):
        token_attributions(interp.load_model("tiny-gpt2"), ["  "])
    with pytest.raises(PromptError, match="has no mask token"):
        token_attributions(interp.load_model("tiny-bert"), ["no mask here"], methods=ATTENTION_METHODS[:1])


def test_the_analysis_runs_on_a_tiny_model_and_escapes_prompt_text_in_its_report(tmp_path):
    hostile = "<script>alert(1)</script> and"
    result = interp.run("explanation-agreement", "tiny-gpt2", prompts=[hostile, "a b c d"], progress=False,
                        methods="attention_last,rollout,saliency,occlusion", random_orders=2)
    assert set(result.frame.loc[result.frame.metric == "attribution", "method"]) == {
        "attention_last", "rollout", "saliency", "occlusion"}
    assert {"spearman", "kendall", "top_k", "comprehensiveness", "sufficiency"} <= set(result.frame.metric)
    assert any("Spearman" in title for title in result.figures)
    page = result.to_html(tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in page
    assert page.count('class="interp-tattr"') == 1
