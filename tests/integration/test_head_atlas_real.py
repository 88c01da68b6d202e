"""The head atlas on the bundled real models, at reduced size (16 prompts of 48 tokens, fewer shuffles).

* The previous-token and induction heads that the head-importance and svd-channels analyses found (docs/analyses/:
  gemma-3-270m previous-token 4.1 and 10.1, induction 5.1 and 11.2; smollm2-135m previous-token 16.0, 11.1
  and 1.2, induction 18.6, 17.4 and 17.3) carry those labels.
* The detectors equal TransformerLens's ``detect_head`` on real weights (rotary, GQA, q/k norms, sinks).
* Heads per label and the unexplained share are printed (``pytest -s``) for the record.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from transformer_lens.head_detector import detect_head

from interp.attribution.head_atlas import ROLES, head_atlas
from interp.attribution.head_detectors import attention_detectors
from interp.data import default_prompts

pytestmark = pytest.mark.integration

SMALL = dict(max_tokens=48, induction_sequences=4, ov_tokens=2048, ov_null_samples=4, successor_null_samples=16,
             importance_sequences=2, ships_requests=0, n_examples=2, progress=False)
EXPECTED = {
    "gemma": {"previous-token": [(4, 1), (10, 1)], "induction": [(5, 1), (11, 2)]},
    "smollm2": {"previous-token": [(16, 0), (11, 1), (1, 2)], "induction": [(18, 6), (17, 4), (17, 3)]},
}


def _report(name, atlas):
    counts = atlas.role_counts()
    print(f"\n{name}: " + ", ".join(f"{role} {counts[role]}" for role in ROLES)
          + f"; no role {atlas.unexplained_share():.1%}, no role but sink/diffuse "
          f"{atlas.unexplained_share(('sink', 'diffuse')):.1%}; best successor score "
          f"{float(atlas.scores['successor'].max()):.3f} (null {float(atlas.nulls['successor'].median()):.3f})")


@pytest.mark.parametrize("fixture", ["gemma", "smollm2"])
def test_known_previous_token_and_induction_heads_are_labelled(fixture, request):
    lm = request.getfixturevalue(fixture)
    atlas = head_atlas(lm, default_prompts()[:16], **SMALL)
    _report(lm.name, atlas)
    for role, heads in EXPECTED[fixture].items():
        found = atlas.heads_with(role)
        for head in heads:
            assert head in found, (role, head, found)
    # the importance join ranks an induction-circuit head in the model's top 5
    assert atlas.importance is not None
    top = {divmod(int(i), lm.n_heads) for i in atlas.importance.flatten().topk(5).indices}
    circuit = {h for heads in EXPECTED[fixture].values() for h in heads}
    assert top & circuit, (top, circuit)
    data = atlas.to_json()
    assert len(data["examples"]) == 2 and len(data["examples"][0]["tokens"]) <= 48


@pytest.mark.parametrize("fixture", ["gemma", "smollm2"])
def test_detectors_equal_detect_head_on_real_weights(fixture, request):
    lm = request.getfixturevalue(fixture)
    texts = [p[:160] for p in default_prompts()[:2]]
    native = lm.native_model()
    for text in texts:
        assert lm.encode(text) == native.to_tokens(text)[0].tolist()
    for exclude_bos, exclude_current, measure in itertools.product((False, True), (False, True), ("mul", "abs")):
        ours = attention_detectors(lm, texts, max_tokens=None, exclude_bos=exclude_bos,
                                   exclude_current_token=exclude_current, error_measure=measure, progress=False)
        for name, tl_name in (("previous_token", "previous_token_head"), ("duplicate_token_text", "duplicate_token_head"),
                              ("induction_text", "induction_head")):
            reference = detect_head(native, texts, tl_name, exclude_bos=exclude_bos,
                                    exclude_current_token=exclude_current, error_measure=measure)
            gap = float((ours.scores[name].double() - reference.double().cpu()).abs().max())
            assert gap < 1e-6, (name, exclude_bos, exclude_current, measure, gap)
    assert torch.isfinite(ours.scores["previous_token"]).all()
