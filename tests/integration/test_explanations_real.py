"""Token attributions on the bundled real models: completeness, occlusion against plain hooked forward passes,
the masked encoder, the analysis end to end, and the two backends giving the same attributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import interp
from interp.attribution.token_attribution import METHODS

pytestmark = pytest.mark.integration

CAPITAL = "The capital of France is Rome. The capital of France is"


def test_gemma_integrated_gradients_are_complete_and_occlusion_matches_plain_forwards(gemma):
    explained = interp.explain(gemma, [CAPITAL, "The keys to the old cabinet"], target=[(" Paris", " Rome"), (" are", " is")],
                               methods=["integrated_gradients", "occlusion"], steps=32)
    for i in range(2):
        change, delta = explained.output_change[i], explained.convergence_delta[i]
        total = float(np.nansum(explained.scores["integrated_gradients"][i]))
        assert abs(total - change - delta) < 1e-3 * max(1.0, abs(change))
    # the agreement prompt's path is smooth (delta 0.07 of 2.87 at 32 points, 3e-6 at 256); the capitals
    # prompt's is not (delta −11 to +46 from 16 to 256 points): the delta is reported, not hidden
    assert abs(explained.convergence_delta[1]) < 0.05 * abs(explained.output_change[1])
    paris, rome = explained.targets[0], explained.contrasts[0]
    batch = gemma.tokenize([CAPITAL])
    pad = gemma.capture(gemma.pad([[gemma.pad_token_id]]), [gemma.embedding_hook])[gemma.embedding_hook][0, 0].clone()

    def logit_diff(position=None) -> float:
        def zero(activation, hook):
            out = activation.clone()
            out[:, position] = pad
            return out

        hooks = [] if position is None else [(gemma.embedding_hook, zero)]
        with torch.no_grad():
            logits = gemma.forward(batch, fwd_hooks=hooks)[0, -1].double()
        return float(logits[paris] - logits[rome])

    full = logit_diff()
    assert abs(full - explained.output[0]) < 1e-3 * max(1.0, abs(full))
    for position in explained.scored_positions(0)[:6]:
        drop = full - logit_diff(int(position))
        assert abs(drop - explained.scores["occlusion"][0][position]) < 2e-3 * max(1.0, abs(drop))


def test_minilm_explains_its_masked_token(minilm):
    explained = interp.explain(minilm, "The capital of France is [MASK].", methods=list(METHODS))
    mask_position = explained.token_ids[0].index(minilm.tokenizer.mask_token_id)
    assert explained.predict_positions[0] == mask_position
    for method in METHODS:
        values = explained.values(method, 0)
        assert np.isfinite(values).all() and len(values) == 6, method  # the six words; [CLS] [MASK] [SEP] unscored
    named = interp.explain(minilm, "The capital of France is [MASK].", target="paris", methods=["occlusion"])
    assert named.target_text == ("paris",)
    with pytest.raises(interp.InterpUserError, match="not in minilm-l6's vocabulary"):
        interp.explain(minilm, "The capital of France is [MASK].", target="\u2603", methods=["saliency"])


def test_the_analysis_runs_end_to_end_on_smollm2(smollm2, tmp_path):
    result = interp.run("explanation-agreement", smollm2, progress=False, tasks="agreement", max_examples=3,
                        random_orders=2, samples=32, steps=8)
    scores = result.frame[result.frame.metric == "attribution"]
    assert set(scores.method) == set(METHODS)
    assert scores.value.notna().all()
    assert result.metadata["summary"]["examples"] == 3
    page = result.to_html(tmp_path / "explanation-agreement.html").read_text(encoding="utf-8")
    assert "Token attributions, one method at a time" in page


@pytest.mark.parametrize("name", ["gemma-3-270m", "smollm2-135m"])
def test_both_backends_give_the_same_attributions(name, gemma, smollm2):
    prompts = ["The keys to the old cabinet", "The key to the old cabinets"]
    targets = [(" are", " is"), (" is", " are")]
    frames = []
    for backend in ("hooked", "bridge"):
        lm = interp.load_model(name, backend=backend)
        frames.append(interp.explain(lm, prompts, target=targets, steps=8, samples=24).frame)
    a, b = frames
    assert a[["prompt", "position", "token", "method"]].equals(b[["prompt", "position", "token", "method"]])
    for method, left in a.groupby("method"):
        right = b[b.method == method]
        scale = max(1e-6, float(np.abs(left.value).max()))
        assert np.allclose(left.value, right.value, rtol=2e-3, atol=2e-3 * scale), method
