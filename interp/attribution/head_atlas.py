"""Head atlas: every head's detector scores against their nulls, its roles, and what the other analyses say.

:func:`head_atlas` runs the detectors of :mod:`interp.attribution.head_detectors` (one streaming pass over
the prompts, one over shipped repeated random tokens, and two weight-only scores), assigns each head zero
or more **roles** from stated, adjustable thresholds, and joins results it computes cheaply itself:

* **importance** — how much zero-ablating the head hurts the induction task (seeded repeated random
  tokens): the drop of the logit difference of the answer ``R[-1]`` against a random token, or the rise of
  the loss on the repeated half (:func:`interp.attribution.ablation_scan.ablation_scan`);
* **Ships** — Zhou et al.'s KL of the next-token distribution when the head's attention is made uniform,
  on a few shipped harmful requests in the model's chat template (only where the tokenizer has one;
  :func:`interp.attribution.safety_heads.ships_scan`);
* **composition partners** — each head's top Q-, K- and V-composition partners, as writer or reader (the
  scores of :func:`interp.attribution.channels.composition_scores`, computed here from ``d_model × d_model``
  Gram matrices, :func:`composition_from_grams`; a partner in an earlier layer writes into the head, one in
  a later layer reads from it).

Roles (each from one metric; a role is claimed when the score passes its threshold **and** its confidence —
how far it sits from its null toward a perfect score, below — is at least ``min_confidence``, default 0.1,
so a score that only equals its null, such as a positional head's induction score, claims nothing):

==================  ======================  =========================================================
role                metric                  rule (default threshold)
==================  ======================  =========================================================
sink                ``bos_attention``       α₀ ≥ 0.5 (natural text)
previous-token      ``previous_token``      ≥ 0.4 (natural text)
duplicate-token     ``duplicate_token``     ≥ 0.3 (repeated random tokens)
induction           ``induction``           ≥ 0.3 (repeated random tokens)
copying             ``ov_copying``          ≥ +0.7
copy-suppression    ``ov_copying``          ≤ −0.7
successor           ``successor``           ≥ 0.5
local               ``attention_distance``  mean distance of the non-first attention ≤ 2.5 tokens; not
                                            given to a head that is already previous-token
diffuse             ``attention_entropy``   normalised entropy ≥ 0.75 (1 = uniform); no confidence floor
==================  ======================  =========================================================

The nulls are those of :mod:`interp.attribution.head_detectors`: uniform attention (and, for induction and
duplicate-token, the same head on sequences where nothing repeats) for the attention scores, shuffled input
tokens for the weight scores. Previous-token, duplicate-token and induction use ``exclude_bos=True`` by
default here (TransformerLens's default is False): in models with attention sinks most attention goes to
the first token and would otherwise cap every pattern score well below 1.

**Confidence** of a role, for every head (claimed or not), in [0, 1]: how far the score sits from its
null toward a perfect score — ``(v − null) / (1 − null)`` for scores in [0, 1] (``(−v − null) / (1 − null)``
for copy suppression), ``(null − v) / null`` for the attention distance (0 tokens = perfect), and the
normalised entropy itself for ``diffuse`` (whose null, uniform attention, is the perfect score).

Examples:
    >>> import interp
    >>> from interp.attribution.head_atlas import head_atlas
    >>> lm = interp.load_model("tiny-gpt2")
    >>> atlas = head_atlas(lm, ["The cat sat on the mat.", "Dogs bark at night."], importance=False,
    ...                    ships_requests=0, progress=False)
    >>> sorted(atlas.to_json())[:4]
    ['confidence', 'examples', 'importance', 'labels']
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import OptionError
from interp.models import LoadedModel
from interp.results import tidy_frame

from .head_detectors import (
    DETECTOR_METRICS,
    AttentionExample,
    attention_detectors,
    check_detector_options,
    ov_copying_scores,
    ov_factors,
    repeated_token_detectors,
    successor_scores,
)


@dataclass(frozen=True)
class RoleRule:
    """How a role is read off one metric: ``above`` (score ≥ threshold), ``negative`` (score ≤ −threshold)
    or ``below`` (score ≤ threshold)."""

    role: str
    metric: str
    direction: str
    meaning: str


ROLE_RULES: tuple[RoleRule, ...] = (
    RoleRule("sink", "bos_attention", "above", "parks most of its attention on the first token (α₀)"),
    RoleRule("previous-token", "previous_token", "above", "attends to the token before the current one"),
    RoleRule("duplicate-token", "duplicate_token", "above", "attends to earlier copies of the current token"),
    RoleRule("induction", "induction", "above", "attends to the token after an earlier copy of the current token"),
    RoleRule("copying", "ov_copying", "above", "its OV circuit raises the logits of the tokens it attends to"),
    RoleRule("copy-suppression", "ov_copying", "negative", "its OV circuit lowers the logits of the tokens it attends to"),
    RoleRule("successor", "successor", "above", "its OV circuit maps ordinal tokens to their successors"),
    RoleRule("local", "attention_distance", "below", "attends within a few tokens (local / positional)"),
    RoleRule("diffuse", "attention_entropy", "above", "spreads its attention nearly uniformly"),
)
#: Every role the atlas can assign, in display order.
ROLES: tuple[str, ...] = tuple(rule.role for rule in ROLE_RULES)
#: Default threshold per metric (see the module docstring; ``ov_copying`` is symmetric: ±threshold).
DEFAULT_THRESHOLDS: dict[str, float] = {
    "bos_attention": 0.5, "previous_token": 0.4, "duplicate_token": 0.3, "induction": 0.3, "ov_copying": 0.7,
    "successor": 0.5, "attention_distance": 2.5, "attention_entropy": 0.75,
}
#: A role also needs this confidence: its score at least 10 % of the way from the null to a perfect score.
DEFAULT_MIN_CONFIDENCE = 0.1
#: Joined per-head results (not detectors): metric names in the tidy frame.
JOIN_METRICS: tuple[str, ...] = ("ablation_importance", "ships")
#: Most floats the example patterns may hold together (keeps the page small).
EXAMPLE_FLOAT_BUDGET = 2_500_000


# ----------------------------------------------------------------------------------------------------
# Options
# ----------------------------------------------------------------------------------------------------
def parse_thresholds(thresholds: str | Mapping[str, float] | None) -> dict[str, float]:
    """The default thresholds updated with ``thresholds`` (a mapping, or ``"metric=value,…"`` text).

    Unknown metric names and values out of range raise a one-line :class:`~interp.errors.OptionError`.

    Examples:
        >>> parse_thresholds("induction=0.5")["induction"]
        0.5
        >>> parse_thresholds({"induction": 2.0})
        Traceback (most recent call last):
        ...
        interp.errors.OptionError: threshold for induction must be in (0, 1], got 2.0
    """
    chosen = dict(DEFAULT_THRESHOLDS)
    if thresholds is None or thresholds == "":
        return chosen
    given: dict[str, Any]
    if isinstance(thresholds, str):
        given = {}
        for part in thresholds.split(","):
            if not part.strip():
                continue
            name, sep, value = part.partition("=")
            if not sep:
                raise OptionError(f"thresholds must look like 'induction=0.3,previous_token=0.4', got {part.strip()!r}")
            try:
                given[name.strip()] = float(value)
            except ValueError:
                raise OptionError(f"threshold for {name.strip()} must be a number, got {value.strip()!r}") from None
    elif isinstance(thresholds, Mapping):
        given = dict(thresholds)
    else:
        raise OptionError(f"thresholds must be a mapping or 'metric=value,…' text, got {type(thresholds).__name__}")
    for name, value in given.items():
        if name not in DEFAULT_THRESHOLDS:
            raise OptionError(f"unknown score name {name!r} in thresholds: choose from {', '.join(DEFAULT_THRESHOLDS)}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise OptionError(f"threshold for {name} must be a number, got {value!r}") from None
        if name == "attention_distance":
            if not 0.0 < number <= 1e6:
                raise OptionError(f"threshold for attention_distance must be a positive number of tokens, got {number}")
        elif not 0.0 < number <= 1.0:
            raise OptionError(f"threshold for {name} must be in (0, 1], got {number}")
        chosen[name] = number
    return chosen


def parse_roles(roles: str | Sequence[str] | None) -> tuple[str, ...]:
    """Roles to assign: ``"all"``/None, a comma-separated text or a sequence of role names.

    Examples:
        >>> parse_roles("induction, previous-token")
        ('previous-token', 'induction')
        >>> parse_roles("inductive")
        Traceback (most recent call last):
        ...
        interp.errors.OptionError: unknown role 'inductive': choose from sink, previous-token, duplicate-token, induction, copying, copy-suppression, successor, local, diffuse (or all)
    """
    if roles is None or (isinstance(roles, str) and roles.strip() in ("", "all")):
        return ROLES
    names = [r.strip() for r in roles.split(",")] if isinstance(roles, str) else [str(r).strip() for r in roles]
    names = [n for n in names if n]
    for name in names:
        if name not in ROLES:
            raise OptionError(f"unknown role {name!r}: choose from {', '.join(ROLES)} (or all)")
    if not names:
        raise OptionError(f"no role given: choose from {', '.join(ROLES)} (or all)")
    return tuple(r for r in ROLES if r in names)


# ----------------------------------------------------------------------------------------------------
# Roles
# ----------------------------------------------------------------------------------------------------
def role_confidence(rule: RoleRule, value: Tensor, null: Tensor) -> Tensor:
    """Confidence in [0, 1] of ``rule`` for every head (see the module docstring); NaN where the score is."""
    v, n = value.double(), null.double()
    if rule.role == "diffuse":
        out = v
    elif rule.direction == "below":
        out = torch.where(n > 0, (n - v) / n.clamp(min=1e-12), torch.zeros_like(v))
    else:
        signed = -v if rule.direction == "negative" else v
        out = torch.where(n < 1, (signed - n) / (1 - n).clamp(min=1e-12), torch.zeros_like(v))
    return torch.where(torch.isnan(v), v, out.clamp(0.0, 1.0)).float()


def role_claimed(rule: RoleRule, value: Tensor, null: Tensor, threshold: float,
                 min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> Tensor:
    """Boolean ``[layer, head]``: the score passes its threshold, and its confidence (the distance from the
    null toward a perfect score, :func:`role_confidence`) is at least ``min_confidence`` — so it is beyond
    the null by a margin, not by float noise."""
    v = value.double()
    if rule.direction == "below":
        passes = v <= threshold
    elif rule.direction == "negative":
        passes = -v >= threshold
    else:
        passes = v >= threshold
    confident = role_confidence(rule, value, null).double() >= min_confidence
    return passes & confident & ~torch.isnan(v)


def assign_roles(scores: Mapping[str, Tensor], nulls: Mapping[str, Tensor], thresholds: Mapping[str, float],
                 roles: Sequence[str] = ROLES, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                 ) -> tuple[tuple[tuple[tuple[str, ...], ...], ...], dict[str, Tensor]]:
    """``(labels[layer][head], confidence[role])``. A role whose metric was not computed is never claimed
    (its confidence is NaN). ``local`` is not given to a head that is already ``previous-token``."""
    any_metric = next(iter(scores.values()))
    n_layers, n_heads = any_metric.shape
    claimed: dict[str, Tensor] = {}
    confidence: dict[str, Tensor] = {}
    for rule in ROLE_RULES:
        if rule.metric not in scores:
            confidence[rule.role] = torch.full((n_layers, n_heads), float("nan"))
            continue
        value, null = scores[rule.metric], nulls[rule.metric]
        confidence[rule.role] = role_confidence(rule, value, null)
        if rule.role in roles:
            claimed[rule.role] = role_claimed(rule, value, null, thresholds[rule.metric], min_confidence)
    if "local" in claimed and "previous_token" in scores:
        previous = role_claimed(ROLE_RULES[1], scores["previous_token"], nulls["previous_token"],
                                thresholds["previous_token"], min_confidence)
        claimed["local"] = claimed["local"] & ~previous
    labels = tuple(
        tuple(tuple(role for role in ROLES if role in claimed and bool(claimed[role][layer, head]))
              for head in range(n_heads))
        for layer in range(n_layers))
    return labels, confidence


# ----------------------------------------------------------------------------------------------------
# The atlas
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Partner:
    """A composition partner: ``mode`` Q/K/V, the partner head and the composition score (Elhage et al.)."""

    layer: int
    head: int
    mode: str
    score: float

    def as_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "head": self.head, "mode": self.mode, "score": round(self.score, 6)}


@dataclass(frozen=True)
class HeadAtlas:
    """Everything :func:`head_atlas` found; :meth:`to_json` is the page's data, :meth:`to_frame` the tidy table.

    Attributes:
        scores, nulls: detector metric → ``[layer, head]`` (NaN where a detector was not run).
        thresholds: metric → the threshold the roles used.
        roles: the roles that were assigned (a subset of :data:`ROLES`).
        labels: ``labels[layer][head]`` = the head's roles.
        confidence: role → ``[layer, head]`` (see the module docstring).
        partners: ``partners[layer][head]`` = top composition partners.
        importance: how much zero-ablating the head hurts the induction task — the drop of the answer's logit
            difference (``importance_metric="logit_diff"``, the default) or the rise of the loss (``"loss"``) — or None.
        ships: mean Ships (nats) on harmful requests in the chat template, or None.
        examples: example prompts with every head's pattern.
        timings: seconds per part (``detectors`` = the natural-text pass).
    """

    model: str
    n_layers: int
    n_heads: int
    scores: dict[str, Float[Tensor, "layer head"]]
    nulls: dict[str, Float[Tensor, "layer head"]]
    thresholds: dict[str, float]
    roles: tuple[str, ...]
    labels: tuple[tuple[tuple[str, ...], ...], ...]
    confidence: dict[str, Float[Tensor, "layer head"]]
    partners: tuple[tuple[tuple[Partner, ...], ...], ...]
    importance: Float[Tensor, "layer head"] | None
    ships: Float[Tensor, "layer head"] | None
    examples: tuple[AttentionExample, ...]
    notes: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    # -- summaries ---------------------------------------------------------------------------------
    def heads_with(self, role: str) -> list[tuple[int, int]]:
        """Heads that carry ``role``, in layer order."""
        if role not in ROLES:
            raise OptionError(f"unknown role {role!r}: choose from {', '.join(ROLES)}")
        return [(layer, head) for layer in range(self.n_layers) for head in range(self.n_heads)
                if role in self.labels[layer][head]]

    def role_counts(self) -> dict[str, int]:
        """Heads per role (every role, 0 included)."""
        return {role: len(self.heads_with(role)) for role in ROLES}

    def unexplained_share(self, ignore: Sequence[str] = ()) -> float:
        """Share of heads with no role (roles in ``ignore`` do not count as an explanation)."""
        total = self.n_layers * self.n_heads
        empty = sum(1 for layer in self.labels for roles in layer if not [r for r in roles if r not in ignore])
        return empty / total

    # -- exports -----------------------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """Tidy rows ``layer, head, metric, value, null_value, label, confidence`` per head and metric (the
        joined ``ablation_importance`` and ``ships`` too; ``label`` is the role this metric gave the head,
        if any), plus ``composition_Q/K/V`` rows for each partner (``partner_layer``, ``partner_head``)."""
        layer_idx, head_idx = np.meshgrid(range(self.n_layers), range(self.n_heads), indexing="ij")
        base = dict(layer=layer_idx.ravel(), head=head_idx.ravel())
        frames = []
        by_metric = {}
        for rule in ROLE_RULES:
            by_metric.setdefault(rule.metric, []).append(rule)
        for metric, values in self.scores.items():
            label = np.full(values.numel(), None, dtype=object)
            confidence = np.full(values.numel(), np.nan)
            for rule in by_metric.get(metric, []):
                conf = self.confidence[rule.role].numpy().ravel()
                has = np.array([rule.role in roles for layer in self.labels for roles in layer])
                # the sign-matching rule's confidence for ov_copying (copying for v ≥ 0, suppression below)
                if rule.direction == "negative":
                    pick = values.numpy().ravel() < 0
                elif rule.metric == "ov_copying":
                    pick = values.numpy().ravel() >= 0
                else:
                    pick = np.ones(values.numel(), dtype=bool)
                confidence = np.where(pick, conf, confidence)
                label = np.where(has, rule.role, label)
            frames.append(pd.DataFrame(dict(base, metric=metric, value=values.numpy().ravel(),
                                            null_value=self.nulls[metric].numpy().ravel(), label=label,
                                            confidence=confidence)))
        for metric, values in (("ablation_importance", self.importance), ("ships", self.ships)):
            if values is not None:
                frames.append(pd.DataFrame(dict(base, metric=metric, value=values.numpy().ravel())))
        rows = []
        for layer in range(self.n_layers):
            for head in range(self.n_heads):
                for partner in self.partners[layer][head]:
                    rows.append(dict(layer=layer, head=head, metric=f"composition_{partner.mode}", value=partner.score,
                                     partner_layer=partner.layer, partner_head=partner.head))
        if rows:
            frames.append(pd.DataFrame.from_records(rows))
        frame = tidy_frame(pd.concat(frames, ignore_index=True),
                           extra_columns=("null_value", "label", "confidence", "partner_layer", "partner_head"))
        frame["label"] = frame["label"].astype("string")
        frame["null_value"] = frame["null_value"].astype("float64")
        frame["confidence"] = frame["confidence"].astype("float64")
        for column in ("partner_layer", "partner_head"):
            if column in frame:
                frame[column] = frame[column].astype("Int64")
        return frame

    def roles_frame(self) -> pd.DataFrame:
        """One row per (head, role claimed): the metric, score, null, threshold and confidence."""
        rows = []
        for rule in ROLE_RULES:
            for layer, head in self.heads_with(rule.role):
                rows.append(dict(head=f"{layer}.{head}", layer=layer, head_index=head, role=rule.role, metric=rule.metric,
                                 value=round(float(self.scores[rule.metric][layer, head]), 4),
                                 null=round(float(self.nulls[rule.metric][layer, head]), 4),
                                 threshold=self.thresholds[rule.metric],
                                 confidence=round(float(self.confidence[rule.role][layer, head]), 3)))
        return pd.DataFrame.from_records(rows, columns=["head", "layer", "head_index", "role", "metric", "value", "null",
                                                        "threshold", "confidence"])

    def to_json(self) -> dict[str, Any]:
        """The page's data (JSON-serialisable; the contract with :func:`interp.viewer.render_atlas_page`)."""

        def grid(values: Tensor | None) -> list[list[float | None]] | None:
            if values is None:
                return None
            return [[_number(v) for v in row] for row in values.tolist()]

        metrics = [m for m in DETECTOR_METRICS if m in self.scores]
        return {
            "model": self.model,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "metrics": metrics,
            "scores": {m: grid(self.scores[m]) for m in metrics},
            "nulls": {m: grid(self.nulls[m]) for m in metrics},
            "labels": [[list(roles) for roles in layer] for layer in self.labels],
            "confidence": {role: grid(self.confidence[role]) for role in ROLES},
            "thresholds": dict(self.thresholds),
            "partners": [[[p.as_dict() for p in head] for head in layer] for layer in self.partners],
            "importance": grid(self.importance),
            "ships": grid(self.ships),
            "examples": [
                {"prompt": e.prompt, "tokens": list(e.tokens),
                 "patterns": [[[[_rounded(v) for v in row] for row in head] for head in layer]
                              for layer in e.patterns.tolist()]}
                for e in self.examples
            ],
        }


def _number(value: float) -> float | None:
    """A JSON-safe float (NaN → None), rounded to 6 decimals."""
    return None if value != value else round(float(value), 6)


def _rounded(value: float) -> float | int:
    """A pattern weight rounded to 3 decimals; exact zeros as the integer 0 (half the bytes)."""
    rounded = round(value, 3)
    return 0 if rounded == 0 else rounded


#: Largest ``heads × d_model²`` for which composition scores are computed from d_model × d_model Gram matrices
#: (beyond it, :func:`interp.attribution.channels.composition_scores` is used).
GRAM_LIMIT = 1 << 27


def composition_from_grams(lm: LoadedModel, modes: Sequence[str] = ("Q", "K", "V"), *,
                           dtype: torch.dtype = torch.float32) -> dict[str, Float[Tensor, "wlayer whead rlayer rhead"]]:
    """Elhage et al.'s Q/K/V composition scores of every (earlier writer, later reader) pair, equal to
    :func:`interp.attribution.channels.composition_scores`'s ``scores`` (same effective matrices) but without
    the per-component scores: ``‖OV_A R_B‖²_F = ⟨OV_Aᵀ OV_A, R_B R_Bᵀ⟩``, so one ``d_model × d_model`` Gram
    matrix per head and mode and one product over all pairs give every score. Zero where
    ``layer(writer) ≥ layer(reader)``.

    Examples:
        >>> import interp
        >>> lm = interp.load_model("tiny-gpt2")
        >>> tuple(composition_from_grams(lm, ["K"])["K"].shape)
        (2, 4, 2, 4)
    """
    from .channels import COMPOSITION_MODES, head_factors

    unknown = [m for m in modes if m not in COMPOSITION_MODES]
    if unknown:
        raise OptionError(f"unknown composition mode(s) {unknown}: use Q, K or V")
    n_layers, n_heads = lm.n_layers, lm.n_heads
    with torch.no_grad():
        ov_left, ov_right = (t.to(dtype) for t in head_factors(lm, "OV"))  # [L,H,d,r], [L,H,r,d]
        qk_left, qk_right = (t.to(dtype) for t in head_factors(lm, "QK"))

        def sandwich(outer: Tensor, inner: Tensor) -> Tensor:
            """``outer · inner · outerᵀ`` per head: ``[L, H, d, r] × [L, H, r, r] → [L, H, d, d]``."""
            return outer @ inner @ outer.transpose(-2, -1)

        writer = sandwich(ov_right.transpose(-2, -1), ov_left.transpose(-2, -1) @ ov_left)  # OVᵀ OV
        readers = {
            "Q": lambda: sandwich(qk_left, qk_right @ qk_right.transpose(-2, -1)),  # QK QKᵀ
            "K": lambda: sandwich(qk_right.transpose(-2, -1), qk_left.transpose(-2, -1) @ qk_left),  # QKᵀ QK
            "V": lambda: sandwich(ov_left, ov_right @ ov_right.transpose(-2, -1)),  # OV OVᵀ
        }
        d = writer.shape[-1]
        writer_flat = writer.reshape(n_layers * n_heads, d * d)
        writer_sq = writer.diagonal(dim1=-2, dim2=-1).sum(-1).double().cpu()  # ‖OV_A‖²
        layers = torch.arange(n_layers)
        later = (layers[:, None] < layers[None, :])[:, None, :, None].expand(n_layers, n_heads, n_layers, n_heads)
        out = {}
        for mode in modes:
            reader = readers[mode]()
            reader_sq = reader.diagonal(dim1=-2, dim2=-1).sum(-1).double().cpu()
            inner = (writer_flat @ reader.reshape(n_layers * n_heads, d * d).T).double().cpu()
            inner = inner.reshape(n_layers, n_heads, n_layers, n_heads).clamp(min=0)
            denominator = (writer_sq[:, :, None, None] * reader_sq[None, None]).sqrt()
            scores = torch.where(denominator > 0, inner.sqrt() / denominator.clamp(min=1e-300), torch.zeros_like(inner))
            out[mode] = torch.where(later, scores, torch.zeros_like(scores)).float()
            del reader
    return out


def _partners(lm: LoadedModel, top: int, baseline_samples: int, seed: int) -> tuple[tuple[tuple[Partner, ...], ...], ...]:
    """Each head's ``top`` partners per mode (writers into it and readers of it, by composition score)."""
    from .channels import COMPOSITION_MODES, composition_scores

    if lm.n_layers * lm.n_heads * lm.d_model**2 <= GRAM_LIMIT:
        by_mode = composition_from_grams(lm, COMPOSITION_MODES)
    else:
        by_mode = {mode: composition_scores(lm, mode, baseline_samples=baseline_samples, seed=seed).scores
                   for mode in COMPOSITION_MODES}
    found: list[list[list[Partner]]] = [[[] for _ in range(lm.n_heads)] for _ in range(lm.n_layers)]
    for mode in COMPOSITION_MODES:
        scores = by_mode[mode]
        for layer in range(lm.n_layers):
            for head in range(lm.n_heads):
                writers = scores[:layer, :, layer, head]  # earlier heads writing into this one
                readers = scores[layer, head, layer + 1:]  # later heads reading from it
                candidates = [(float(writers[lw, hw]), lw, hw) for lw in range(layer) for hw in range(lm.n_heads)]
                candidates += [(float(readers[i, hr]), layer + 1 + i, hr) for i in range(readers.shape[0])
                               for hr in range(lm.n_heads)]
                candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
                found[layer][head] += [Partner(lw, hw, mode, score) for score, lw, hw in candidates[:top]]
    return tuple(tuple(tuple(head) for head in layer) for layer in found)


def head_atlas(
    lm: LoadedModel,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    *,
    max_tokens: int | None = 64,
    exclude_bos: bool = True,
    exclude_current_token: bool = False,
    error_measure: str = "mul",
    induction_sequences: int = 8,
    half_length: int = 20,
    ov_tokens: int = 4096,
    ov_null_samples: int = 6,
    successor_null_samples: int = 32,
    thresholds: str | Mapping[str, float] | None = None,
    roles: str | Sequence[str] | None = None,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    importance: bool = True,
    importance_sequences: int = 3,
    importance_half_length: int = 10,
    importance_metric: str = "logit_diff",
    ships_requests: int = 2,
    partners: int = 3,
    partner_baseline_samples: int = 20,
    n_examples: int = 4,
    example_tokens: int = 48,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool | None = None,
) -> HeadAtlas:
    """Detectors, roles and joins for every head of ``lm`` (see the module docstring).

    Args:
        prompts: the natural-text prompt set (texts get BOS prepended; each cut to ``max_tokens``).
        exclude_bos, exclude_current_token, error_measure: TransformerLens ``detect_head``'s arguments for
            the previous-token, duplicate-token and induction scores. ``exclude_bos`` is on by default here
            (``detect_head``'s default is off): in models with attention sinks most attention goes to the
            first token and would otherwise cap every pattern score.
        induction_sequences, half_length: the repeated random tokens (seeded by ``seed``).
        ov_tokens, ov_null_samples: token subset size and shuffles of the OV copying score.
        successor_null_samples: shuffles of the successor score's null.
        thresholds: per-metric thresholds (:data:`DEFAULT_THRESHOLDS`), a mapping or ``"metric=value,…"``.
        roles: roles to assign (default all).
        min_confidence: a role also needs this confidence (its score this far from the null toward a
            perfect score), in (0, 1).
        importance: run the zero-ablation scan on ``importance_sequences`` repeated sequences of
            ``importance_half_length`` tokens (the scan costs about heads × sequences × tokens / 2 token
            passes, so it is kept short; the head-importance analysis's defaults);
            ``importance_metric`` ``logit_diff`` (default: the answer ``R[-1]`` against a random token, two
            columns of ``W_U``) or ``loss`` (the whole repeated half, the full vocabulary: slower on large
            vocabularies). Stored oriented so that larger = more important (−Δlogit-diff, +Δloss).
        ships_requests: harmful requests for Ships (0 = skip; skipped without a chat template).
        partners: composition partners kept per mode (0 = skip).
        n_examples, example_tokens: example prompts kept for the attention viewer (at most 4 × 48 tokens).
    """
    from .head_detectors import _check_lm

    _check_lm(lm)
    check_detector_options(error_measure)
    chosen_thresholds = parse_thresholds(thresholds)
    chosen_roles = parse_roles(roles)
    for name, value, low in (("induction_sequences", induction_sequences, 1), ("ov_tokens", ov_tokens, 2),
                             ("ov_null_samples", ov_null_samples, 2), ("successor_null_samples", successor_null_samples, 2),
                             ("importance_sequences", importance_sequences, 1),
                             ("importance_half_length", importance_half_length, 3), ("ships_requests", ships_requests, 0),
                             ("partners", partners, 0), ("partner_baseline_samples", partner_baseline_samples, 2),
                             ("n_examples", n_examples, 0), ("example_tokens", example_tokens, 2)):
        if value < low:
            raise OptionError(f"{name.replace('_', '-')} must be at least {low}, got {value}")
    if not 0.0 < min_confidence < 1.0:
        raise OptionError(f"min_confidence must be in (0, 1), got {min_confidence}")
    if importance_metric not in ("logit_diff", "loss"):
        raise OptionError(f"unknown importance metric {importance_metric!r}: use logit_diff or loss")
    if n_examples > 4 or example_tokens > 48:
        raise OptionError(f"at most 4 example prompts of at most 48 tokens (the page stays small), got "
                          f"{n_examples} × {example_tokens}")
    timings: dict[str, float] = {}
    notes: list[str] = []
    per_example = lm.n_layers * lm.n_heads * max(n_examples, 1)
    example_tokens = max(2, min(example_tokens, int((EXAMPLE_FLOAT_BUDGET / per_example) ** 0.5)))

    started = time.perf_counter()
    text = attention_detectors(lm, prompts, max_tokens=max_tokens, exclude_bos=exclude_bos,
                               exclude_current_token=exclude_current_token, error_measure=error_measure,
                               n_examples=n_examples, example_tokens=example_tokens, batch_size=batch_size,
                               progress=progress)
    timings["detectors"] = time.perf_counter() - started
    t0 = time.perf_counter()
    repeated = repeated_token_detectors(lm, n_sequences=induction_sequences, half_length=half_length, seed=seed,
                                        exclude_bos=exclude_bos, exclude_current_token=exclude_current_token,
                                        error_measure=error_measure, batch_size=batch_size, progress=progress)
    timings["repeated_tokens"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    factors = ov_factors(lm)
    copying = ov_copying_scores(lm, n_tokens=ov_tokens, null_samples=ov_null_samples, seed=seed, factors=factors)
    timings["ov_copying"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        successor = successor_scores(lm, null_samples=successor_null_samples, seed=seed, factors=factors)
        successor_score, successor_null = successor.score, successor.null
        successor_details = successor.details
    except OptionError as error:
        nan = torch.full((lm.n_layers, lm.n_heads), float("nan"))
        successor_score, successor_null, successor_details = nan, nan.clone(), {}
        notes.append(f"successor score not computed: {error}")
    timings["successor"] = time.perf_counter() - t0

    scores = {**text.scores, **repeated.scores, "ov_copying": copying.score, "successor": successor_score}
    nulls = {**text.nulls, **repeated.nulls, "ov_copying": copying.null, "successor": successor_null}
    scores = {m: scores[m] for m in DETECTOR_METRICS}
    nulls = {m: nulls[m] for m in DETECTOR_METRICS}
    labels, confidence = assign_roles(scores, nulls, chosen_thresholds, chosen_roles, min_confidence)

    importance_scores = None
    if importance:
        from interp.tasks import induction_task

        from .ablation_scan import ablation_scan

        t0 = time.perf_counter()
        task = induction_task(lm, n_sequences=importance_sequences, half_length=importance_half_length, seed=seed)
        scan = ablation_scan(lm, task, mode="zero", metrics=(importance_metric,))
        importance_scores = scan.importance(importance_metric).float()
        timings["importance"] = time.perf_counter() - t0
    ships_scores = None
    if ships_requests > 0:
        if getattr(lm.tokenizer, "chat_template", None):
            from interp.refusal import safety_prompts

            from .safety_heads import ships_scan

            t0 = time.perf_counter()
            requests = safety_prompts("harmful", "train")[:ships_requests]
            ships_scores = ships_scan(lm, requests, template="chat", batch_size=batch_size,
                                      progress=progress).mean.float()
            timings["ships"] = time.perf_counter() - t0
        else:
            notes.append(f"Ships not computed: {lm.name}'s tokenizer has no chat template")
    partner_lists: tuple[tuple[tuple[Partner, ...], ...], ...] = tuple(
        tuple(() for _ in range(lm.n_heads)) for _ in range(lm.n_layers))
    if partners > 0 and lm.n_layers > 1:
        t0 = time.perf_counter()
        partner_lists = _partners(lm, partners, partner_baseline_samples, seed)
        timings["partners"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    params = dict(max_tokens=max_tokens, exclude_bos=exclude_bos, exclude_current_token=exclude_current_token,
                  error_measure=error_measure, induction_sequences=induction_sequences, half_length=half_length,
                  ov_tokens=copying.params["n_tokens"], ov_null_samples=ov_null_samples,
                  successor_null_samples=successor_null_samples, roles=list(chosen_roles),
                  min_confidence=min_confidence, importance=importance,
                  importance_sequences=importance_sequences, importance_half_length=importance_half_length,
                  importance_metric=importance_metric,
                  ships_requests=ships_requests, partners=partners,
                  n_examples=len(text.examples), example_tokens=example_tokens, seed=seed,
                  n_prompts=text.n_sequences, n_tokens=text.n_tokens)
    return HeadAtlas(
        model=lm.name, n_layers=lm.n_layers, n_heads=lm.n_heads, scores=scores, nulls=nulls,
        thresholds=chosen_thresholds, roles=chosen_roles, labels=labels, confidence=confidence,
        partners=partner_lists, importance=importance_scores, ships=ships_scores, examples=text.examples,
        notes=tuple(notes), timings={k: round(v, 3) for k, v in timings.items()}, params=params,
        details=dict(successor_sequences=successor_details.get("sequences", {}),
                     successor_items=successor_details.get("items", 0)),
    )
