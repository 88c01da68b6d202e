"""Generate with many steering edits in one batched generation, and score every continuation.

Scores per continuation: the identified language and its confidence (fastText lid.176, offline), the share of
distinct words, **success** (identified as the target), **fluent** success (success, confidence ≥ 0.5 and at
least half the words distinct: the suite's earlier rule), **coherent** success (fluent and judged coherent by
:class:`~interp.steering.coherence.CoherenceJudge`: the rule the targets use), the alone-loss the judge read,
and fidelity (cosine of multilingual-e5 embeddings of the steered and the unsteered continuation) against the
cosine of unrelated continuations.

Examples:
    >>> import interp, torch
    >>> from interp.steering.directions import direction_spec
    >>> from interp.steering.evaluate import evaluate_edits
    >>> lm = interp.load_model("tiny-gpt2")
    >>> spec = direction_spec(1, torch.ones(lm.d_model), 0.5, 4.0)
    >>> frame, _ = evaluate_edits(lm, {"ones": spec}, ["the cat"], "fr", max_new_tokens=3, score=False)
    >>> list(frame["label"])
    ['ones']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from interp.attribution.language_steering import (
    Embedder,
    LanguageIdentifier,
    SteeringSpec,
    fidelity,
    score_language,
    steering_hooks,
    unrelated_similarity,
)
from interp.generation import Generation, GenerationState, generate
from interp.models import LoadedModel
from interp.steering.coherence import CoherenceJudge


@dataclass(frozen=True)
class Baseline:
    """The unsteered generation of a prompt set, with its fidelity floor."""

    generation: Generation
    unrelated_similarity: float


def baseline(lm: LoadedModel, prompts: Sequence[str], *, max_new_tokens: int = 24, batch_size: int = 32,
             embedder: Embedder | None = None, fidelity_floor: bool = True) -> Baseline:
    out = generate(lm, list(prompts), max_new_tokens, batch_size=batch_size)
    floor = unrelated_similarity(out.texts, embedder) if fidelity_floor else float("nan")
    return Baseline(out, floor)


def evaluate_edits(
    lm: LoadedModel, edits: dict[str, SteeringSpec], prompts: Sequence[str], target: str, *,
    max_new_tokens: int = 24, batch_size: int = 32, judge: CoherenceJudge | None = None,
    identifier: LanguageIdentifier | None = None, embedder: Embedder | None = None, base: Baseline | None = None,
    with_fidelity: bool = False, score: bool = True, progress: bool | None = False,
) -> tuple[pd.DataFrame, Generation]:
    """Every (edit, prompt) pair in one batched, KV-cached generation; one scored row each.

    ``with_fidelity`` also embeds the continuations (needs ``base``, the unsteered generation); ``score=False``
    returns the texts only. Returns (frame, generation).
    """
    prompts = list(prompts)
    labels = list(edits)
    row_specs: list[SteeringSpec | None] = [edits[label] for label in labels for _ in prompts]
    row_prompts = [p for _ in labels for p in prompts]
    state = GenerationState()
    out = generate(lm, row_prompts, max_new_tokens, fwd_hooks=steering_hooks(row_specs, state), state=state,
                   batch_size=batch_size, progress=progress)
    frame = pd.DataFrame({
        "label": [label for label in labels for _ in prompts],
        "prompt_index": [i for _ in labels for i in range(len(prompts))],
        "prompt": row_prompts, "text": out.texts,
        "tokens": [len(ids) for ids in out.token_ids],
    })
    if not score:
        return frame, out
    scores = score_language(out.texts, target, identifier)
    frame["detected"] = scores.languages
    frame["confidence"] = scores.confidences
    frame["distinct"] = scores.distinct
    frame["success"] = scores.success
    frame["fluent"] = scores.fluent
    if judge is not None:
        verdicts, losses = judge.judge(lm, out.token_ids, [target] * len(out.token_ids))
        frame["alone_loss"] = losses
        frame["coherent"] = [bool(f and v) for f, v in zip(scores.fluent, verdicts, strict=True)]
    if with_fidelity and base is not None:
        refs = [base.generation.texts[i] for i in frame["prompt_index"]]
        frame["fidelity"] = fidelity(out.texts, refs, embedder)
    return frame, out


def summarise(frame: pd.DataFrame, by: Sequence[str] = ("label",)) -> pd.DataFrame:
    """Per group: success, fluent success, coherent success (when judged), fidelity (when measured)."""
    aggs: dict[str, Any] = {"success": ("success", "mean"), "fluent_success": ("fluent", "mean"),
                            "prompts": ("prompt", "count")}
    if "coherent" in frame:
        aggs["coherent_success"] = ("coherent", "mean")
    if "fidelity" in frame:
        aggs["fidelity"] = ("fidelity", "mean")
    if "alone_loss" in frame:
        aggs["alone_loss"] = ("alone_loss", "mean")
    return frame.groupby(list(by), sort=False).agg(**aggs).reset_index()


def rate(values: Sequence[bool] | pd.Series) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


__all__ = ["Baseline", "baseline", "evaluate_edits", "rate", "summarise"]
