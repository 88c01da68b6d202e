"""The head atlas: planted heads get exactly their roles, nulls keep decoys out, the page's data follows its
contract, options are validated, and the cheap paths equal their references.

The comparison with TransformerLens's ``detect_head`` is in ``test_head_detectors_tl.py``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

import interp
from interp.attribution.channels import composition_scores
from interp.attribution.head_atlas import (
    DEFAULT_THRESHOLDS,
    ROLE_RULES,
    ROLES,
    assign_roles,
    composition_from_grams,
    head_atlas,
    parse_roles,
    parse_thresholds,
    role_claimed,
    role_confidence,
)
from interp.attribution.head_detectors import (
    attention_detectors,
    copying_tokens,
    normalized_embedding,
    ordinal_sequences,
    ov_copying_scores,
    ov_factors,
    repeated_token_detectors,
    successor_scores,
)
from interp.attribution.sinks import attention_sinks
from interp.cli import main
from interp.errors import OptionError
from tests.unit.planted_heads import PLANTED, POSITIONAL_DECOY, PROMPTS, planted_model

ATLAS_KEYS = {"model", "n_layers", "n_heads", "metrics", "scores", "nulls", "labels", "confidence", "thresholds",
              "partners", "importance", "ships", "examples"}
FAST = dict(importance=False, ships_requests=0, partners=0, ov_null_samples=4, successor_null_samples=8,
            induction_sequences=4, progress=False)


@pytest.fixture(scope="module")
def planted():
    return planted_model()


@pytest.fixture(scope="module")
def planted_atlas(planted):
    return head_atlas(planted, PROMPTS, ships_requests=0, progress=False)


# ----------------------------------------------------------------------------------------------------
# Planted heads
# ----------------------------------------------------------------------------------------------------
def test_planted_heads_get_exactly_their_role_and_no_other_head_gets_it(planted_atlas):
    atlas = planted_atlas
    for (layer, head), role in PLANTED.items():
        assert role in atlas.labels[layer][head], (layer, head, role, atlas.labels)
        assert atlas.heads_with(role) == [(layer, head)], (role, atlas.heads_with(role))
    # no planted head carries another planted head's role (only the descriptive sink / diffuse may join)
    planted_roles = set(PLANTED.values())
    for (layer, head), role in PLANTED.items():
        assert planted_roles & set(atlas.labels[layer][head]) == {role}


def test_the_positional_decoy_scores_like_an_induction_head_but_its_null_keeps_it_out(planted_atlas):
    layer, head = POSITIONAL_DECOY
    score = float(planted_atlas.scores["induction"][layer, head])
    null = float(planted_atlas.nulls["induction"][layer, head])
    assert score > 2 * DEFAULT_THRESHOLDS["induction"]  # attends exactly to the induction target
    assert abs(score - null) < 0.02  # … and just as much when nothing repeats
    assert "induction" not in planted_atlas.labels[layer][head]
    assert float(planted_atlas.confidence["induction"][layer, head]) < 0.05


def test_planted_roles_hold_for_another_seed_of_the_random_heads():
    lm = planted_model(seed=1)
    atlas = head_atlas(lm, PROMPTS, **FAST)
    for (layer, head), role in PLANTED.items():
        assert atlas.heads_with(role) == [(layer, head)], (role, atlas.labels)


def test_planted_scores_are_near_their_ideal_values(planted_atlas):
    s = planted_atlas.scores
    assert float(s["previous_token"][0, 0]) > 0.95
    assert float(s["ov_copying"][0, 2]) > 0.99 and float(s["ov_copying"][0, 3]) < -0.99
    assert float(s["successor"][1, 3]) == 1.0
    assert float(s["induction"][1, 0]) > 0.6 and float(s["duplicate_token"][0, 1]) > 0.5
    assert float(s["attention_distance"][0, 0]) == pytest.approx(1.0, abs=1e-3)


# ----------------------------------------------------------------------------------------------------
# Detectors against independent references
# ----------------------------------------------------------------------------------------------------
def test_first_token_attention_equals_the_sinks_analysis(tiny_gpt2):
    texts = ["The cat sat on the mat and looked around.", "Dogs bark.", "A much longer prompt " * 4]
    ours = attention_detectors(tiny_gpt2, texts, max_tokens=32, batch_size=2, progress=False)
    sinks = attention_sinks(tiny_gpt2, texts, max_tokens=32, progress=False)
    assert torch.allclose(ours.scores["bos_attention"], sinks.bos_attention, atol=1e-6)


def test_scores_do_not_depend_on_batching_or_padding(tiny_llama):
    texts = ["a b a b c", "hello there hello", "xyzzy", "the the the the the the"]
    one = attention_detectors(tiny_llama, texts, batch_size=1, progress=False)
    many = attention_detectors(tiny_llama, texts, batch_size=4, progress=False)
    for name in one.scores:
        assert torch.allclose(one.scores[name], many.scores[name], atol=1e-6), name


def test_uniform_attention_null_equals_its_closed_form(tiny_gpt2):
    """The null of the previous-token score (mul, no exclusions) for a head attending uniformly:
    Σ_{q≥1} 1/(q+1) / n per sequence."""
    text = "abcdefghij"
    ours = attention_detectors(tiny_gpt2, [text], progress=False)
    n = len(tiny_gpt2.encode(text))
    expected = sum(1 / (q + 1) for q in range(1, n)) / n
    assert float(ours.nulls["previous_token"][0, 0]) == pytest.approx(expected, abs=1e-6)
    assert float(ours.nulls["bos_attention"][0, 0]) == pytest.approx(sum(1 / (q + 1) for q in range(n)) / n, abs=1e-6)


def test_examples_keep_each_heads_pattern_of_the_prompt_prefix(tiny_gpt2):
    texts = ["The first example prompt is here.", "Second one.", "Third prompt, a little longer than that."]
    ours = attention_detectors(tiny_gpt2, texts, n_examples=2, example_tokens=6, batch_size=2, progress=False)
    assert len(ours.examples) == 2
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(tiny_gpt2.n_layers)]
    for example, text in zip(ours.examples, texts, strict=False):
        ids = tiny_gpt2.encode(text)[:6]
        assert list(example.token_ids) == ids and example.prompt == text
        captured = tiny_gpt2.capture(tiny_gpt2.pad([ids]), names)
        reference = torch.stack([captured[name][0] for name in names])
        assert torch.allclose(example.patterns, reference, atol=1e-6)


def test_ov_copying_equals_the_eigenvalues_of_the_explicit_token_by_token_circuit(tiny_llama):
    lm = tiny_llama
    ours = ov_copying_scores(lm, n_tokens=50, null_samples=2)
    tokens = torch.tensor(copying_tokens(lm, 50))
    w_v, w_o = ov_factors(lm)
    with torch.no_grad():
        embed = normalized_embedding(lm, lm.W_E[tokens])
        unembed = lm.W_U[:, tokens].double()
    for layer in range(lm.n_layers):
        for head in range(lm.n_heads):
            circuit = embed @ w_v[layer, head] @ w_o[layer, head] @ unembed  # [tokens, tokens]
            eig = torch.linalg.eigvals(circuit)
            expected = float(eig.sum().real / eig.abs().sum())
            assert float(ours.score[layer, head]) == pytest.approx(expected, abs=1e-5)


def test_successor_score_counts_the_successor_ranked_first(planted):
    sequences = ordinal_sequences(planted)
    assert set(sequences) == {"numbers", "letters"}
    assert planted.token_strings(sequences["numbers"]) == list("123456789")
    scores = successor_scores(planted, null_samples=8)
    assert scores.details["items"] == 8 + 25
    assert float(scores.score[1, 3]) == 1.0 and float(scores.null[1, 3]) < 0.5


def test_repeated_token_null_is_the_score_without_repetition(tiny_gpt2):
    scores = repeated_token_detectors(tiny_gpt2, n_sequences=2, half_length=6, progress=False)
    assert set(scores.scores) == {"induction", "duplicate_token"}
    assert len(scores.token_rows) == 2 and all(len(r) == 12 for r in scores.token_rows)
    # the null is at least the uniform-attention score
    assert bool((scores.nulls["induction"] > 0).all())


def test_gram_composition_equals_the_svd_channels_composition_scores():
    for name in ("tiny-gpt2", "tiny-llama"):
        lm = interp.load_model(name)
        grams = composition_from_grams(lm, dtype=torch.float64)
        for mode in ("Q", "K", "V"):
            reference = composition_scores(lm, mode, baseline_samples=4, dtype=torch.float64).scores
            assert torch.allclose(grams[mode], reference, atol=1e-6), (name, mode)


# ----------------------------------------------------------------------------------------------------
# Roles, confidence, options
# ----------------------------------------------------------------------------------------------------
def test_role_rules_and_confidence():
    above = next(r for r in ROLE_RULES if r.role == "induction")
    negative = next(r for r in ROLE_RULES if r.role == "copy-suppression")
    below = next(r for r in ROLE_RULES if r.role == "local")
    v = torch.tensor([[0.9, 0.35, 0.2]])
    null = torch.tensor([[0.1, 0.34, 0.1]])
    assert role_claimed(above, v, null, 0.3).tolist() == [[True, False, False]]  # 0.35 is not beyond its null
    assert role_confidence(above, v, null)[0, 0].item() == pytest.approx(0.8 / 0.9, abs=1e-6)
    assert role_claimed(negative, -v, null, 0.3).tolist() == [[True, False, False]]
    assert role_claimed(below, torch.tensor([[1.0, 3.0]]), torch.tensor([[10.0, 10.0]]), 2.5).tolist() == [[True, False]]
    assert role_confidence(below, torch.tensor([[1.0]]), torch.tensor([[10.0]]))[0, 0].item() == pytest.approx(0.9)
    nan = torch.tensor([[float("nan")]])
    assert not role_claimed(above, nan, torch.tensor([[0.0]]), 0.3).any()


def test_local_is_not_given_to_previous_token_heads():
    shape = (1, 2)
    scores = {m: torch.zeros(shape) for m in DEFAULT_THRESHOLDS}
    nulls = {m: torch.zeros(shape) for m in DEFAULT_THRESHOLDS}
    scores["previous_token"] = torch.tensor([[0.9, 0.0]])
    nulls["previous_token"] = torch.full(shape, 0.05)
    scores["attention_distance"] = torch.tensor([[1.0, 1.5]])
    nulls["attention_distance"] = torch.full(shape, 10.0)
    labels, _ = assign_roles(scores, nulls, DEFAULT_THRESHOLDS)
    assert labels[0][0] == ("previous-token",) and labels[0][1] == ("local",)


@pytest.mark.parametrize("given, message", [
    ("inductionn=0.3", "unknown score name 'inductionn' in thresholds"),
    ("induction=1.5", "threshold for induction must be in (0, 1], got 1.5"),
    ("induction=0", "threshold for induction must be in (0, 1], got 0.0"),
    ("induction", "thresholds must look like"),
    ("induction=abc", "threshold for induction must be a number"),
    ({"attention_distance": -1}, "attention_distance must be a positive number of tokens"),
])
def test_bad_thresholds_are_one_line_option_errors(given, message):
    with pytest.raises(OptionError) as error:
        parse_thresholds(given)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_roles_option():
    assert parse_roles(None) == ROLES and parse_roles("all") == ROLES
    assert parse_roles(["diffuse", "sink"]) == ("sink", "diffuse")
    with pytest.raises(OptionError, match="unknown role 'heads'"):
        parse_roles("sink,heads")


def test_only_the_chosen_roles_are_assigned(planted):
    atlas = head_atlas(planted, PROMPTS, roles="induction", thresholds="induction=0.5", **FAST)
    assert atlas.roles == ("induction",)
    assert {r for layer in atlas.labels for cell in layer for r in cell} == {"induction"}
    assert atlas.thresholds["induction"] == 0.5
    assert atlas.to_json()["thresholds"]["induction"] == 0.5


@pytest.mark.parametrize("options, message", [
    (dict(error_measure="l2"), "unknown error measure 'l2'"),
    (dict(n_examples=5), "at most 4 example prompts"),
    (dict(example_tokens=64), "at most 4 example prompts of at most 48 tokens"),
    (dict(min_confidence=1.0), "min_confidence must be in (0, 1)"),
    (dict(importance_metric="kl"), "unknown importance metric 'kl'"),
    (dict(ov_null_samples=1), "ov-null-samples must be at least 2"),
])
def test_bad_atlas_options_are_one_line_errors(tiny_gpt2, options, message):
    with pytest.raises(OptionError) as error:
        head_atlas(tiny_gpt2, ["some text here"], **{**FAST, **options})
    assert message in str(error.value) and "\n" not in str(error.value)


def test_encoders_are_refused():
    with pytest.raises(OptionError, match="need a decoder"):
        head_atlas(interp.load_model("tiny-bert"), ["some text"], **FAST)


@pytest.mark.parametrize("args, message", [
    (["--thresholds", "inductio=0.4"], "unknown score name 'inductio' in thresholds"),
    (["--thresholds", "induction=2"], "threshold for induction must be in (0, 1], got 2.0"),
    (["--roles", "sink,inductive"], "unknown role 'inductive'"),
])
def test_command_line_bad_input_exits_2_with_one_line(args, message, capsys):
    code = main(["run", "head-atlas", "--model", "tiny-gpt2", "--max-prompts", "1", *args])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], captured.err
    assert "Traceback" not in captured.err + captured.out


# ----------------------------------------------------------------------------------------------------
# The page's data, the frame, the analysis
# ----------------------------------------------------------------------------------------------------
def test_atlas_dict_follows_the_page_contract(planted_atlas, planted):
    data = planted_atlas.to_json()
    assert set(data) == ATLAS_KEYS
    json.dumps(data, allow_nan=False)  # JSON-serialisable, no NaN
    n_layers, n_heads = planted.n_layers, planted.n_heads
    assert (data["n_layers"], data["n_heads"], data["model"]) == (n_layers, n_heads, planted.name)
    assert set(data["scores"]) == set(data["nulls"]) == set(data["metrics"])
    for grid in [*data["scores"].values(), *data["nulls"].values(), *data["confidence"].values(), data["importance"]]:
        assert len(grid) == n_layers and all(len(row) == n_heads for row in grid)
    assert set(data["confidence"]) == set(ROLES)
    assert set(data["thresholds"]) == set(DEFAULT_THRESHOLDS)
    assert data["ships"] is None  # no chat template in the byte tokenizer
    assert data["labels"][1][0] == ["induction"]
    for layer in data["partners"]:
        for head in layer:
            assert {p["mode"] for p in head} == {"Q", "K", "V"} and len(head) == 9
            assert all(set(p) == {"layer", "head", "mode", "score"} for p in head)
    assert 1 <= len(data["examples"]) <= 4
    for example in data["examples"]:
        n = len(example["tokens"])
        assert n <= 48 and isinstance(example["prompt"], str)
        patterns = np.array(example["patterns"], dtype=float)
        assert patterns.shape == (n_layers, n_heads, n, n)
        assert np.allclose(patterns.sum(-1), 1.0, atol=3e-3 * n)
        assert np.array_equal(np.round(patterns, 3), patterns)  # three decimals


def test_partners_are_the_top_composition_scores(planted_atlas, planted):
    grams = composition_from_grams(planted)
    k_partners = [p for p in planted_atlas.partners[1][0] if p.mode == "K"]
    writers = grams["K"][0, :, 1, 0]  # heads of layer 0 writing into 1.0's keys
    assert k_partners[0].layer == 0 and k_partners[0].head == int(writers.argmax())
    assert k_partners[0].head == 0  # the planted previous-token head feeds the induction head's keys
    assert k_partners[0].score == pytest.approx(float(writers.max()), abs=1e-6)


def test_frame_and_page_carry_the_same_numbers(planted_atlas, tmp_path):
    frame = planted_atlas.to_frame()
    assert list(frame.columns[:6]) == ["layer", "head", "position", "token", "metric", "value"]
    assert {"null_value", "label", "confidence"} <= set(frame.columns)
    assert frame["position"].isna().all() and frame["token"].isna().all()
    data = planted_atlas.to_json()
    for metric in data["metrics"]:
        rows = frame[frame["metric"] == metric]
        for row in rows.itertuples():
            assert row.value == pytest.approx(data["scores"][metric][row.layer][row.head], abs=1e-6)
            assert row.null_value == pytest.approx(data["nulls"][metric][row.layer][row.head], abs=1e-6)
    induction = frame[(frame["metric"] == "induction") & (frame["label"] == "induction")]
    assert [(int(r.layer), int(r.head)) for r in induction.itertuples()] == [(1, 0)]
    copying = frame[frame["metric"] == "ov_copying"].set_index(["layer", "head"])["label"]
    assert copying[(0, 2)] == "copying" and copying[(0, 3)] == "copy-suppression"
    path = tmp_path / "atlas.parquet"
    frame.to_parquet(path)
    back = pd.read_parquet(path)
    assert np.allclose(back["value"].to_numpy(), frame["value"].to_numpy(), equal_nan=True)


def test_summaries(planted_atlas):
    counts = planted_atlas.role_counts()
    assert set(counts) == set(ROLES)
    assert all(counts[role] == 1 for role in PLANTED.values())
    assert planted_atlas.unexplained_share() == pytest.approx(1 / 8)  # the decoy
    assert planted_atlas.unexplained_share(ignore=("diffuse",)) == pytest.approx(2 / 8)  # and the random 1.2
    table = planted_atlas.roles_frame()
    assert set(table["role"]) >= set(PLANTED.values())


def test_importance_join_ranks_the_induction_circuit_first(planted_atlas):
    importance = planted_atlas.importance
    assert importance is not None and tuple(importance.shape) == (2, 4)
    top = {divmod(int(i), 4) for i in importance.flatten().topk(2).indices}
    assert top == {(0, 0), (1, 0)}  # previous-token head and induction head


def test_ships_join_runs_where_there_is_a_chat_template_and_is_skipped_with_a_note_otherwise(tiny_gpt2, monkeypatch):
    atlas = head_atlas(tiny_gpt2, ["some prompt text"], **{**FAST, "ships_requests": 2})
    assert atlas.ships is None and any("no chat template" in note for note in atlas.notes)
    template = "{% for m in messages %}<{{ m['content'] }}>{% endfor %}{% if add_generation_prompt %}:{% endif %}"
    monkeypatch.setattr(tiny_gpt2.tokenizer, "chat_template", template, raising=False)
    atlas = head_atlas(tiny_gpt2, ["some prompt text"], **{**FAST, "ships_requests": 2})
    assert atlas.ships is not None and tuple(atlas.ships.shape) == (2, 4)
    assert bool((atlas.ships >= 0).all()) and not math.isnan(float(atlas.ships.sum()))


def test_the_analysis_runs_from_python_and_writes_the_page(tmp_path):
    result = interp.atlas("tiny-gpt2", prompts=["The cat sat on the mat.", "Dogs bark at the moon."],
                          progress=False, ov_null_samples=2, importance_sequences=1, examples=2, example_tokens=16)
    assert result.analysis == "head-atlas"
    assert set(result.metadata["atlas"]) == ATLAS_KEYS
    assert result.metadata["atlas"]["importance"] is not None
    assert len(result.metadata["atlas"]["examples"]) == 2
    assert "Heads per role" in result.tables
    html = result.to_html(tmp_path / "atlas.html").read_text(encoding="utf-8")
    assert "tiny-gpt2" in html and "interp-atlas" in html
    assert 'src="http' not in html and "<script src=" not in html  # self-contained
    result.to_parquet(tmp_path / "atlas.parquet")


def test_the_analysis_is_registered_with_its_options():
    from interp.registry import get_analysis

    spec = get_analysis("head-atlas")
    assert not spec.encoder_ok
    for option in ("thresholds", "roles", "include_bos", "error_measure", "min_confidence", "ships_requests"):
        assert option in spec.options
