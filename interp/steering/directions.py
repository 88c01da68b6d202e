"""Steering directions and the edits built from a :class:`~interp.steering.SteeringChoice`.

Every direction is used as a unit vector ``û`` in the residual basis of ``blocks.L.hook_resid_post``, and
every edit is sized in units of that layer's mean residual norm ``r̄`` (:func:`interp.steering.effects.residual_norm`):
``add`` is ``x ← x + s·r̄·û``; ``clamp`` sets the component along the direction to ``s·r̄`` (for one SAE
feature through the SAE's encoder, ``x ← x + (s·r̄/‖d_f‖ − z_f(x))·d_f``, which keeps the SAE's error term;
otherwise through the projection on ``û``). The kinds:

* ``sae``: one feature's decoder row ``d_f = W_dec[f]``;
* ``sae-features``: ``Σ_f d_f/‖d_f‖`` over several same-language features (equal weights), normalised;
* ``sae-mean-diff``: the target-minus-English mean SAE activation ``Δ`` (token means over the matched
  sentences) kept on the language's side (``Δ_f > 0``) and decoded, ``Σ_f Δ_f·d_f``: an interpretable
  approximation of the dense direction built from the SAE's features;
* ``mean-diff``: the difference of mean last-token residuals of matched target and English sentences.

Examples:
    >>> import interp
    >>> from interp.steering import SteeringChoice
    >>> from interp.steering.directions import choice_spec
    >>> lm = interp.load_model("tiny-gpt2")
    >>> choice = SteeringChoice(method="mean-diff", model=lm.name, backend=lm.backend, target="fr", layer=1,
    ...                         strength=0.5, residual_norm=10.0)
    >>> spec = choice_spec(lm, choice)
    >>> round(spec.coefficient, 3), round(float(spec.direction.norm()), 3)
    (5.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from interp.attribution.language_steering import (
    SteeringSpec,
    mean_difference_directions,
    projection_readout,
    sae_readout,
)
from interp.errors import OptionError
from interp.models import LoadedModel
from interp.steering.choice import SteeringChoice, SteeringChoiceError


def unit(vector: Tensor) -> Tensor:
    return vector / vector.norm().clamp_min(1e-12)


def feature_direction(sae: Any, features: Sequence[int]) -> Float[Tensor, " d_model"]:
    """Unit direction of one feature, or of the equal-weight sum of several features' unit decoder rows."""
    d_sae = int(sae.W_dec.shape[0])
    bad = [f for f in features if not 0 <= int(f) < d_sae]
    if bad or not features:
        raise OptionError(f"SAE features must be in 0..{d_sae - 1}; got {list(features)}")
    rows = sae.W_dec[list(features)].detach().float().cpu()
    return unit((rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12)).sum(0))


def sae_mean_diff_direction(sae: Any, delta: Float[Tensor, " d_sae"], features: Sequence[int] | None = None) -> Float[Tensor, " d_model"]:
    """Unit ``Σ_f Δ_f·W_dec[f]`` over the features with ``Δ_f > 0`` (or over ``features`` when given)."""
    kept = torch.zeros_like(delta)
    index = torch.as_tensor(list(features), dtype=torch.long) if features is not None else torch.nonzero(delta > 0).flatten()
    kept[index] = delta[index].clamp_min(0)
    if float(kept.abs().sum()) == 0:
        raise OptionError("no SAE feature is more active on the target language than on English: "
                          "the SAE-reconstructed mean difference is empty")
    return unit(kept.to(sae.W_dec.device, sae.W_dec.dtype) @ sae.W_dec.detach()).float().cpu()


def direction_spec(layer: int, direction: Tensor, strength: float, norm: float, *, mode: str = "add",
                   positions: str = "all", sae: Any = None, feature: int | None = None, label: str = "") -> SteeringSpec:
    """The :class:`SteeringSpec` of a unit direction sized by the residual norm (see the module docstring)."""
    size = strength * norm
    if mode == "add":
        return SteeringSpec(layer=layer, direction=unit(direction.float()), coefficient=size, mode="add",
                            positions=positions, label=label)  # type: ignore[arg-type]
    if mode != "clamp":
        raise OptionError(f"mode must be 'add' or 'clamp'; got {mode!r}")
    if sae is not None and feature is not None:
        row = sae.W_dec[feature].detach().float().cpu()
        return SteeringSpec(layer=layer, direction=row, mode="clamp", positions=positions,  # type: ignore[arg-type]
                            readout=sae_readout(sae, feature), target_value=size / float(row.norm().clamp_min(1e-12)),
                            label=label)
    u = unit(direction.float())
    return SteeringSpec(layer=layer, direction=u, mode="clamp", positions=positions,  # type: ignore[arg-type]
                        readout=projection_readout(u), target_value=size, label=label)


def choice_direction(lm: LoadedModel, choice: SteeringChoice, sae: Any = None,
                     delta: Tensor | None = None) -> Float[Tensor, " d_model"]:
    """The unit direction a choice steers along (rebuilt from its SAE or from the matched sentences)."""
    if choice.method == "mean-diff":
        return unit(mean_difference_directions(lm, [choice.layer], [choice.target])[(choice.target, choice.layer)])
    if sae is None:
        raise SteeringChoiceError(f"the choice uses SAE features ({choice.describe()}) but no SAE was given")
    if choice.method in ("sae", "sae-features"):
        return feature_direction(sae, choice.features)
    if delta is None:
        raise OptionError("an SAE-reconstructed mean difference needs the feature differences Δ")
    return sae_mean_diff_direction(sae, delta, choice.features)


def choice_spec(lm: LoadedModel, choice: SteeringChoice, sae: Any = None, delta: Tensor | None = None) -> SteeringSpec:
    """The hook edit of a choice on ``lm``.

    ``choice.residual_norm`` is the unit of the strength; a choice without one (NaN) is refused.
    """
    if not 0 <= choice.layer < lm.n_layers:
        raise OptionError(f"layer must be in 0..{lm.n_layers - 1} for {lm.name}; the choice says {choice.layer}")
    if not choice.residual_norm > 0:
        raise SteeringChoiceError("the steering choice has no residual norm to size its edit with")
    direction = choice_direction(lm, choice, sae, delta)
    single = choice.method == "sae" and choice.mode == "clamp"
    return direction_spec(choice.layer, direction, choice.strength, choice.residual_norm, mode=choice.mode,
                          positions=choice.positions, sae=sae if single else None,
                          feature=choice.features[0] if single else None, label=choice.describe())


__all__ = ["choice_direction", "choice_spec", "direction_spec", "feature_direction", "sae_mean_diff_direction", "unit"]
