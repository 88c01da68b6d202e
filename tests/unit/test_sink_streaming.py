"""StreamingLLM's sink test: a planted sink matters where it is planted, and the key budgets are the ones
Hugging Face's own attention computes when given the same key sets as an explicit mask."""

from __future__ import annotations

import dataclasses
import importlib
import math

import pandas as pd
import pytest
import torch

import interp
from interp.attribution.sink_streaming import sink_streaming
from interp.cli import main
from interp.data import shipped_path
from interp.errors import OptionError
from interp.models.tiny import tiny_hf_model
from interp.registry import get_analysis
from interp.results import TIDY_COLUMNS, Result
from tests.unit.planted import fresh_tiny_gpt2, sink_edit

STORY = shipped_path("streaming_story.txt").read_text(encoding="utf-8")
W = 32


def streaming_edit(planted: bool):
    """tiny-gpt2 where the first-token sink head (layer 0, head 2) is the only head that matters.

    With ``planted`` the head's queries read a direction every token has and its keys one only position 0
    has (:func:`sink_edit`), so under full attention it parks on the first token and writes a constant; its
    output is scaled up (×8) so that losing the sink moves the prediction, the other heads' outputs are
    scaled down (×0.2) so that the window barely changes them, and the final norm's gain ×4 makes the
    model confident enough for a changed prediction to cost loss. Without ``planted`` only the scalings
    are applied: the same head, with its random queries and keys, has no sink to lose.
    """
    plant = sink_edit(bos_layer=0, bos_head=2, secondary_layer=1, secondary_position=5)

    def edit(hf) -> None:
        if planted:
            plant(hf)
        d_head = hf.config.n_embd // hf.config.n_head
        for layer, block in enumerate(hf.transformer.h):
            for head in range(hf.config.n_head):
                rows = slice(head * d_head, (head + 1) * d_head)
                block.attn.c_proj.weight[rows, :] *= 8.0 if (layer, head) == (0, 2) else 0.2
        hf.transformer.ln_f.weight.mul_(4.0)

    return edit


def own_sample(lm, seed: int, length: int = 192) -> list[int]:
    """A text the model itself writes under full attention (temperature 1): in expectation no other key
    budget predicts it better, so a rise of the loss is the budget's doing, not the text's."""
    generator = torch.Generator().manual_seed(seed)
    ids = [lm.bos_token_id]
    cache = lm.new_kv_cache(1)  # KV-cached decoding: one new token per step
    with torch.inference_mode():
        for _ in range(length - 1):
            logits = lm.decode_step(torch.tensor([ids[-1:]]), torch.ones(1, 1, dtype=torch.long), cache)[0]
            ids.append(int(torch.multinomial(logits.softmax(-1), 1, generator=generator)))
    return ids


@pytest.mark.parametrize("seed", [0, 1])
def test_losing_the_planted_sink_raises_perplexity_and_keeping_it_restores_it(seed):
    lm = fresh_tiny_gpt2(seed, streaming_edit(planted=True))
    result = sink_streaming(lm, document=own_sample(lm, seed), window=W, ks=(1, 4), controls=("random",),
                            max_tokens=192, queries=16, progress=False)
    full = result.perplexity("masked", "full")
    window = result.perplexity("masked", "window")
    assert window > 1.8 * full  # measured 2.07 and 2.53 (seeds 0, 1; both backends)
    for k in (1, 4):
        assert result.perplexity("masked", "sinks", k) == pytest.approx(full, rel=0.03)
    assert result.perplexity("masked", "random", 4) > 1.8 * full  # four other kept tokens do not stand in
    # Fresh positions: the first window token gets wpe[0], which carries the planted key, so it becomes the
    # sink and the window is as good as full attention (StreamingLLM's "re-computation" baseline).
    assert result.perplexity("reassigned", "window") == pytest.approx(result.perplexity("reassigned", "full"), rel=0.15)


@pytest.mark.parametrize("seed", [0, 1])
def test_without_a_planted_sink_the_first_token_restores_nothing(seed):
    lm = fresh_tiny_gpt2(seed, streaming_edit(planted=False))
    result = sink_streaming(lm, document=own_sample(lm, seed), window=W, ks=(1,), controls=(), max_tokens=192,
                            queries=0, progress=False)
    assert result.perplexity("masked", "sinks", 1) > 0.8 * result.perplexity("masked", "window")


def explicit_mask(n: int, window: int, kept: tuple[int, ...], full: bool) -> torch.Tensor:
    """Additive 4-D mask built one query at a time from the budget's definition."""
    mask = torch.full((1, 1, n, n), float("-inf"))
    for t in range(n):
        keys = range(t + 1) if full else sorted(set(j for j in kept if j <= t) | set(range(max(0, t - (window - len(kept)) + 1), t + 1)))
        for j in keys:
            mask[0, 0, t, j] = 0.0
    return mask


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_masked_scores_equal_hugging_face_attention_with_the_same_key_sets(name):
    lm = interp.load_model(name)
    result = sink_streaming(lm, document=STORY, window=24, ks=(2, 8), controls=("newline", "random"), control_k=2,
                            max_tokens=120, queries=6, progress=False)
    hf = tiny_hf_model(name, seed=0)  # the same seeded weights, unprocessed, Hugging Face's eager attention
    ids = torch.tensor([lm.encode(STORY)[:120]])
    n = ids.shape[1]
    checked = set()
    for entry in result.conditions:
        if entry.scheme != "masked":
            continue
        with torch.no_grad():
            logp = hf(ids, attention_mask=explicit_mask(n, 24, entry.kept, entry.condition == "full")).logits[0].log_softmax(-1)
        reference = torch.tensor([-float(logp[t, ids[0, t + 1]]) for t in entry.queries], dtype=torch.float64)
        assert torch.allclose(torch.tensor(entry.nll, dtype=torch.float64), reference, atol=1e-4), (entry.condition, entry.k)
        checked.add(entry.condition)
    assert checked == {"full", "window", "sinks", "newline", "random"}
    # the budgets differ enough to matter: the comparison above could fail
    assert result.perplexity("masked", "window") != pytest.approx(result.perplexity("masked", "full"), rel=1e-3)


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_reassigned_positions_equal_a_forward_of_the_compressed_text(name):
    lm = interp.load_model(name)
    result = sink_streaming(lm, document=STORY, window=20, ks=(3,), controls=("random",), control_k=3,
                            max_tokens=100, queries=5, batch_size=2, progress=False)
    hf = tiny_hf_model(name, seed=0)
    ids = lm.encode(STORY)[:100]
    for entry in result.conditions:
        if entry.scheme != "reassigned" or entry.condition == "full":
            continue
        for t, ours in zip(entry.queries, entry.nll, strict=True):
            recent = list(range(t - (20 - len(entry.kept)) + 1, t + 1))
            compressed = [ids[j] for j in entry.kept if j < recent[0]] + [ids[j] for j in recent]
            with torch.no_grad():
                logp = hf(torch.tensor([compressed])).logits[0, -1].log_softmax(-1)  # positions 0 … n−1
            assert ours == pytest.approx(-float(logp[ids[t + 1]]), abs=1e-4), (entry.condition, t)


def test_full_attention_row_is_the_models_own_loss(tiny_llama):
    result = sink_streaming(tiny_llama, document=STORY, window=16, ks=(1,), controls=(), max_tokens=80,
                            queries=4, progress=False)
    ids = tiny_llama.encode(STORY)[:80]
    with torch.no_grad():
        logits = tiny_llama.forward(tiny_llama.pad([ids]))[0]
    loss = torch.nn.functional.cross_entropy(logits[16:79], torch.tensor(ids[17:80]), reduction="none")
    full = result.condition("masked", "full")
    assert full.queries == tuple(range(16, 79))
    assert torch.allclose(torch.tensor(full.nll, dtype=torch.float64), loss.double(), atol=1e-5)
    assert result.perplexity("masked", "full") == pytest.approx(math.exp(float(loss.mean())), rel=1e-5)
    sample = result.condition("reassigned", "full")
    assert sample.nll == tuple(full.nll[full.queries.index(q)] for q in sample.queries)


def test_tidy_frame_has_one_perplexity_per_condition_and_the_kept_tokens(tiny_gpt2, tmp_path):
    result = sink_streaming(tiny_gpt2, window=W, ks=(1, 2), max_tokens=160, queries=4, progress=False)
    frame = result.to_frame()
    assert tuple(frame.columns[: len(TIDY_COLUMNS)]) == TIDY_COLUMNS
    assert {"scheme", "condition", "k", "window", "queries", "n_scored", "kept"} <= set(frame.columns)
    assert set(frame["metric"]) == {"perplexity", "mean_nll", "token_nll", "kept_token"}
    ppl = frame.query("metric == 'perplexity' and queries == 'all'")
    assert sorted(zip(ppl["condition"], ppl["k"], strict=True)) == sorted(
        (c.condition, c.k) for c in result.conditions if c.scheme == "masked")
    nll = frame.query("metric == 'mean_nll' and queries == 'all'").set_index(["condition", "k"])["value"]
    for _, row in ppl.iterrows():
        assert row["value"] == pytest.approx(math.exp(nll[(row["condition"], row["k"])]))
        assert row["n_scored"] == 160 - 1 - W
    kept = frame.query("metric == 'kept_token' and condition == 'sinks' and k == 2 and scheme == 'masked'")
    assert list(kept["position"]) == [0, 1] and kept["token"].iloc[0] == "<bos>"
    tokens = frame.query("metric == 'token_nll' and condition == 'window' and scheme == 'masked'")
    assert list(tokens["position"]) == list(range(W + 1, 160))
    # byte tokens: the story's first 32 hold four line breaks but only two full stops ("story." and "I.")
    assert [c.condition for c in result.conditions if c.scheme == "masked"][-2:] == ["newline", "random"]
    assert result.skipped == ("control 'period': only 2 such token(s) at positions 4–31, 4 needed",)
    pd.testing.assert_frame_equal(pd.read_parquet(Result("sink-streaming", frame).to_parquet(tmp_path / "f.parquet")),
                                  frame, check_dtype=False)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(window=1), "window must be at least 2"),
        (dict(window=8, ks=(1, 8)), "1 ≤ k < window=8"),
        (dict(ks=()), "at least one number of kept initial tokens"),
        (dict(text="no-such-text"), "unknown text 'no-such-text': choose one of story, python-reference"),
        (dict(document="Too short."), "the text has 11 tokens but the test needs at least 2·window=64"),
        (dict(controls=("commas",)), "unknown control(s) ['commas']"),
        (dict(max_tokens=40), "max_tokens must be between 2·window=64"),
        (dict(window=11, ks=(8,), control_k=4), "the random control needs 4 positions in [8, 11)"),
    ],
)
def test_bad_options_are_one_line_option_errors(tiny_gpt2, options, message):
    options = {"window": W, "max_tokens": 128, **options}
    with pytest.raises(OptionError) as error:
        sink_streaming(tiny_gpt2, progress=False, **options)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_cli_reports_a_bad_window_on_one_line(capsys):
    assert main(["run", "sink-streaming", "--model", "tiny-gpt2", "--window", "8", "--ks", "1,8"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "1 ≤ k < window=8" in lines[0]


def test_recipe_builds_the_report(tmp_path):
    result = interp.run("sink-streaming", "tiny-gpt2", window=W, max_tokens=160, queries=4, ks="1,4", progress=False)
    assert list(result.figures) == ["Perplexity against the number of kept initial tokens",
                                    "Loss along the text (moving average)"]
    paper = result.tables["Beside StreamingLLM's numbers"]
    assert list(paper["paper ppl"][:3]) == [5158.07, 5.40, 5.60]
    assert result.metadata["text"]["name"] == "story" and result.metadata["model_windows"]["sliding_window"] is None
    html = result.to_html(tmp_path / "report.html").read_text()
    assert "re-assigned positions" in html and "hook_attn_scores" in html
    given = interp.run("sink-streaming", "tiny-gpt2", prompts=[STORY[:3000]], window=W, max_tokens=160, queries=0,
                       progress=False)
    assert given.metadata["text"]["name"] == "document"
    with pytest.raises(OptionError, match="either with --prompts or with --text python-reference"):
        interp.run("sink-streaming", "tiny-gpt2", prompts=[STORY], text="python-reference", progress=False)
    assert not (given.frame["scheme"] == "reassigned").any()


def test_a_window_at_or_above_the_models_own_sliding_window_only_cuts_the_global_layers(tiny_gpt2):
    recipe = importlib.import_module(get_analysis("sink-streaming").run.__module__)
    result = sink_streaming(tiny_gpt2, window=16, ks=(1,), controls=(), max_tokens=64, queries=0, progress=False)
    assert recipe._affected(result) == "all 2"
    local = dataclasses.replace(result, sliding_window=8, sliding_layers=(0,))  # as Gemma 3's local layers
    assert recipe._affected(local) == "1 (global only)"
    assert recipe._affected(dataclasses.replace(local, sliding_window=32)) == "all 2"
