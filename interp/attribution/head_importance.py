"""Head importance: every scoring method on one task, with the agreement between them.

Methods (Michel, Levy & Neubig 2019 and the papers below; docs/analyses/head-importance.md; the engines live in :mod:`interp.attribution.ablation_scan` and
:mod:`interp.attribution.head_scores`, the interventions in :mod:`interp.interventions`):

* single-head ablation effect (Michel et al. 2019) on the loss, the logit difference, the answer-position
  KL and the accuracy — an exact scan that reuses the clean run;
* gradient (Taylor) importance with per-layer ℓ2 normalisation (Michel et al. 2019 §4.1);
* exact activation patching from a corrupted run (or a mean) next to its first-order estimate,
  attribution patching, with the Spearman rank correlation between them;
* direct logit attribution per head through the frozen final-norm scale (Lieberum et al. 2023);
* induction and previous-token attention scores (Olsson et al. 2022) on the induction task;
* AttentionInfluence document scores (Hua et al. 2025): per document, the loss change with the top
  heads masked.

Examples:
    >>> import interp
    >>> from interp.tasks import induction_task
    >>> from interp.attribution.head_importance import head_importance
    >>> lm = interp.load_model("tiny-gpt2")
    >>> scores = head_importance(lm, induction_task(lm, n_sequences=2, half_length=6), documents=["Some text."])
    >>> scores.top_heads(2).columns[:3].tolist()
    ['head', 'layer', 'ablation_delta_loss']
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import OptionError
from interp.interventions import Head, cache_head_outputs, head_means
from interp.models import LoadedModel
from interp.results import tidy_frame
from interp.tasks import Task

from .ablation_scan import METRICS, ScanResult, ablation_scan
from .head_scores import (
    GradientImportance,
    LogitAttribution,
    PatternScores,
    attribution_patching,
    direct_logit_attribution,
    gradient_importance,
    head_masking_loss_delta,
    induction_pattern_scores,
)


def spearman(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """Spearman rank correlation of two equally shaped arrays (average ranks for ties, NaNs dropped).

    Examples:
        >>> spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 30.0, 20.0]))
        0.5
    """
    x = pd.Series(np.asarray(a, dtype=float).ravel())
    y = pd.Series(np.asarray(b, dtype=float).ravel())
    keep = x.notna() & y.notna()
    if keep.sum() < 3:
        return float("nan")
    rx, ry = x[keep].rank(), y[keep].rank()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


@dataclass(frozen=True)
class HeadImportance:
    """All head scores for one model and task; shapes ``[layer, head]`` unless noted."""

    task_name: str
    task_description: str
    scan: ScanResult
    gradient: GradientImportance
    patching_exact: Float[Tensor, "layer head"]  # M(patched) − M(clean)
    patching_attribution: Float[Tensor, "layer head"]  # first-order estimate of the same
    patching_metric: str
    patching_reference: str
    dla: LogitAttribution | None
    patterns: PatternScores | None
    influence: pd.DataFrame | None
    influence_heads: tuple[Head, ...]
    seconds: dict[str, float] = field(default_factory=dict)
    params: dict = field(default_factory=dict)

    @property
    def patching_spearman(self) -> float:
        """Rank agreement of attribution patching with exact patching over all heads."""
        return spearman(self.patching_exact, self.patching_attribution)

    def score_maps(self) -> dict[str, Float[Tensor, "layer head"]]:
        """Every per-head score by frame metric name (signed as measured)."""
        maps: dict[str, Tensor] = {}
        for metric in self.scan.values:
            name = "ablation_kl" if metric == "kl" else f"ablation_delta_{metric}"
            maps[name] = self.scan.delta(metric)
        maps["gradient_importance"] = self.gradient.normalized
        maps["gradient_importance_raw"] = self.gradient.raw
        maps["patching_exact"] = self.patching_exact
        maps["patching_attribution"] = self.patching_attribution
        if self.dla is not None:
            maps["dla"] = self.dla.mean_heads
        if self.patterns is not None:
            maps["induction_score"] = self.patterns.induction
            maps["previous_token_score"] = self.patterns.previous_token
        # On the host: frames, figures and rankings read them with NumPy whatever device the model is on.
        return {name: values.detach().cpu() for name, values in maps.items()}

    def importance_maps(self) -> dict[str, Float[Tensor, "layer head"]]:
        """Scores oriented so that larger = more important, for rankings and the agreement matrix."""
        maps = self.score_maps()
        out = {"ablation Δloss": maps.get("ablation_delta_loss")}
        if "ablation_delta_logit_diff" in maps:
            out["ablation −Δlogit diff"] = -maps["ablation_delta_logit_diff"]
        if "ablation_kl" in maps:
            out["ablation KL"] = maps["ablation_kl"]
        out["gradient (Michel)"] = maps["gradient_importance"]
        sign = 1.0 if self.patching_metric == "loss" else -1.0
        out["exact patching"] = sign * maps["patching_exact"]
        out["attribution patching"] = sign * maps["patching_attribution"]
        if "dla" in maps:
            out["|DLA|"] = maps["dla"].abs()
        if "induction_score" in maps:
            out["induction score"] = maps["induction_score"]
        return {k: v for k, v in out.items() if v is not None}

    def agreement(self) -> pd.DataFrame:
        """Spearman rank correlations between the importance maps (over all heads)."""
        maps = self.importance_maps()
        names = list(maps)
        table = [[spearman(maps[a], maps[b]) for b in names] for a in names]
        return pd.DataFrame(table, index=names, columns=names)

    def top_heads(self, k: int = 10, by: str = "ablation_delta_loss") -> pd.DataFrame:
        """The ``k`` heads with the largest ``by`` score, with every other score alongside."""
        maps = self.score_maps()
        if by not in maps:
            raise OptionError(f"unknown score {by!r}: choose one of {', '.join(maps)}")
        n_layers, n_heads = maps[by].shape
        layer_idx, head_idx = np.meshgrid(range(n_layers), range(n_heads), indexing="ij")
        labels = [f"{layer}.{head}" for layer, head in zip(layer_idx.ravel(), head_idx.ravel(), strict=True)]
        frame = pd.DataFrame({"head": labels, "layer": layer_idx.ravel(),
                              **{name: m.numpy().ravel() for name, m in maps.items()}})
        order = frame[by].sort_values(ascending=(by == "ablation_delta_logit_diff")).index
        return frame.loc[order].head(k).reset_index(drop=True)

    def to_frame(self) -> pd.DataFrame:
        """Tidy rows: ``layer, head, metric, value`` per head score; clean values and documents too."""
        blocks = []
        for name, values in self.score_maps().items():
            n_layers, n_heads = values.shape
            layer_idx, head_idx = np.meshgrid(range(n_layers), range(n_heads), indexing="ij")
            blocks.append(pd.DataFrame({"layer": layer_idx.ravel(), "head": head_idx.ravel(), "metric": name,
                                        "value": values.double().numpy().ravel()}))
        extra = [dict(metric=f"clean_{m}", value=v) for m, v in self.scan.clean.items()]
        extra.append(dict(metric="patching_spearman", value=self.patching_spearman))
        frame = pd.concat([*blocks, pd.DataFrame(extra)], ignore_index=True)
        if self.influence is not None:
            docs = self.influence
            frame = pd.concat([frame,
                               pd.DataFrame({"metric": "influence_delta", "value": docs["delta"], "document": docs["document"]}),
                               pd.DataFrame({"metric": "influence_relative", "value": docs["relative"],
                                             "document": docs["document"]})], ignore_index=True)
        tidy = tidy_frame(frame, extra_columns=("document",))
        if "document" in tidy:
            tidy["document"] = tidy["document"].astype("Int64")
        return tidy


def default_influence_count(lm: LoadedModel) -> int:
    """About 5% of the heads (Hua et al. mask the top ~5% retrieval heads), at least one."""
    return max(1, round(0.05 * lm.n_layers * lm.n_heads))


def head_importance(
    lm: LoadedModel,
    task: Task,
    *,
    mode: str = "zero",
    eps: float | None = None,
    metrics: Sequence[str] = METRICS,
    documents: Sequence[str] = (),
    influence_heads: int | Sequence[Head] | None = None,
    influence_mode: str = "zero",
    max_tokens: int = 64,
    batch_size: int = 8,
    max_rows: int = 64,
) -> HeadImportance:
    """Run every head-importance method on ``task``.

    Args:
        task: from :mod:`interp.tasks` (induction, capitals, or the user's file).
        mode, eps: the single-head ablation (``zero`` by default; ``mean`` uses the task's own prompts).
        metrics: scanned metrics (the loss only when the task has no answers).
        documents: texts for the AttentionInfluence scores (skipped when empty).
        influence_heads: heads to mask for AttentionInfluence, or how many of the top heads (by induction
            score on the induction task, else by ablation Δloss); default about 5% of the heads.
        max_rows: stacked rows per pass of the scans.

    Examples:
        >>> import interp
        >>> from interp.tasks import induction_task
        >>> lm = interp.load_model("tiny-llama")
        >>> result = head_importance(lm, induction_task(lm, n_sequences=2, half_length=5))
        >>> result.influence is None
        True
    """
    timings: dict[str, float] = {}
    tt = task.tensors(lm)
    if not task.has_answers:
        metrics = tuple(m for m in metrics if m == "loss") or ("loss",)
    reference = None
    if mode == "mean":
        reference = head_means(lm, tt.batch)
    elif mode == "resample":
        if tt.corrupted is None:
            raise OptionError("mode 'resample' needs corrupted prompts: the task gives none")
        reference = cache_head_outputs(lm, tt.corrupted)

    started = time.perf_counter()
    scan = ablation_scan(lm, tt, mode=mode, eps=eps, reference=reference, metrics=metrics, max_rows=max_rows)
    timings["ablation_scan"] = time.perf_counter() - started

    started = time.perf_counter()
    gradient = gradient_importance(lm, tt)
    timings["gradient"] = time.perf_counter() - started

    started = time.perf_counter()
    patch_metric = "logit_diff" if task.has_answers else "loss"
    if tt.corrupted is not None:
        patch_reference, patch_name = cache_head_outputs(lm, tt.corrupted), "corrupted run"
        patch_mode = "resample"
    else:
        patch_reference, patch_name = head_means(lm, tt.batch), "mean over the task's prompts"
        patch_mode = "mean"
    exact = ablation_scan(lm, tt, mode=patch_mode, reference=patch_reference, metrics=(patch_metric,),
                          max_rows=max_rows).delta(patch_metric)
    estimate = attribution_patching(lm, tt, reference=patch_reference, metric=patch_metric).estimate
    timings["patching"] = time.perf_counter() - started

    started = time.perf_counter()
    dla = direct_logit_attribution(lm, tt) if task.has_answers else None
    patterns = induction_pattern_scores(lm, task) if task.half_length is not None else None
    timings["dla_and_patterns"] = time.perf_counter() - started

    influence = None
    chosen: tuple[Head, ...] = ()
    if documents:
        started = time.perf_counter()
        if influence_heads is None or isinstance(influence_heads, int):
            count = default_influence_count(lm) if influence_heads is None else int(influence_heads)
            if not 1 <= count <= lm.n_layers * lm.n_heads:
                raise OptionError(f"influence_heads must be between 1 and {lm.n_layers * lm.n_heads}, got {count}")
            ranking = patterns.induction if patterns is not None else scan.importance(metrics[0])
            flat = torch.nan_to_num(ranking, nan=-float("inf")).flatten().argsort(descending=True)[:count]
            chosen = tuple((int(i) // lm.n_heads, int(i) % lm.n_heads) for i in flat)
        else:
            chosen = tuple(influence_heads)
        influence = head_masking_loss_delta(lm, documents, chosen, mode=influence_mode, max_tokens=max_tokens,
                                            batch_size=batch_size)
        timings["attention_influence"] = time.perf_counter() - started
    return HeadImportance(
        task_name=task.name, task_description=task.description, scan=scan, gradient=gradient,
        patching_exact=exact, patching_attribution=estimate, patching_metric=patch_metric,
        patching_reference=patch_name, dla=dla, patterns=patterns, influence=influence, influence_heads=chosen,
        seconds={k: round(v, 3) for k, v in timings.items()},
        params=dict(task=task.name, task_parameters=task.parameters, mode=mode, eps=eps, metrics=list(scan.values),
                    influence_mode=influence_mode, max_tokens=max_tokens, max_rows=max_rows,
                    n_examples=len(task.examples)),
    )
