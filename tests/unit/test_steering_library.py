"""interp.steering on a tiny model with a planted "language" direction (see test_steering.py's ``_planted``).

Independent references: output scores against a plain hooked forward pass with the edit; the residual norm
against captured activations; the coherence judge's losses against a per-row forward; selection must find the
planted feature, and the out-of-box call must select once, cache, and refuse a choice made for another SAE.
"""

from __future__ import annotations

import json

import pytest
import torch

import interp
from interp.errors import OptionError
from interp.steering import SteeringChoice, SteeringChoiceError, select_steering, steer_language
from interp.steering.coherence import alone_losses, coherence_judge
from interp.steering.directions import direction_spec, feature_direction, sae_mean_diff_direction
from interp.steering.effects import language_token_sets, output_scores, residual_norm
from tests.unit.test_steering import LAYER, PLANTED, TARGET_BYTES, _planted, _stub_embedder, _stub_identifier

ENGLISH = ["the cat sat on the mat", "a dog ran in the park", "we like warm bread", "it rained all afternoon"]
PROMPTS = ["the house is", "the cat sat on", "she will be", "a small bird"]


def _choice(**kw) -> SteeringChoice:
    base = {"method": "sae", "model": "tiny-gpt2", "backend": "hooked", "target": "fr", "layer": 0, "strength": 0.5,
            "features": (3,), "residual_norm": 4.0}
    return SteeringChoice(**{**base, **kw})


def test_choice_round_trips_through_json_and_refuses_bad_files(tmp_path) -> None:
    choice = _choice(scores={"coherent_success": 0.9, "candidates": [{"feature": 3, "output_shift": 0.2}]})
    path = choice.save(tmp_path / "deep" / "fr.json")  # parents are created
    again = SteeringChoice.load(path)
    assert again == choice and again.scores == choice.scores
    assert json.loads(path.read_text())["features"] == [3]
    with pytest.raises(SteeringChoiceError, match="no steering choice file"):
        SteeringChoice.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SteeringChoiceError, match="not a readable steering choice"):
        SteeringChoice.load(tmp_path / "bad.json")
    (tmp_path / "partial.json").write_text(json.dumps({"method": "sae"}))
    with pytest.raises(SteeringChoiceError, match="lacks the field"):
        SteeringChoice.load(tmp_path / "partial.json")
    (tmp_path / "typed.json").write_text(json.dumps({**choice.to_dict(), "layer": "nine"}))
    with pytest.raises(SteeringChoiceError, match="bad field"):
        SteeringChoice.load(tmp_path / "typed.json")
    with pytest.raises(SteeringChoiceError, match="made for model"):
        choice.check_model("gemma-3-270m")
    with pytest.raises(OptionError, match="method"):
        _choice(method="dense")
    with pytest.raises(OptionError, match="exactly one feature"):
        _choice(features=(1, 2))
    with pytest.raises(OptionError, match="mode"):
        _choice(mode="scale")
    assert not list(tmp_path.glob("**/*.tmp"))


def test_residual_norm_equals_the_captured_activations(tiny_gpt2) -> None:
    got = residual_norm(tiny_gpt2, 1, ENGLISH)
    norms = []
    for text in ENGLISH:
        batch = tiny_gpt2.tokenize([text])
        act = tiny_gpt2.capture(batch, ["blocks.1.hook_resid_post"])["blocks.1.hook_resid_post"][0]
        norms += act[1:].norm(dim=-1).tolist()  # BOS left out
    assert got == pytest.approx(sum(norms) / len(norms), rel=1e-5)


def test_output_scores_equal_a_plain_hooked_forward_per_direction(tiny_gpt2) -> None:
    lm = tiny_gpt2
    directions = torch.randn(5, lm.d_model, generator=torch.Generator().manual_seed(0))
    token_set = torch.tensor([10, 11, 40, 41])
    got = output_scores(lm, 0, directions, token_set, PROMPTS[:3], strength=0.7, norm=3.0, chunk_rows=4)

    def mass(direction: torch.Tensor | None) -> float:
        total = 0.0
        for prompt in PROMPTS[:3]:
            batch = lm.tokenize([prompt])
            hooks = []
            if direction is not None:
                u = direction / direction.norm()
                hooks = [("blocks.0.hook_resid_post", lambda act, hook, u=u: act + 2.1 * u.to(act))]
            with torch.no_grad():
                probs = torch.softmax(lm.forward(batch, fwd_hooks=hooks)[0, -1].float(), -1)
            total += float(probs[token_set].sum())
        return total / 3

    base = mass(None)
    assert got.base_mass == pytest.approx(base, abs=1e-5)
    for i in range(5):
        assert float(got.mass[i]) == pytest.approx(mass(directions[i]), abs=1e-5)
        assert float(got.shift[i]) == pytest.approx(mass(directions[i]) - base, abs=1e-5)


def test_the_planted_feature_has_the_largest_output_score_and_its_tokens_are_the_language_set() -> None:
    lm, trained, target_ids, _ = _planted()
    sets = language_token_sets(lm, {"en": ENGLISH * 2, "xx": ["xyz qyx zzq xq", "qq xyzy xq zz"] * 3}, min_ratio=3,
                               min_letters=1)  # byte tokens: one letter each
    assert set(sets["xx"].tolist()) == target_ids  # exactly the planted bytes (the space is shared)
    out = output_scores(lm, LAYER, trained.sae.W_dec.detach(), sets["xx"], PROMPTS, strength=1.0,
                        norm=residual_norm(lm, LAYER, ENGLISH))
    assert int(out.shift.argmax()) == PLANTED
    assert float(out.shift[PLANTED]) > 0.3


def test_directions_are_unit_and_built_from_the_decoder_rows() -> None:
    _, trained, _, u = _planted()
    sae = trained.sae
    assert torch.allclose(feature_direction(sae, [PLANTED]), u, atol=1e-5)
    pair = feature_direction(sae, [PLANTED, 2])
    expected = (sae.W_dec[PLANTED] + sae.W_dec[2]).detach()
    assert torch.allclose(pair, expected / expected.norm(), atol=1e-5)
    delta = torch.zeros(sae.W_dec.shape[0])
    delta[PLANTED], delta[2], delta[4] = 2.0, 1.0, -3.0  # the negative side is dropped
    want = (2.0 * sae.W_dec[PLANTED] + sae.W_dec[2]).detach()
    assert torch.allclose(sae_mean_diff_direction(sae, delta), want / want.norm(), atol=1e-5)
    with pytest.raises(OptionError):
        feature_direction(sae, [10_000])
    spec = direction_spec(LAYER, 3 * u, 0.5, 8.0)
    assert spec.coefficient == pytest.approx(4.0) and float(spec.direction.norm()) == pytest.approx(1.0)
    clamp = direction_spec(LAYER, u, 0.5, 8.0, mode="clamp", sae=sae, feature=PLANTED)
    assert clamp.target_value == pytest.approx(4.0 / float(sae.W_dec[PLANTED].norm()))


def test_alone_losses_equal_a_per_row_forward_and_the_judge_passes_natural_text(tiny_gpt2) -> None:
    lm = tiny_gpt2
    rows = [lm.encode(t, prepend_bos=False) for t in ["the", "a dog ran in the park today"]]
    got = alone_losses(lm, rows)
    for row, losses in zip(rows, got, strict=True):
        ids = [lm.bos_token_id, *row]
        logits = lm.forward(lm.pad([ids]))[0].float()
        want = [float(-torch.log_softmax(logits[p], -1)[ids[p + 1]]) for p in range(1, len(ids) - 1)]
        assert losses.tolist() == pytest.approx(want, abs=1e-4)
    texts = [f"the {a} sat on the {b} and then the {b} ran to the {a}" for a in ("cat", "dog", "bird", "fox", "cow")
             for b in ("mat", "rug", "bed", "box", "car", "hat")]
    judge = coherence_judge(lm, {"en": texts}, max_tokens=12, windows_per_text=2)
    verdicts, _ = judge.judge(lm, [lm.encode(t, prepend_bos=False)[:12] for t in texts], ["en"] * len(texts))
    assert sum(verdicts) / len(verdicts) >= 0.85  # the 95th percentile of the windows (starts included)
    # the verdict is loss <= the threshold of the row's length; rows under MIN_TOKENS are never coherent
    losses = judge.losses(lm, rows)
    assert judge.judge(lm, rows, ["en", "en"])[0] == [False, losses[1] <= judge.threshold("en", len(rows[1]))]
    with pytest.raises(OptionError, match="no reference text"):
        judge.threshold("de", 8)


def _uniform_judge(lm):
    """A judge that passes everything (the tiny model's losses are noise): the tests here are about selection."""
    import numpy as np

    from interp.steering.coherence import CoherenceJudge

    return CoherenceJudge({"xx": np.full(25, 1e9)}, 0.95, {"xx": 1})


@pytest.fixture
def planted_setup(monkeypatch, tmp_path):
    """The planted model with its SAE on disk, the planted language 'xx' and stub scorers everywhere."""
    import interp.corpus
    import interp.steering.selection as selection

    lm, trained, target_ids, u = _planted()
    folder = tmp_path / "sae"
    trained.sae.save_model(str(folder))
    (folder / "interp_sae.json").write_text(json.dumps({"hook_name": trained.hook_name, "layer": LAYER}))
    from interp.sae import load_sae

    on_disk = load_sae(folder)
    sentences = {"en": ENGLISH + ["the train left at seven", "she reads at night"],
                 "xx": ["xyz qyx zzq", "qq xyzy xq", "zyx xqz yyq", "xx zq yq zx", "yqz xzy qqx", "zqx yxz xqy"]}
    monkeypatch.setattr(selection, "LANGUAGES", ("en", "xx"))
    monkeypatch.setattr(interp.corpus, "parallel_sentences", lambda split=None: sentences)
    monkeypatch.setattr(selection, "_texts_by_language", lambda languages, tokenizer: sentences)
    monkeypatch.setattr(selection, "default_judge", lambda lm, languages, max_tokens=24: _uniform_judge(lm))
    monkeypatch.setattr("interp.steering.effects.MIN_LETTERS", 1)  # byte tokens: one letter each
    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path / "cache"))
    return lm, on_disk, target_ids


def test_selection_picks_the_planted_feature_by_its_output_score(planted_setup) -> None:
    lm, trained, _ = planted_setup
    kwargs = {"screen_prompts": PROMPTS, "confirm_prompts": PROMPTS[:2], "max_new_tokens": 6,
              "identifier": _stub_identifier(TARGET_BYTES), "embedder": _stub_embedder, "progress": False}
    choice = select_steering(lm, "xx", sae=trained, strengths=(0.5, 1.0), **kwargs)
    candidates = choice.scores["candidates"]
    assert candidates[0]["feature"] == PLANTED  # rank 0 by the output score
    assert {"output_shift", "monolinguality", "delta", "logit_lens_share"} <= set(candidates[0])
    assert PLANTED in choice.features and choice.scores["coherent_success"] == 1.0
    assert choice.sae_digest and choice.residual_norm > 0 and "output score" in choice.rule
    assert set(choice.seconds) >= {"feature scores (input and output)"}
    # the screen's best setting is also confirmed at new positions, clamped, and 15% weaker and stronger
    labels = [row["label"] for row in choice.scores["confirmation"]]
    assert sum(label.endswith(("(new positions)", "(clamp)", "(weaker)", "(stronger)")) for label in labels) == 4
    assert {row["mode"] for row in choice.scores["confirmation"]} == {"add", "clamp"}
    dense = select_steering(lm, "xx", method="mean-diff", layer=LAYER, strengths=(1.0,), **kwargs)
    assert dense.method == "mean-diff" and dense.features == () and dense.scores["success"] == 1.0


def test_steer_language_selects_once_caches_and_reuses_the_choice(planted_setup, monkeypatch, tmp_path) -> None:
    import interp.steering.steer as steer

    lm, trained, target_ids = planted_setup
    calls = []
    real = steer.select_steering

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **{**kwargs, "strengths": (0.5, 1.0), "screen_prompts": PROMPTS,
                              "confirm_prompts": PROMPTS[:2], "max_new_tokens": 6, "progress": False})

    monkeypatch.setattr(steer, "select_steering", counted)
    monkeypatch.setattr("interp.steering.selection.check_target", lambda target: None)
    stub = {"identifier": _stub_identifier(TARGET_BYTES), "embedder": _stub_embedder}
    first = steer_language(lm, PROMPTS, "xx", sae=trained, max_new_tokens=6, evaluate=False, **stub)
    again = steer_language(lm, PROMPTS, "xx", sae=trained, max_new_tokens=6, evaluate=False, **stub)
    assert len(calls) == 1 and first.texts == again.texts
    cached = list((tmp_path / "cache" / "steering").rglob("sae-xx-*.json"))
    assert len(cached) == 1
    choice = SteeringChoice.load(cached[0])
    steered = [lm.encode(t, prepend_bos=False) for t in first.texts]
    share = sum(t in target_ids for ids in steered for t in ids) / sum(len(ids) for ids in steered)
    assert share > 0.9
    # the same choice, passed explicitly or as its path, gives the same texts
    assert steer_language(lm, PROMPTS, "xx", choice=cached[0], sae=trained, max_new_tokens=6,
                          evaluate=False).texts == first.texts
    # overriding the strength keeps the feature; a choice for another SAE or model is refused
    weaker = steer_language(lm, PROMPTS, "xx", choice=choice, sae=trained, strength=0.01, max_new_tokens=6,
                            evaluate=False)
    assert weaker.settings["features"] == list(choice.features) and weaker.settings["strength"] == 0.01
    from dataclasses import replace

    with pytest.raises(SteeringChoiceError, match="another SAE"):
        steer_language(lm, PROMPTS, "xx", choice=replace(choice, sae_digest="0" * 64), sae=trained, evaluate=False)
    with pytest.raises(SteeringChoiceError, match="made for model"):
        steer_language(lm, PROMPTS, "xx", choice=replace(choice, model="gemma-3-270m"), sae=trained, evaluate=False)
    with pytest.raises(SteeringChoiceError, match="steers towards"):
        steer_language(lm, PROMPTS, "fr", choice=choice, sae=trained, evaluate=False)


def test_steer_language_rejects_bad_input_with_clear_errors(tiny_gpt2, tmp_path) -> None:
    with pytest.raises(OptionError, match="target must be one of fr, es, de"):
        steer_language(tiny_gpt2, "abc", "klingon")
    with pytest.raises(OptionError, match="strength"):
        steer_language(tiny_gpt2, "abc", "fr", choice=_choice(model=tiny_gpt2.name), strength=-1)
    with pytest.raises(OptionError, match="layer must be in"):
        steer_language(tiny_gpt2, "abc", "fr", layer=99)
    with pytest.raises(OptionError, match="method"):
        steer_language(tiny_gpt2, "abc", "fr", method="dense")
    with pytest.raises(SteeringChoiceError, match="no steering choice file"):
        steer_language(tiny_gpt2, "abc", "fr", choice=tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(SteeringChoiceError, match="not a JSON object"):
        steer_language(tiny_gpt2, "abc", "fr", choice=tmp_path / "bad.json")
    assert issubclass(SteeringChoiceError, interp.InterpUserError)


def test_cli_steer_refuses_bad_input_with_one_line_and_exit_2(tmp_path, capsys) -> None:
    from interp.cli import main

    assert main(["steer", "--target", "klingon", "--model", "tiny-gpt2"]) == 2
    assert main(["steer", "--target", "fr", "--choice", str(tmp_path / "none.json"), "--model", "tiny-gpt2"]) == 2
    (tmp_path / "bad.json").write_text("{oops")
    assert main(["steer", "--target", "fr", "--choice", str(tmp_path / "bad.json"), "--model", "tiny-gpt2"]) == 2
    other = _choice(model="gemma-3-270m", target="fr").save(tmp_path / "other.json")
    assert main(["steer", "--target", "fr", "--choice", str(other), "--model", "tiny-gpt2", "--no-eval"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("interp: error: ") for line in err)
    assert "target must be one of fr, es, de" in err[0] and "no steering choice file" in err[1]
    assert "not a readable steering choice" in err[2] and "made for model 'gemma-3-270m'" in err[3]


def test_cli_steer_with_a_saved_choice_prints_the_continuations_and_saves_the_choice(tiny_gpt2, tmp_path, capsys) -> None:
    from interp.cli import main

    dense = SteeringChoice(method="mean-diff", model=tiny_gpt2.name, backend=tiny_gpt2.backend, target="fr", layer=1,
                           strength=0.1).save(tmp_path / "fr.json")
    code = main(["steer", "--target", "fr", "--choice", str(dense), "--model", "tiny-gpt2", "--prompt", "the <b>cat</b>",
                 "--max-new-tokens", "3", "--no-eval", "--save-choice", str(tmp_path / "out" / "used.json")])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert json.loads(lines[0])["prompt"] == "the <b>cat</b>"
    used = SteeringChoice.load(tmp_path / "out" / "used.json")
    assert used.method == "mean-diff" and used.residual_norm > 0
