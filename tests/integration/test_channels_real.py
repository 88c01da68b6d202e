"""SVD channels on the bundled real models: TransformerLens agreement, previous-token → induction channels.

The numbers these tests assert were measured first (see docs/analyses/svd-channels.md); the tests pin what holds:
SmolLM2's previous-token → induction K-composition is far above the random baseline and its top
components carry the channel; Gemma-3's previous-token heads rank first among earlier writers into its
induction heads, but their (norm-gain-folded) K-composition is *below* the Gaussian floor.
"""

from __future__ import annotations

import pytest
import torch
from transformer_lens.utilities.matrix import composition_scores as tl_composition_scores

from interp.attribution.channel_interventions import (
    project_out_many,
    repeated_token_rows,
    repeated_token_scores,
)
from interp.attribution.channels import composition_scores, head_svd

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("fixture", ["smollm2"])  # gemma: checked in benchmarks/bench_channels.py (slow here)
def test_scores_agree_with_transformer_lens_on_a_layer_slice(fixture, request):
    """TL's full ``all_composition_scores`` needs ~8 GB on these models; its kernel on a slice does not."""
    lm = request.getfixturevalue(fixture)
    model = lm.native_model()  # the peer: TransformerLens's own factored matrices
    ov = head_svd(lm, "OV", effective=False)
    qk = head_svd(lm, "QK", effective=False)
    with torch.no_grad():
        for mode, right in (("K", model.QK.T), ("Q", model.QK), ("V", model.OV)):
            ours = composition_scores(lm, mode, effective=False, ov=ov, qk=qk, baseline_samples=2).scores
            reference = tl_composition_scores(model.OV[0:3], right[3:6], broadcast_dims=True)
            assert float((ours[0:3, :, 3:6] - reference).abs().max()) < 1e-5, mode


def _heads(lm, rows):
    scores = repeated_token_scores(lm, rows=rows)
    previous = scores.top("previous_token", 1)[0]
    induction = scores.top("induction", 1, min_layer=previous[0][0] + 1)[0]
    return scores, previous, induction


def _induction_after(lm, rows, reader, directions, space):
    with project_out_many(lm, directions, space=space):
        return float(repeated_token_scores(lm, rows=rows, layers=[reader[0]]).induction[reader])


def test_smollm2_previous_token_to_induction_channel(smollm2):
    rows = repeated_token_rows(smollm2, 4, 20)
    scores, (writer, prev_score), (reader, ind_score) = _heads(smollm2, rows)
    assert prev_score > 0.5 and ind_score > 0.5
    ov = head_svd(smollm2, "OV")
    k_comp = composition_scores(smollm2, "K", ov=ov, baseline_samples=30)
    z = float(k_comp.z[writer + reader])
    print(f"smollm2: previous-token {writer} ({prev_score:.3f}) -> induction {reader} ({ind_score:.3f}): "
          f"K-comp {float(k_comp.scores[writer + reader]):.4f} vs baseline {k_comp.baseline.mean:.4f}, z {z:.1f}")
    assert z > 10
    clean = float(scores.induction[reader])
    top = _induction_after(smollm2, rows, reader, {writer: ov.Vh[writer][k_comp.top_components(writer, reader, 10)]},
                           "residual")
    generator = torch.Generator().manual_seed(0)
    random = [_induction_after(smollm2, rows, reader,
                               {writer: ov.Vh[writer][torch.randperm(64, generator=generator)[:10]]}, "residual")
              for _ in range(2)]
    print(f"smollm2 induction {reader}: clean {clean:.3f}, top-10 removed {top:.3f}, random-10 removed {random}")
    assert clean - top > 2 * max(clean - r for r in random) + 0.02


def test_gemma_previous_token_heads_lead_k_composition_into_induction_heads_below_the_floor(gemma):
    rows = repeated_token_rows(gemma, 4, 20)
    scores, (writer, prev_score), (reader, ind_score) = _heads(gemma, rows)
    assert prev_score > 0.5 and ind_score > 0.5
    k_comp = composition_scores(gemma, "K", baseline_samples=30)
    column = k_comp.scores[: reader[0], :, reader[0], reader[1]].flatten()
    rank = int((column > k_comp.scores[writer + reader]).sum()) + 1
    # every previous-token head with score > 0.5 in an earlier layer
    strong = [(layer, head) for layer in range(reader[0]) for head in range(gemma.n_heads)
              if float(scores.previous_token[layer, head]) > 0.5]
    best_rank = min(int((column > k_comp.scores[w + reader]).sum()) + 1 for w in strong)
    print(f"gemma: previous-token {writer} ({prev_score:.3f}) -> induction {reader} ({ind_score:.3f}): K-comp "
          f"{float(k_comp.scores[writer + reader]):.4f} (rank {rank}/{column.numel()}), baseline "
          f"{k_comp.baseline.mean:.4f}; best rank of a strong previous-token head {best_rank}")
    assert best_rank == 1
    assert float(k_comp.scores[writer + reader]) < k_comp.baseline.mean  # below the Gaussian floor
    ov = head_svd(gemma, "OV")
    whole = _induction_after(gemma, rows, reader, {w: ov.Vh[w] for w in strong}, "residual")
    assert whole < 0.2 * float(scores.induction[reader])  # the previous-token heads are necessary
