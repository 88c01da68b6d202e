"""How far token attributions agree: rank correlation and top-k overlap between every pair of methods.

Method (Neely et al., *A Song of (Dis)agreement*, 2022; docs/analyses/explanation-agreement.md): per
example and per pair of methods, over the prompt's scored tokens (BOS and other special tokens left out),
Kendall's τ_b and Spearman's ρ between the two methods' token scores, and the top-k overlap
``|top_k(a) ∩ top_k(b)| / k``. Scores are compared by magnitude by default (``|value|``: attention has no
sign, and a token that strongly opposes the prediction matters as much as one that supports it); pass
``magnitude=False`` to compare signed scores. A method that scores every token the same (uniform attention)
has no ranking: its correlations are NaN and are left out of the means, which say how many examples they
cover.

Examples:
    >>> import interp
    >>> from interp.attribution.token_attribution import token_attributions
    >>> from interp.attribution.explanation_agreement import explanation_agreement
    >>> lm = interp.load_model("tiny-gpt2")
    >>> explained = token_attributions(lm, ["The cat sat on", "A dog ran"], methods=("rollout", "occlusion"))
    >>> agreement = explanation_agreement(explained)
    >>> float(agreement.matrix("spearman").loc["rollout", "rollout"])
    1.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations_with_replacement
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from interp.attribution.token_attribution import TokenAttributions
from interp.errors import OptionError
from interp.results import tidy_frame

STATISTICS: tuple[str, ...] = ("kendall", "spearman", "top_k")


@dataclass(frozen=True)
class ExplanationAgreement:
    """Per-example agreement of every pair of methods.

    Attributes:
        pairs: one row per (prompt, method_a, method_b) with ``kendall``, ``spearman``, ``top_k`` and
            ``n_tokens`` (both orders of each pair, and each method with itself).
        methods: the methods compared, in order; top_k: the k of the overlap; magnitude: compared ``|value|``.
    """

    pairs: pd.DataFrame
    methods: tuple[str, ...]
    top_k: int
    magnitude: bool
    params: dict[str, Any] = field(default_factory=dict)

    def matrix(self, statistic: str = "spearman", how: str = "mean") -> pd.DataFrame:
        """A method × method matrix of ``statistic`` over examples: ``how`` is mean, std or count."""
        if statistic not in STATISTICS:
            raise OptionError(f"unknown agreement statistic {statistic!r}: choose from {', '.join(STATISTICS)}")
        if how not in ("mean", "std", "count"):
            raise OptionError(f"how must be mean, std or count, got {how!r}")
        table = self.pairs.pivot_table(index="method_a", columns="method_b", values=statistic, aggfunc=how,
                                       dropna=False)
        return table.reindex(index=list(self.methods), columns=list(self.methods)).astype(float)

    def pair_table(self) -> pd.DataFrame:
        """One row per unordered pair of different methods: mean and sd over examples of each statistic."""
        pairs = self.pairs[self.pairs.method_a < self.pairs.method_b]
        return pairs.groupby(["method_a", "method_b"]).agg(
            spearman_mean=("spearman", "mean"), spearman_sd=("spearman", "std"), kendall_mean=("kendall", "mean"),
            kendall_sd=("kendall", "std"), top_k_mean=("top_k", "mean"), examples=("spearman", "count")).reset_index()

    def between(self, first: Sequence[str], second: Sequence[str], statistic: str = "spearman") -> np.ndarray:
        """The mean ``statistic`` of every pair with one method in ``first`` and a different one in ``second``."""
        matrix = self.matrix(statistic)
        return np.array([matrix.loc[a, b] for a in first for b in second if a != b and a in matrix.index
                         and b in matrix.columns], dtype=float)

    @property
    def frame(self) -> pd.DataFrame:
        """Tidy rows: ``metric`` is the statistic, ``method`` and ``other_method`` the pair, ``prompt`` the example."""
        long = self.pairs.melt(id_vars=["prompt", "method_a", "method_b", "n_tokens"], value_vars=list(STATISTICS),
                               var_name="metric", value_name="value")
        long = long.rename(columns={"method_a": "method", "method_b": "other_method"})
        frame = tidy_frame(long, extra_columns=("prompt", "method", "other_method"))
        frame["prompt"] = frame["prompt"].astype("Int64")
        return frame


def rank_agreement(a: np.ndarray, b: np.ndarray, k: int) -> tuple[float, float, float]:
    """Kendall's τ_b, Spearman's ρ and the top-k overlap of two score vectors (NaN where undefined)."""
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        tau = rho = float("nan")
    else:
        tau = float(np.asarray(stats.kendalltau(a, b, variant="b")[0]))
        rho = float(np.asarray(stats.spearmanr(a, b)[0]))
    k = min(k, len(a))
    top_a = set(np.argsort(-a, kind="stable")[:k].tolist())
    top_b = set(np.argsort(-b, kind="stable")[:k].tolist())
    return tau, rho, len(top_a & top_b) / k if k else float("nan")


def explanation_agreement(attributions: TokenAttributions, *, top_k: int = 3, magnitude: bool = True) -> ExplanationAgreement:
    """Rank agreement of every pair of methods on every example (see the module docstring).

    Examples:
        >>> import interp
        >>> from interp.attribution.token_attribution import token_attributions
        >>> lm = interp.load_model("tiny-llama")
        >>> explained = token_attributions(lm, ["abcd"], methods=("saliency", "gradient_x_input"))
        >>> explanation_agreement(explained, top_k=2).pairs.shape[0]     # 2 × 2 ordered pairs
        4
    """
    if top_k < 1:
        raise OptionError(f"top_k must be at least 1, got {top_k}")
    rows: list[dict[str, Any]] = []
    for prompt in range(len(attributions.prompts)):
        values = {m: attributions.values(m, prompt) for m in attributions.methods}
        if magnitude:
            values = {m: np.abs(v) for m, v in values.items()}
        for first, second in combinations_with_replacement(attributions.methods, 2):
            tau, rho, overlap = rank_agreement(values[first], values[second], top_k)
            n_tokens = len(values[first])
            for a, b in {(first, second), (second, first)}:
                rows.append(dict(prompt=prompt, method_a=a, method_b=b, kendall=tau, spearman=rho, top_k=overlap,
                                 n_tokens=n_tokens))
    return ExplanationAgreement(pairs=pd.DataFrame(rows), methods=attributions.methods, top_k=top_k,
                                magnitude=magnitude, params=dict(top_k=top_k, magnitude=magnitude,
                                                                 kendall="tau-b (scipy)", spearman="scipy"))
