"""Steering the generation language as a library capability.

* :mod:`~interp.steering.choice`: :class:`SteeringChoice`, the chosen setting (save / load as JSON);
* :mod:`~interp.steering.effects`: language token sets, the residual norm that sizes every edit, and the
  output score of a direction (what amplifying it does to the next-token distribution);
* :mod:`~interp.steering.directions`: one SAE feature, several, the SAE-reconstructed mean difference, the
  dense mean difference, and the hook edit of a choice;
* :mod:`~interp.steering.coherence`: the coherence judge (the unsteered model's loss on the continuation
  alone against natural text of the language and length);
* :mod:`~interp.steering.evaluate`: many edits in one batched generation, scored;
* :mod:`~interp.steering.selection`: :func:`select_steering` — scores → screen → confirmation → choice;
* :mod:`~interp.steering.steer`: :func:`steer_language`, out of the box (selects and caches on first use).

The hooks and the language scorers it builds on are in :mod:`interp.attribution.language_steering`
(discovery, :class:`~interp.attribution.language_steering.SteeringSpec`, sweeps, head projections).

Examples:
    >>> from interp.steering import SteeringChoice, select_steering, steer_language
    >>> SteeringChoice.__name__
    'SteeringChoice'
"""

from __future__ import annotations

from interp.steering.choice import SteeringChoice, SteeringChoiceError
from interp.steering.coherence import CoherenceJudge, coherence_judge
from interp.steering.effects import language_token_sets, output_scores, residual_norm
from interp.steering.selection import FeatureScores, feature_scores, select_steering
from interp.steering.steer import steer_language

__all__ = ["CoherenceJudge", "FeatureScores", "SteeringChoice", "SteeringChoiceError", "coherence_judge",
           "feature_scores", "language_token_sets", "output_scores", "residual_norm", "select_steering",
           "steer_language"]
