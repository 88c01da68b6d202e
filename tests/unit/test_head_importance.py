"""Head-importance scores on tiny models, each checked against an independent computation.

* the fast ablation scan against the naive one-pass-per-head loop, for every ablation mode;
* gradient importance against a central finite difference of a head gate, in float64;
* attribution patching against exact patching of a tiny interpolation (its first-order regime);
* DLA: heads + biases + MLPs + embeddings sum to the model's own logit difference;
* AttentionInfluence against per-document losses computed one document at a time;
* a planted head that is the only route from a cue token to the answer is ranked first by every score.
"""

from __future__ import annotations

import json

import pytest
import torch

import interp
from interp.attribution.ablation_scan import ablation_scan, naive_ablation_scan
from interp.attribution.head_importance import head_importance, spearman
from interp.attribution.head_scores import (
    attribution_patching,
    direct_logit_attribution,
    gradient_importance,
    head_masking_loss_delta,
    induction_pattern_scores,
)
from interp.errors import InterpUserError, OptionError, PromptError
from interp.interventions import HeadReference, ablate_heads, cache_head_outputs, head_means
from interp.models import byte_tokenizer
from interp.tasks import Task, TaskExample, induction_task, task_from_file, task_from_rows

MODES_WITH_REFERENCE = ["zero", "mean", "resample", "scale_query", "uniform", "scale_output"]


@pytest.fixture(params=["tiny-gpt2", "tiny-llama"])
def lm(request, tiny_gpt2, tiny_llama):
    return tiny_gpt2 if request.param == "tiny-gpt2" else tiny_llama


@pytest.mark.parametrize("mode", MODES_WITH_REFERENCE)
def test_fast_scan_matches_the_naive_loop(lm, mode: str) -> None:
    task = induction_task(lm, n_sequences=3, half_length=6, seed=1)
    tt = task.tensors(lm)
    reference = {"mean": head_means(lm, ["some reference text", "and more of it"]),
                 "resample": cache_head_outputs(lm, tt.corrupted)}.get(mode)
    # max_rows=7 with 3 sequences stacks 2 heads per pass and splits each layer over two passes.
    fast = ablation_scan(lm, task, mode=mode, reference=reference, max_rows=7)
    naive = naive_ablation_scan(lm, task, mode=mode, reference=reference)
    for metric in fast.values:
        torch.testing.assert_close(fast.values[metric], naive.values[metric], atol=1e-4, rtol=0)
        assert fast.clean[metric] == pytest.approx(naive.clean[metric], abs=1e-5)
    assert float(fast.delta("loss").abs().max()) > 1e-3  # the ablations do something
    assert fast.forward_passes < naive.forward_passes


def test_fast_scan_handles_padding_and_head_subsets(tiny_llama) -> None:
    lm = tiny_llama
    rows = [{"prompt": "abc abc ab", "correct": "c", "incorrect": "x"},
            {"prompt": "hello hel", "correct": "l", "incorrect": "q"},
            {"prompt": "xyzw xyz", "correct": "w", "incorrect": "a"}]
    task = task_from_rows(lm, rows)
    heads = [(0, 3), (1, 0), (1, 2)]
    fast = ablation_scan(lm, task, heads=heads, max_rows=4)
    naive = naive_ablation_scan(lm, task, heads=heads)
    for metric in fast.values:
        torch.testing.assert_close(fast.values[metric], naive.values[metric], atol=1e-4, rtol=0, equal_nan=True)
    assert torch.isnan(fast.values["loss"][0, 0]) and not torch.isnan(fast.values["loss"][1, 2])


def test_gradient_importance_equals_finite_difference_of_a_gate_float64() -> None:
    lm = interp.load_model("tiny-gpt2", dtype="float64", reuse=False, seed=3)
    task = induction_task(lm, n_sequences=3, half_length=6, seed=2)
    tt = task.tensors(lm)
    scores = gradient_importance(lm, task)
    delta = 1e-5

    def per_example_loss(gate: float, head: tuple[int, int]) -> torch.Tensor:
        with ablate_heads(lm, [head], mode="scale_output", eps=gate), torch.inference_mode():
            logits = lm.forward(tt.batch).cpu()
        logprobs = torch.log_softmax(logits, dim=-1)
        rows = torch.arange(len(tt.batch))[:, None]
        picked = logprobs[rows, tt.target_positions, tt.target_tokens] * tt.target_mask
        return -picked.sum(1) / tt.target_mask.sum(1)

    for head in [(0, 0), (0, 3), (1, 1), (1, 2)]:
        finite = (per_example_loss(1 + delta, head) - per_example_loss(1 - delta, head)) / (2 * delta)
        expected = finite.abs().mean()
        assert float(scores.raw[head]) == pytest.approx(float(expected), rel=1e-4)
        torch.testing.assert_close(scores.per_example[:, head[0], head[1]].cpu(), finite, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(scores.normalized.norm(dim=1).cpu(), torch.ones(lm.n_layers, dtype=torch.float64))


def test_attribution_patching_is_the_first_order_term_of_exact_patching() -> None:
    lm = interp.load_model("tiny-llama", dtype="float64", reuse=False, seed=4)
    task = induction_task(lm, n_sequences=3, half_length=6, seed=3)
    tt = task.tensors(lm)
    clean, corrupted = cache_head_outputs(lm, tt.batch), cache_head_outputs(lm, tt.corrupted)

    def towards(t: float) -> HeadReference:  # a step of t from the clean head outputs towards the corrupted ones
        return HeadReference(z={layer: clean.z[layer] + t * (corrupted.z[layer] - clean.z[layer]) for layer in clean.z},
                             kind="per_example", count=len(tt.batch))

    def exact(t: float) -> torch.Tensor:
        return ablation_scan(lm, tt, mode="resample", reference=towards(t), metrics=("logit_diff",)).delta("logit_diff")

    # The derivative of exact patching at t = 0 by a central difference (error O(t²) ≈ 5e-6 here). A small step
    # keeps it first order, but not too small: the bridge backend's rotary attention (like Hugging Face's eager
    # Llama attention) takes its softmax in float32 even in a float64 model, a noise of ~1e-7 / t.
    t = 3e-3
    derivative = (exact(t) - exact(-t)) / (2 * t)
    estimate = attribution_patching(lm, tt, reference=towards(1.0), metric="logit_diff").estimate
    assert float(estimate.abs().max()) > 0.1  # heads differ by far more than the tolerance
    torch.testing.assert_close(estimate, derivative, rtol=1e-3, atol=1e-4)
    # Attribution patching is linear in the patch: the estimate of a step t is t times that of the full patch.
    small = attribution_patching(lm, tt, reference=towards(t), metric="logit_diff").estimate
    torch.testing.assert_close(small / t, estimate, rtol=1e-6, atol=1e-9)
    # At full strength the estimate is only an approximation, but it should still rank heads sensibly.
    full = attribution_patching(lm, tt, reference=corrupted).estimate
    full_exact = ablation_scan(lm, tt, mode="resample", reference=corrupted, metrics=("logit_diff",)).delta("logit_diff")
    assert spearman(full, full_exact) > 0.3


def perturb_biases_and_norms(hf) -> None:
    """Non-zero biases everywhere the Hugging Face model has one (GPT-2: attention, MLP and layer-norm biases;
    Llama has none) and non-unit norm gains, so every DLA component — and the folding of the norms into the
    weights — is exercised."""
    generator = torch.Generator().manual_seed(0)
    for parameter_name, parameter in hf.named_parameters():
        leaf = parameter_name.split(".")[-1]
        is_norm = any(part.startswith(("ln_", "norm", "post_attention_layernorm", "input_layernorm"))
                      for part in parameter_name.split("."))
        if leaf == "bias":
            parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
        elif is_norm and leaf == "weight":
            parameter.copy_(1.0 + 0.3 * torch.randn(parameter.shape, generator=generator))


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_dla_components_sum_to_the_logit_difference(name: str) -> None:
    lm = interp.load_model(name, reuse=False, seed=5, edit=perturb_biases_and_norms)
    task = induction_task(lm, n_sequences=3, half_length=6)
    dla = direct_logit_attribution(lm, task)
    assert dla.residual_error < 1e-4
    assert float(dla.heads.abs().max()) > 1e-3 and float(dla.mlp.abs().max()) > 1e-3
    # Independent of the decomposition: the logit difference itself, from the model's logits.
    tt = task.tensors(lm)
    with torch.inference_mode():
        logits = lm.forward(tt.batch).cpu()
    rows = torch.arange(len(tt.batch))
    last = logits[rows, tt.answer_positions]
    torch.testing.assert_close(dla.logit_diff.float(), (last[rows, tt.correct] - last[rows, tt.incorrect]).float(),
                               atol=1e-5, rtol=0)


def test_attention_influence_matches_one_document_at_a_time(tiny_gpt2) -> None:
    lm = tiny_gpt2
    texts = ["The first document is a little longer than the others.", "Short one.", "A third text here"]
    heads = [(0, 1), (1, 3)]
    frame = head_masking_loss_delta(lm, texts, heads, batch_size=2)

    def document_loss(batch) -> float:
        """Mean next-token cross-entropy of one unpadded document, from the model's logits."""
        logits = lm.forward(batch)[0].double().cpu()
        return float(torch.nn.functional.cross_entropy(logits[:-1], batch.tokens[0, 1:]))

    for index, text in enumerate(texts):
        batch = lm.pad([lm.encode(text)])
        with torch.inference_mode():
            base = document_loss(batch)
            with ablate_heads(lm, heads, "zero"):
                masked = document_loss(batch)
        row = frame.iloc[index]
        assert row["loss_base"] == pytest.approx(base, abs=1e-5)
        assert row["loss_masked"] == pytest.approx(masked, abs=1e-5)
        assert row["relative"] == pytest.approx((masked - base) / base, abs=1e-5)


def test_induction_scores_match_the_pattern_by_hand(tiny_gpt2) -> None:
    lm = tiny_gpt2
    task = induction_task(lm, n_sequences=2, half_length=5, seed=7)
    scores = induction_pattern_scores(lm, task)
    batch = task.tensors(lm).batch
    pattern = lm.capture(batch, ["blocks.1.attn.hook_pattern"])["blocks.1.attn.hook_pattern"][:, 2]  # [batch, q, k]
    by_hand = torch.stack([pattern[:, 6 + k, 2 + k] for k in range(4)]).mean()
    assert float(scores.induction[1, 2]) == pytest.approx(float(by_hand), abs=1e-6)
    prev = torch.stack([pattern[:, p, p - 1] for p in range(2, 6)]).mean()
    assert float(scores.previous_token[1, 2]) == pytest.approx(float(prev), abs=1e-6)


# ----------------------------------------------------------------------------------------------------
# A planted head
# ----------------------------------------------------------------------------------------------------
PLANTED = (1, 2)
CUES = "abcdef"
FILLERS = "0123456789"


def plant_cue_copier(hf) -> None:
    """An ``edit=`` for tiny GPT-2's Hugging Face weights: head 1.2 copies the token at position 1 (a cue) to
    the position of a trigger token '='.

    Residual dims: 0 marks position 0 (BOS), 1 marks position 1, 2 is constant, 3 marks the trigger, 4..9
    carry the cue identity (one per cue), 10..15 are the head's output, read by the unembedding of the
    cues. The head's query reads the constant (→ attends BOS, which carries nothing) and the trigger
    (→ attends position 1 twice as strongly); its values read the cue identity. Nothing else is changed,
    so the other heads and MLPs stay random.

    GPT-2 layout: ``c_attn.weight`` ``[d_model, 3·d_model]`` is used as ``x @ W`` (columns ``[0, d)`` queries,
    ``[d, 2d)`` keys, ``[2d, 3d)`` values; head h owns ``h·d_head … (h+1)·d_head`` of each block) and
    ``c_proj.weight`` rows ``h·d_head …`` are head h's ``W_O``. The unembedding is untied from the embedding
    here so that the cue read-out does not also write into the embeddings.
    """
    encode = lambda ch: byte_tokenizer()(ch, add_special_tokens=False)["input_ids"][0]  # noqa: E731
    s = 10.0
    hf.lm_head.weight = torch.nn.Parameter(hf.transformer.wte.weight.detach().clone())
    hf.config.tie_word_embeddings = False
    w_e, w_pos, w_u = hf.transformer.wte.weight, hf.transformer.wpe.weight, hf.lm_head.weight  # w_u: [vocab, d]
    w_e[:, :16] = 0.0
    w_pos[:, :16] = 0.0
    w_pos[0, 0] = s
    w_pos[1, 1] = s
    w_pos[:, 2] = s
    w_e[encode("="), 3] = s
    for j, cue in enumerate(CUES):
        w_e[encode(cue), 4 + j] = s
    layer, head = PLANTED
    attn = hf.transformer.h[layer].attn
    d_model = w_e.shape[1]
    d_head = d_model // hf.config.n_head
    q, k, v = (block * d_model + head * d_head for block in range(3))  # first column of the head's Q, K, V
    o = head * d_head  # first row of the head's W_O
    for first in (q, k, v):
        attn.c_attn.weight[:, first : first + d_head] = 0.0
        attn.c_attn.bias[first : first + d_head] = 0.0
    attn.c_proj.weight[o : o + d_head] = 0.0
    attn.c_attn.weight[2, q : q + 8] = 1.0
    attn.c_attn.weight[0, k : k + 8] = 1.0
    attn.c_attn.weight[3, q + 8 : q + d_head] = 1.0
    attn.c_attn.weight[1, k + 8 : k + d_head] = 2.0
    w_u[:, 10:16] = 0.0
    for j, cue in enumerate(CUES):
        attn.c_attn.weight[4 + j, v + j] = 1.0
        attn.c_proj.weight[o + j, 10 + j] = 5.0
        w_u[encode(cue), 10 + j] = 1.0


def planted_task(lm, n: int = 6) -> Task:
    encode = lambda ch: lm.encode(ch, prepend_bos=False)[0]  # noqa: E731
    generator = torch.Generator().manual_seed(0)
    examples = []
    for i in range(n):
        cue, other = CUES[i % len(CUES)], CUES[(i + 1) % len(CUES)]
        fill = "".join(FILLERS[int(x)] for x in torch.randint(0, 10, (5,), generator=generator))
        text = cue + fill + "="
        tokens = tuple(lm.encode(text))
        corrupted = tuple(lm.encode(other + fill + "="))
        last = len(tokens) - 1
        examples.append(TaskExample(tokens=tokens, targets=((last, encode(cue)),), answer_position=last,
                                    correct=encode(cue), incorrect=encode(other), corrupted=corrupted, text=text))
    return Task(name="planted", examples=tuple(examples))


def test_planted_head_is_ranked_first_by_every_score() -> None:
    lm = interp.load_model("tiny-gpt2", reuse=False, seed=11, edit=plant_cue_copier)
    task = planted_task(lm)
    # Documents in which the cue recurs after every trigger: the planted head predicts a third of their tokens.
    documents = [cue + "".join(f"{FILLERS[(3 * i + k) % 10]}{FILLERS[k]}={cue}" for k in range(4))
                 for i, cue in enumerate(CUES)]
    scores = head_importance(lm, task, documents=documents, influence_heads=[PLANTED])
    assert scores.scan.clean["accuracy"] == 1.0  # the mechanism works: the model answers the cue
    first = PLANTED[0] * lm.n_heads + PLANTED[1]
    ranked = {
        "ablation Δloss": scores.scan.importance("loss"),
        "ablation −Δlogit diff": scores.scan.importance("logit_diff"),
        "ablation KL": scores.scan.importance("kl"),
        "ablation −Δaccuracy": scores.scan.importance("accuracy"),
        "gradient (raw)": scores.gradient.raw,
        "exact patching": -scores.patching_exact,
        "attribution patching": -scores.patching_attribution,
        "DLA": scores.dla.mean_heads,
    }
    for name, values in ranked.items():
        assert int(values.flatten().argmax()) == first, f"{name} does not rank {PLANTED} first:\n{values}"
    # Michel's normalisation is per layer: the planted head leads its own layer.
    assert int(scores.gradient.normalized[PLANTED[0]].argmax()) == PLANTED[1]
    # AttentionInfluence: masking the planted head raises the documents' loss more than masking any other head.
    relative = {}
    for layer in range(lm.n_layers):
        for head in range(lm.n_heads):
            frame = head_masking_loss_delta(lm, documents, [(layer, head)])
            relative[(layer, head)] = float(frame["relative"].mean())
    assert max(relative, key=relative.get) == PLANTED
    assert relative[PLANTED] > 0


# ----------------------------------------------------------------------------------------------------
# Tasks, bad input, the registered analysis
# ----------------------------------------------------------------------------------------------------
def test_task_files_and_their_errors(tiny_gpt2, tmp_path) -> None:
    lm = tiny_gpt2
    jsonl = tmp_path / "task.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in [{"prompt": "ab ab", "correct": "a", "incorrect": "z"},
                                                       {"prompt": "cd c", "correct": "d", "incorrect": "q",
                                                        }]), encoding="utf-8")
    task = task_from_file(lm, jsonl)
    assert [e.correct for e in task.examples] == [lm.encode("a", prepend_bos=False)[0], lm.encode("d", prepend_bos=False)[0]]
    csv_file = tmp_path / "task.csv"
    csv_file.write_text("prompt,correct,incorrect,corrupted\nab ab,a,z,xy xy\n", encoding="utf-8")
    assert task_from_file(lm, csv_file).examples[0].corrupted == tuple(lm.encode("xy xy"))
    with pytest.raises(PromptError, match="exactly 1 token") as info:
        task_from_rows(lm, [{"prompt": "ab", "correct": "two", "incorrect": "z"}])
    assert "\n" not in str(info.value)
    with pytest.raises(PromptError, match="no rows"):
        task_from_rows(lm, [])
    with pytest.raises(PromptError, match="lacks column"):
        bad = tmp_path / "bad.csv"
        bad.write_text("prompt,answer\nx,y\n", encoding="utf-8")
        task_from_file(lm, bad)
    with pytest.raises(PromptError, match="does not exist"):
        task_from_file(lm, tmp_path / "missing.jsonl")


def test_bad_input_is_a_one_line_error(tiny_gpt2) -> None:
    lm = tiny_gpt2
    task = induction_task(lm, n_sequences=2, half_length=5)
    with pytest.raises(OptionError, match=r"layers 0\.\.1, heads 0\.\.3"):
        ablation_scan(lm, task, heads=[(0, 9)])
    with pytest.raises(OptionError, match=r"layers 0\.\.1"):
        ablation_scan(lm, task, heads=[(5, 0)])
    with pytest.raises(OptionError, match="choose from"):
        ablation_scan(lm, task, metrics=("bleu",))
    loss_only = Task(name="docs", examples=(TaskExample(tokens=(1, 70, 71, 72), targets=((1, 71), (2, 72))),))
    with pytest.raises(OptionError, match="only the loss"):
        ablation_scan(lm, loss_only, metrics=("logit_diff",))
    with pytest.raises(PromptError, match="empty"):
        head_masking_loss_delta(lm, [], [(0, 0)])
    with pytest.raises(OptionError, match="half_length"):
        induction_task(lm, half_length=1)
    with pytest.raises(InterpUserError, match="unknown task"):
        interp.run("head-importance", lm, task="nonsense", progress=False)


def test_analysis_runs_end_to_end_and_writes_html(tiny_gpt2, tmp_path) -> None:
    result = interp.run("head-importance", tiny_gpt2, prompts=["Some document text.", "Another document."],
                        n_sequences=2, half_length=6, progress=False)
    metrics = set(result.frame["metric"])
    assert {"ablation_delta_loss", "gradient_importance", "patching_exact", "patching_attribution", "dla",
            "induction_score", "previous_token_score", "influence_relative"} <= metrics
    assert result.metadata["summary"]["dla_residual_error"] < 1e-4
    path = result.to_html(tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    assert "Agreement between methods" in text and "Attribution patching vs exact patching" in text
