"""Compare steering methods on the same prompts: the chosen setting beside the best of every other kind.

:func:`method_variants` takes a :class:`~interp.steering.SteeringChoice` made by
:func:`~interp.steering.select_steering` and returns, from its screen, the best setting of each direction kind
that was screened (one feature, several features, the SAE-reconstructed mean difference), so they can be
reported side by side; :func:`evaluate_choices` generates with several choices on the same prompts in one
batched generation and scores them (success, fluent, coherent, fidelity against the unrelated floor).

Examples:
    >>> import interp
    >>> from interp.steering import SteeringChoice
    >>> from interp.steering.compare import evaluate_choices
    >>> lm = interp.load_model("tiny-gpt2")
    >>> choice = SteeringChoice(method="mean-diff", model=lm.name, backend=lm.backend, target="fr", layer=1,
    ...                         strength=0.1, residual_norm=8.0)
    >>> frame = evaluate_choices(lm, {"dense": choice}, ["the cat"], "fr", max_new_tokens=2, score=False)
    >>> list(frame["method"])
    ['dense']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pandas as pd

from interp.attribution.language_steering import Embedder, LanguageIdentifier
from interp.models import LoadedModel
from interp.steering.choice import SteeringChoice
from interp.steering.coherence import CoherenceJudge
from interp.steering.directions import choice_spec
from interp.steering.evaluate import baseline, evaluate_edits

#: Names of the direction kinds in comparisons.
KIND_NAMES = {"sae": "one SAE feature", "sae-features": "several SAE features",
              "sae-mean-diff": "SAE-reconstructed mean-diff", "mean-diff": "dense mean-diff"}


def method_variants(choice: SteeringChoice) -> dict[str, SteeringChoice]:
    """The choice itself (``"chosen"``) and the best screened setting of every other direction kind."""
    out = {"chosen": choice}
    seen = {choice.method}
    for row in choice.scores.get("screen", []):  # best first
        kind = row.get("method")
        if kind in seen or kind not in KIND_NAMES:
            continue
        seen.add(kind)
        out[kind] = replace(choice, method=kind, features=tuple(row.get("features", ())),
                            strength=float(row["strength"]), mode=row.get("mode", "add"),
                            positions=row.get("positions", "all"), rule=f"best {KIND_NAMES[kind]} of the screen",
                            scores={key: row.get(key) for key in ("coherent_success", "fluent_success", "success",
                                                                  "prompts")})
    return out


def evaluate_choices(
    lm: LoadedModel, choices: dict[str, SteeringChoice], prompts: Sequence[str], target: str, *, sae: Any = None,
    delta: Any = None, judge: CoherenceJudge | None = None, identifier: LanguageIdentifier | None = None,
    embedder: Embedder | None = None, max_new_tokens: int = 24, batch_size: int = 32, score: bool = True,
) -> pd.DataFrame:
    """Every choice on every prompt in one batched generation; one row per (choice, prompt), with a ``method``
    column holding the choice's key. ``sae`` (an sae-lens SAE) and ``delta`` (its features' Δ) are needed by
    SAE choices."""
    edits = {name: choice_spec(lm, c, sae if c.uses_sae else None, delta) for name, c in choices.items()}
    base = baseline(lm, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, embedder=embedder,
                    fidelity_floor=score) if score else None
    frame, _ = evaluate_edits(lm, edits, prompts, target, max_new_tokens=max_new_tokens, batch_size=batch_size,
                              judge=judge, identifier=identifier, embedder=embedder, base=base,
                              with_fidelity=score, score=score)
    frame = frame.rename(columns={"label": "method"})
    if base is not None:
        frame["unrelated_similarity"] = base.unrelated_similarity
        frame["baseline_text"] = [base.generation.texts[i] for i in frame["prompt_index"]]
    frame["setting"] = [choices[name].describe() for name in frame["method"]]
    return frame


__all__ = ["KIND_NAMES", "evaluate_choices", "method_variants"]
