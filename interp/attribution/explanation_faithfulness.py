"""Are token attributions faithful? Deletion and insertion curves, comprehensiveness and sufficiency.

Method (DeYoung et al. 2020, ERASER; Neely et al. 2022 recommend faithfulness over agreement;
docs/analyses/explanation-agreement.md): rank a prompt's scored tokens by a method's signed score
(most supporting first), then remove (deletion) or keep only (insertion) the top ``⌈f·n⌉`` of them for each
fraction ``f``, and read the target's probability at the predicting position. Removing a token puts the
baseline (the pad token's embedding, the same as integrated gradients') in its place; positions are kept.
Comprehensiveness at f is ``p(x) − p(x without its top f)`` and sufficiency ``p(x) − p(only its top f)``;
their AOPC is the mean over f ∈ {0.1, 0.2, 0.3, 0.5}. A faithful method has high comprehensiveness and low
sufficiency; a random ranking (the mean over ``random_orders`` shuffles) is the floor.

Examples:
    >>> import interp
    >>> from interp.attribution.token_attribution import token_attributions
    >>> from interp.attribution.explanation_faithfulness import explanation_faithfulness
    >>> lm = interp.load_model("tiny-gpt2")
    >>> explained = token_attributions(lm, ["The cat sat on"], methods=("occlusion",))
    >>> faith = explanation_faithfulness(lm, explained, random_orders=2)
    >>> sorted(faith.summary.index)
    ['occlusion', 'random']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from interp.attribution.token_attribution import (
    TokenAttributions,
    baseline_embeddings,
    input_embeddings,
    target_score,
)
from interp.errors import OptionError
from interp.models import LoadedModel
from interp.results import tidy_frame

#: Curve points (fractions of the scored tokens removed or kept).
FRACTIONS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
#: ERASER's AOPC bins as ../shared/METHODS.md §13.4 gives them.
AOPC_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5)
RANDOM = "random"


@dataclass(frozen=True)
class ExplanationFaithfulness:
    """Deletion and insertion curves per prompt and method, and their summaries.

    Attributes:
        curves: one row per (prompt, method, kind, fraction) with ``n_tokens`` and ``probability``;
            ``kind`` is ``deletion`` (top tokens removed) or ``insertion`` (only top tokens kept).
        full_probability: ``p(target | x)`` per prompt.
    """

    curves: pd.DataFrame
    full_probability: np.ndarray
    methods: tuple[str, ...]
    fractions: tuple[float, ...]
    random_orders: int
    params: dict[str, Any] = field(default_factory=dict)

    def per_prompt(self) -> pd.DataFrame:
        """Per (prompt, method): comprehensiveness and sufficiency AOPC, deletion and insertion areas."""
        rows = []
        for key, group in self.curves.groupby(["prompt", "method"], sort=False):
            prompt, method = int(key[0]), str(key[1])  # pyright: ignore[reportIndexIssue, reportArgumentType]
            full = self.full_probability[prompt]
            deletion = group[group.kind == "deletion"].set_index("fraction")["probability"]
            insertion = group[group.kind == "insertion"].set_index("fraction")["probability"]
            aopc = [f for f in AOPC_FRACTIONS if f in deletion.index]
            rows.append(dict(
                prompt=prompt, method=method,
                comprehensiveness=float(np.mean([full - deletion[f] for f in aopc])),
                sufficiency=float(np.mean([full - insertion[f] for f in aopc])),
                deletion_area=float(np.trapezoid(deletion.to_numpy(), deletion.index.to_numpy())),
                insertion_area=float(np.trapezoid(insertion.to_numpy(), insertion.index.to_numpy()))))
        return pd.DataFrame(rows)

    @property
    def summary(self) -> pd.DataFrame:
        """Per method: the mean and standard deviation over prompts of each per-prompt figure."""
        per = self.per_prompt().drop(columns="prompt")
        grouped = per.groupby("method", sort=False)
        mean, std = grouped.mean(), grouped.std(ddof=0)
        out = mean.join(std, rsuffix="_std")
        return out.reindex([m for m in (*self.methods, RANDOM) if m in out.index])

    @property
    def frame(self) -> pd.DataFrame:
        """Tidy rows: the curves (``metric`` deletion/insertion, ``fraction``) and the per-prompt summaries."""
        curves = self.curves.rename(columns={"kind": "metric", "probability": "value"})
        per = self.per_prompt().melt(id_vars=["prompt", "method"], var_name="metric", value_name="value")
        frame = tidy_frame(pd.concat([curves, per], ignore_index=True),
                           extra_columns=("prompt", "method", "fraction", "n_tokens"))
        frame["prompt"] = frame["prompt"].astype("Int64")
        frame["n_tokens"] = frame["n_tokens"].astype("Int64")
        return frame


def token_count(fraction: float, n: int) -> int:
    """How many of ``n`` tokens a fraction covers: ``⌈f·n⌉`` (at least one for f > 0)."""
    return min(n, max(1 if fraction > 0 else 0, math.ceil(fraction * n - 1e-9)))


def ranking(values: np.ndarray) -> np.ndarray:
    """Indices from the most to the least supporting token (stable on ties)."""
    return np.argsort(-values, kind="stable")


def explanation_faithfulness(
    lm: LoadedModel,
    attributions: TokenAttributions,
    *,
    fractions: Sequence[float] = FRACTIONS,
    random_orders: int = 5,
    seed: int = 0,
    max_rows: int = 64,
) -> ExplanationFaithfulness:
    """Deletion and insertion curves of every method in ``attributions`` (see the module docstring).

    Examples:
        >>> import interp
        >>> from interp.attribution.token_attribution import token_attributions
        >>> lm = interp.load_model("tiny-llama")
        >>> explained = token_attributions(lm, ["abcd"], methods=("saliency",))
        >>> faith = explanation_faithfulness(lm, explained, fractions=(0.0, 0.5, 1.0), random_orders=1)
        >>> len(faith.curves)                 # 2 methods × 2 kinds × 3 fractions
        12
    """
    chosen = tuple(sorted({float(f) for f in fractions}))
    if not chosen or chosen[0] < 0 or chosen[-1] > 1:
        raise OptionError(f"fractions must lie in [0, 1], got {list(fractions)}")
    if random_orders < 1:
        raise OptionError(f"random_orders must be at least 1, got {random_orders}")
    generator = np.random.default_rng(seed)
    batch = lm.pad([list(ids) for ids in attributions.token_ids])
    embedding = input_embeddings(lm, batch)
    baseline = baseline_embeddings(lm, batch, torch.ones_like(batch.tokens, dtype=torch.bool))
    # one row per distinct (prompt, kept positions); the curves index into it
    masks: dict[tuple[int, bytes], int] = {}
    plan: list[tuple[int, str, str, float, int, int]] = []  # prompt, method, kind, fraction, n_tokens, row
    keep_rows: list[tuple[int, np.ndarray]] = []

    def row_for(prompt: int, keep: np.ndarray) -> int:
        key = (prompt, keep.tobytes())
        if key not in masks:
            masks[key] = len(keep_rows)
            keep_rows.append((prompt, keep))
        return masks[key]

    for prompt in range(len(attributions.prompts)):
        positions = attributions.scored_positions(prompt)
        n_positions = len(attributions.token_ids[prompt])
        orders = {m: positions[ranking(attributions.values(m, prompt))] for m in attributions.methods}
        shuffles = [positions[generator.permutation(len(positions))] for _ in range(random_orders)]
        for method, order_list in [(m, [o]) for m, o in orders.items()] + [(RANDOM, shuffles)]:
            for order in order_list:
                for fraction in chosen:
                    count = token_count(fraction, len(positions))
                    top = order[:count]
                    deleted = np.ones(n_positions, dtype=bool)
                    deleted[top] = False
                    inserted = np.ones(n_positions, dtype=bool)
                    inserted[np.setdiff1d(positions, top)] = False
                    plan.append((prompt, method, "deletion", fraction, count, row_for(prompt, deleted)))
                    plan.append((prompt, method, "insertion", fraction, count, row_for(prompt, inserted)))
    full_rows = [row_for(p, np.ones(len(ids), dtype=bool)) for p, ids in enumerate(attributions.token_ids)]

    probabilities = np.zeros(len(keep_rows))
    width = embedding.shape[1]
    with torch.inference_mode():
        for start in range(0, len(keep_rows), max_rows):
            chunk = keep_rows[start:start + max_rows]
            index = torch.tensor([p for p, _ in chunk])
            keep = torch.zeros(len(chunk), width, dtype=torch.bool)
            for r, (_, kept) in enumerate(chunk):
                keep[r, :len(kept)] = torch.from_numpy(kept)
            # padding stays as it is; removed tokens get the baseline (the pad token)
            pad = ~batch.attention_mask[index].bool()
            embeds = torch.where((keep | pad).unsqueeze(-1), embedding[index], baseline[index])
            probabilities[start:start + len(chunk)] = target_score(
                lm, embeds, batch.tokens[index], batch.attention_mask[index],
                torch.tensor([attributions.predict_positions[p] for p, _ in chunk]),
                torch.tensor([attributions.targets[p] for p, _ in chunk]),
                torch.full((len(chunk),), -1), probability=True).double().cpu().numpy()
    curves = pd.DataFrame([dict(prompt=p, method=m, kind=k, fraction=f, n_tokens=n, probability=probabilities[r])
                           for p, m, k, f, n, r in plan])
    # the random floor: mean over the shuffles
    curves = curves.groupby(["prompt", "method", "kind", "fraction"], sort=False, as_index=False).agg(
        n_tokens=("n_tokens", "first"), probability=("probability", "mean"))
    return ExplanationFaithfulness(
        curves=curves, full_probability=probabilities[full_rows], methods=attributions.methods, fractions=chosen,
        random_orders=random_orders,
        params=dict(fractions=list(chosen), aopc_fractions=list(AOPC_FRACTIONS), random_orders=random_orders,
                    seed=seed, removal="pad-token embedding, positions kept", order="signed score, descending",
                    forward_rows=len(keep_rows)))
