"""Head detectors: what each attention head's pattern and OV circuit look like, per layer × head, each with a null.

Streaming detectors (one pass over the prompts, a :class:`~interp.probes.Reducer` on every layer's
``attn.hook_pattern``; nothing of size prompts × positions is kept):

* **previous-token, duplicate-token, induction** — TransformerLens's ``detect_head`` definitions and
  arguments, rewritten in streaming form. For one sequence of ``n`` tokens (BOS prepended, as
  TransformerLens does) with attention pattern ``A`` and detection pattern ``D`` (lower-triangular 0/1):

  - previous-token ``D[q, q−1] = 1``; duplicate-token ``D[q, k] = 1`` for ``k < q`` with ``tok[k] = tok[q]``;
    induction ``D[q, k] = dup[q, k−1]`` for ``1 ≤ k ≤ q`` (the token after an earlier copy of ``tok[q]``);
  - ``exclude_bos`` zeroes the first key column of ``A``, ``exclude_current_token`` its diagonal;
  - error measure ``"mul"``: ``Σ A'·D / Σ A'``; ``"abs"``: ``1 − round(Σ |A − D|' / n, 3)`` (the masks
    applied to the difference), exactly as ``detect_head`` rounds it;
  - the score of a prompt set is the mean of the per-sequence scores (``detect_head`` on a list).

  Natural-text scores (``previous_token``, ``duplicate_token_text``, ``induction_text``) read the prompts;
  ``induction`` and ``duplicate_token`` read the shipped seeded repeated random tokens ``BOS, R, R[:-1]``
  (:func:`interp.tasks.induction_task`), where every query of the second copy has a duplicate and an
  induction target (on natural text most queries have neither, which caps those scores far below 1).
* **first-token sink** ``bos_attention`` (Gu et al.'s α₀: mean attention of the real queries to position
  0), **current-token attention** (mean ``A[q, q]`` over queries ``q ≥ 1``), **mean attention distance**
  (``Σ A[q,k]·(q−k) / Σ A[q,k]`` over non-first keys ``k ≥ 1``, i.e. where the head looks once the sink
  is set aside, in tokens) and **attention entropy** (``−Σ_k A log A / log(q+1)`` per query ``q ≥ 1``,
  so 1 = uniform over the keys it can see), each averaged over queries, then over prompts.

Weight detectors (no forward pass over the prompts):

* **OV copying score** (Elhage et al. 2021): the eigenvalues ``λ`` of the full OV circuit
  ``Ê_S W_V W_O W_U[:, S]`` restricted to a token subset ``S`` (word-like tokens,
  :func:`interp.tasks.ordinary_token_pool`); the score is ``Σλ / Σ|λ|`` ∈ [−1, 1] (positive = the head
  copies the tokens it attends to, negative = it suppresses them). ``Ê`` is the embedding as the first
  norm sees it (rows centred for LayerNorm, scaled to unit RMS; the norm gain is folded in ``W_V``) and a
  post-attention norm gain (Gemma 3) is folded into ``W_O``. The nonzero eigenvalues of the ``|S| × |S|``
  matrix are those of the ``d_head × d_head`` matrix ``W_O (W_U[:, S] Ê_S) W_V``, so any ``|S|`` costs one
  ``d_model × d_model`` product and one small eigenproblem per head.
* **Successor score** (Gould et al. 2023, "Successor Heads"): for ordinal sequences (numbers, number
  words, ordinals, days, months and their abbreviations, letters) whose items are single tokens, the
  share of items ``t_i`` (all but the last) for which the OV circuit's output logits over the sequence's
  own items rank the successor ``t_{i+1}`` first. Heads after layer 0 read the *effective* embedding
  ``W_E + MLP0(W_E)`` (the residual after block 0 with block 0's attention output zeroed), as Gould et al.
  do; layer-0 heads read ``Ê``.

Nulls (``nulls[metric]``, per head; a role is claimed only above them):

* attention detectors: the score of a head with re-initialised (zero) query–key weights on the same
  sequences and arguments, which attends uniformly to the keys it can see; for ``induction`` and
  ``duplicate_token`` the larger of that and the same head's score when the first copy of ``R`` is replaced
  by fresh random tokens (nothing repeats, the detection pattern is kept: a head that attends by position
  scores the same there); ``attention_entropy``'s null is 1 (uniform attention), the score a ``diffuse``
  head approaches;
* OV copying and successor: the same score with the input tokens' embeddings shuffled among the token
  set (``null_samples`` seeded permutations, which keeps every weight and breaks only which token goes
  in); the null is ``mean + 3·sd`` of the head's shuffled ``|score|``.

Examples:
    >>> import interp
    >>> from interp.attribution.head_detectors import attention_detectors
    >>> lm = interp.load_model("tiny-gpt2")
    >>> scores = attention_detectors(lm, ["The cat sat on the mat.", "Dogs bark at night."], progress=False)
    >>> tuple(scores.scores["previous_token"].shape)
    (2, 4)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import OptionError, PromptError
from interp.models import LoadedModel, TokenBatch
from interp.probes import Reducer, run_probe, tokenize_prompts

#: ``detect_head``'s error measures.
ERROR_MEASURES: tuple[str, ...] = ("mul", "abs")
#: TransformerLens's detection patterns, by the suite's metric name.
PATTERN_NAMES: tuple[str, ...] = ("previous_token", "duplicate_token", "induction")
#: Metrics of the natural-text pass.
TEXT_METRICS: tuple[str, ...] = ("previous_token", "duplicate_token_text", "induction_text", "bos_attention",
                                 "current_token", "attention_distance", "attention_entropy")
#: The pattern statistics of the natural-text pass.
STATISTICS: tuple[str, ...] = ("bos_attention", "current_token", "attention_distance", "attention_entropy")
#: Every detector metric, in report order.
DETECTOR_METRICS: tuple[str, ...] = ("bos_attention", "previous_token", "duplicate_token", "induction",
                                     "duplicate_token_text", "induction_text", "current_token", "attention_distance",
                                     "attention_entropy", "ov_copying", "successor")

#: Ordinal sequences for the successor score (Gould et al. 2023's task families); items that are not a
#: single token in a model's vocabulary end the sequence there.
ORDINAL_SEQUENCES: dict[str, tuple[str, ...]] = {
    "numbers": tuple(str(i) for i in range(1, 21)),
    "number words": ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                     "twelve"),
    "ordinals": ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"),
    "days": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "day abbreviations": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
    "months": ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
               "November", "December"),
    "month abbreviations": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
    "letters": tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
}


def check_detector_options(error_measure: str) -> None:
    if error_measure not in ERROR_MEASURES:
        raise OptionError(f"unknown error measure {error_measure!r}: use one of {', '.join(ERROR_MEASURES)}")


# ----------------------------------------------------------------------------------------------------
# Detection patterns and per-sequence scores (TransformerLens's definitions, batched and padded)
# ----------------------------------------------------------------------------------------------------
def detection_patterns(tokens: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """``(valid, {name: D})`` for a right-padded batch: ``valid[b, q, k]`` marks real causal pairs, ``D`` the
    previous-token, duplicate-token and induction detection patterns of each row (bool ``[b, n, n]``).

    Examples:
        >>> valid, d = detection_patterns(torch.tensor([[0, 5, 6, 5, 6]]), torch.ones(1, 5, dtype=torch.long))
        >>> d["induction"][0].nonzero().tolist()      # query 3 (a repeated 5) → key 2 (the 6 after the first 5)
        [[3, 2], [4, 3]]
    """
    n = tokens.shape[1]
    device = tokens.device
    q = torch.arange(n, device=device)[:, None]
    k = torch.arange(n, device=device)[None, :]
    real = mask.to(device).bool()
    valid = real[:, :, None] & real[:, None, :] & (k <= q)
    previous = valid & (k == q - 1)
    duplicate = valid & (tokens[:, :, None] == tokens[:, None, :]) & (k < q)
    induction = torch.zeros_like(duplicate)
    induction[:, :, 1:] = duplicate[:, :, :-1]
    induction &= valid
    return valid, {"previous_token": previous, "duplicate_token": duplicate, "induction": induction}


def _kept(valid: Tensor, exclude_bos: bool, exclude_current_token: bool) -> Tensor:
    """Float mask of the pairs a score reads (the ``detect_head`` exclusions applied)."""
    keep = valid.clone()
    if exclude_bos:
        keep[:, :, 0] = False
    if exclude_current_token:
        keep &= ~torch.eye(valid.shape[-1], dtype=torch.bool, device=valid.device)
    return keep


def sequence_scores(pattern: Float[Tensor, "batch head q k"], valid: Tensor, detections: dict[str, Tensor],
                    lengths: Tensor, *, exclude_bos: bool, exclude_current_token: bool,
                    error_measure: str) -> dict[str, Tensor]:
    """Per-sequence ``detect_head`` scores ``[batch, head]`` (float64) of a padded batch, one per detection
    pattern (see the module docstring; ``abs`` already rounded as TransformerLens rounds it)."""
    keep = _kept(valid, exclude_bos, exclude_current_token).to(pattern.dtype)[:, None]  # [b, 1, q, k]
    out = {}
    if error_measure == "mul":
        masked = pattern * keep
        total = masked.sum(dim=(-2, -1))
        for name, detection in detections.items():
            out[name] = (torch.einsum("bhqk,bqk->bh", masked, detection.to(pattern.dtype)) / total).double()
        return out
    for name, detection in detections.items():
        diff = ((pattern - detection[:, None].to(pattern.dtype)).abs() * keep).sum(dim=(-2, -1))
        raw = (diff / lengths.to(diff)[:, None]).double().cpu()
        out[name] = torch.tensor([[1 - round(v, 3) for v in row] for row in raw.tolist()], dtype=torch.float64)
    return out


def pattern_statistics(pattern: Float[Tensor, "batch head q k"], valid: Tensor, lengths: Tensor) -> dict[str, Tensor]:
    """Per-sequence sink, current-token, distance and entropy statistics ``[batch, head]`` (float64)."""
    dtype = pattern.dtype
    n = pattern.shape[-1]
    device = pattern.device
    lengths = lengths.to(device)
    real_q = valid.diagonal(dim1=1, dim2=2)  # [b, q]
    later_q = real_q.clone()
    later_q[:, 0] = False  # queries q ≥ 1
    later_count = later_q.sum(dim=1).clamp(min=1).to(dtype)[:, None]
    bos = (pattern[..., 0] * real_q[:, None].to(dtype)).sum(-1) / lengths.to(dtype)[:, None]
    current = (pattern.diagonal(dim1=-2, dim2=-1) * later_q[:, None].to(dtype)).sum(-1) / later_count
    q = torch.arange(n, device=device)[:, None]
    k = torch.arange(n, device=device)[None, :]
    non_first = valid & (k >= 1)
    distance_weights = ((q - k).clamp(min=0).to(dtype))[None] * non_first.to(dtype)  # [b, q, k]
    mass = (pattern * non_first[:, None].to(dtype)).sum(dim=(-2, -1))
    distance = torch.einsum("bhqk,bqk->bh", pattern, distance_weights) / mass.clamp(min=torch.finfo(dtype).tiny)
    distance = torch.where(mass > 0, distance, torch.zeros_like(distance))
    plogp = torch.where(pattern > 0, pattern * pattern.clamp(min=torch.finfo(dtype).tiny).log(), torch.zeros_like(pattern))
    entropy_q = -(plogp * valid[:, None].to(dtype)).sum(-1)  # [b, h, q]
    norm = torch.log(torch.arange(n, device=device, dtype=dtype) + 1).clamp(min=torch.finfo(dtype).tiny)
    entropy = ((entropy_q / norm) * later_q[:, None].to(dtype)).sum(-1) / later_count
    return {"bos_attention": bos.double(), "current_token": current.double(), "attention_distance": distance.double(),
            "attention_entropy": entropy.double()}


def uniform_pattern(valid: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    """The pattern of a head with zero query–key weights: uniform over the keys each query can see ``[b,1,q,k]``."""
    weights = valid.to(dtype)
    return (weights / weights.sum(-1, keepdim=True).clamp(min=1))[:, None]


# ----------------------------------------------------------------------------------------------------
# The streaming pass
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttentionExample:
    """One example prompt: its tokens and every head's attention pattern ``[layer, head, q, k]``."""

    prompt: str
    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    patterns: Float[Tensor, "layer head q k"]


class _DetectorReducer(Reducer):
    """Per-sequence detector scores summed over sequences, per layer × head; nulls alongside."""

    def __init__(self, lm: LoadedModel, *, patterns: Sequence[str], statistics: bool, exclude_bos: bool,
                 exclude_current_token: bool, error_measure: str, reference_rows: Mapping[int, Sequence[int]] | None = None,
                 null_rows: frozenset[int] = frozenset(), example_rows: dict[int, int] | None = None) -> None:
        self.n_layers, self.n_heads = lm.n_layers, lm.n_heads
        self.hook_names = tuple(f"blocks.{layer}.attn.hook_pattern" for layer in range(lm.n_layers))
        self.patterns = tuple(patterns)
        self.statistics = statistics
        self.exclude_bos, self.exclude_current_token, self.error_measure = exclude_bos, exclude_current_token, error_measure
        self.reference_rows = reference_rows or {}
        self.null_rows = null_rows  # rows scored into the "shuffled" sums instead (the corrupted sequences)
        self.example_rows = example_rows or {}
        names = list(self.patterns) + (list(STATISTICS) if statistics else [])
        self.sums = {name: torch.zeros(self.n_layers, self.n_heads, dtype=torch.float64) for name in names}
        self.shuffled = {name: torch.zeros(self.n_layers, self.n_heads, dtype=torch.float64) for name in self.patterns}
        self.uniform = {name: 0.0 for name in names}
        self.count = 0
        self.null_count = 0
        self.examples: dict[int, list[Tensor | None]] = {}
        self._state: dict[str, object] = {}

    def begin_batch(self, batch: TokenBatch) -> None:
        tokens = batch.tokens.clone()
        for row, index in enumerate(batch.prompt_index):
            if index in self.reference_rows:
                reference = list(self.reference_rows[index])
                tokens[row, : len(reference)] = torch.tensor(reference, dtype=tokens.dtype)
        valid, detections = detection_patterns(tokens, batch.attention_mask)
        detections = {name: detections[name] for name in self.patterns}
        is_null = torch.tensor([index in self.null_rows for index in batch.prompt_index], dtype=torch.bool)
        self._state = dict(valid=valid, detections=detections, is_null=is_null)
        scored = ~is_null
        # The null head (uniform attention) scored on the real rows, once per batch (it has no weights).
        if bool(scored.any()):
            keep = scored.nonzero()[:, 0]
            uniform = uniform_pattern(valid[keep])
            lengths = batch.lengths[keep]
            values = sequence_scores(uniform, valid[keep], {n: d[keep] for n, d in detections.items()}, lengths,
                                     exclude_bos=self.exclude_bos, exclude_current_token=self.exclude_current_token,
                                     error_measure=self.error_measure)
            if self.statistics:
                values.update(pattern_statistics(uniform, valid[keep], lengths))
            for name, value in values.items():
                self.uniform[name] += float(value.sum())
        self.count += int(scored.sum())
        self.null_count += int(is_null.sum())

    def update(self, hook_name: str, activation: Tensor, batch: TokenBatch) -> None:
        layer = int(hook_name.split(".")[1])
        pattern = activation.double()
        valid = self._state["valid"]
        is_null = self._state["is_null"]
        assert isinstance(valid, Tensor) and isinstance(is_null, Tensor)
        detections = self._state["detections"]
        assert isinstance(detections, dict)
        values = sequence_scores(pattern, valid, detections, batch.lengths, exclude_bos=self.exclude_bos,
                                 exclude_current_token=self.exclude_current_token, error_measure=self.error_measure)
        if self.statistics:
            values.update(pattern_statistics(pattern, valid, batch.lengths))
        real = (~is_null).double()[:, None]
        null = is_null.double()[:, None]
        for name, value in values.items():
            value = value.cpu()
            self.sums[name][layer] += (value * real).sum(dim=0)
            if name in self.shuffled:
                self.shuffled[name][layer] += (value * null).sum(dim=0)
        for row, index in enumerate(batch.prompt_index):
            if index in self.example_rows:
                width = min(self.example_rows[index], int(batch.lengths[row]))
                store = self.examples.setdefault(index, [None] * self.n_layers)
                store[layer] = activation[row, :, :width, :width].float().cpu()

    def result(self) -> None:
        return None


@dataclass(frozen=True)
class DetectorScores:
    """Detector scores and their nulls, per metric ``[layer, head]`` (see the module docstring)."""

    scores: dict[str, Float[Tensor, "layer head"]]
    nulls: dict[str, Float[Tensor, "layer head"]]
    examples: tuple[AttentionExample, ...] = ()
    n_sequences: int = 0
    n_tokens: int = 0
    params: dict = field(default_factory=dict)
    token_rows: tuple[tuple[int, ...], ...] = ()


def _checked_rows(lm: LoadedModel, prompts: Sequence[str] | Sequence[Sequence[int]], max_tokens: int | None) -> list[list[int]]:
    if len(prompts) == 0:
        raise PromptError("the prompt set is empty: give at least one non-empty prompt")
    if isinstance(prompts[0], str):
        rows = tokenize_prompts(lm, prompts, max_tokens=max_tokens, min_tokens=2)  # type: ignore[arg-type]
    else:
        rows = [list(map(int, r))[:max_tokens] if max_tokens else list(map(int, r)) for r in prompts]
        for index, row in enumerate(rows):
            if len(row) < 2:
                raise PromptError(f"prompt {index} has {len(row)} tokens; the head detectors need at least 2")
    return rows


def _check_lm(lm: LoadedModel) -> None:
    if lm.is_encoder:
        raise OptionError(f"{lm.name} is an encoder; the head detectors need a decoder (causal attention)")


def attention_detectors(
    lm: LoadedModel,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    *,
    max_tokens: int | None = 64,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    error_measure: str = "mul",
    n_examples: int = 0,
    example_tokens: int = 48,
    batch_size: int = 8,
    progress: bool | None = None,
) -> DetectorScores:
    """The natural-text detectors in one streaming pass: ``previous_token``, ``duplicate_token_text``,
    ``induction_text`` (``detect_head``'s scores), ``bos_attention``, ``current_token``,
    ``attention_distance`` and ``attention_entropy``, with the uniform-attention null of each.

    Args:
        prompts: texts (BOS prepended) or token id lists (BOS included); each cut to ``max_tokens``.
        exclude_bos, exclude_current_token, error_measure: ``detect_head``'s arguments.
        n_examples, example_tokens: keep the patterns of the first ``n_examples`` prompts (their first
            ``example_tokens`` tokens; a causal pattern's top-left block is the pattern of the prefix).

    Examples:
        >>> import interp
        >>> lm = interp.load_model("tiny-llama")
        >>> s = attention_detectors(lm, ["a b a b a b"], error_measure="abs", progress=False)
        >>> bool((s.scores["previous_token"] <= 1).all())
        True
    """
    _check_lm(lm)
    check_detector_options(error_measure)
    if max_tokens is not None and not 2 <= max_tokens <= lm.info.n_ctx:
        raise OptionError(f"max_tokens must be between 2 and the context window {lm.info.n_ctx}, got {max_tokens}")
    rows = _checked_rows(lm, prompts, max_tokens)
    examples = {i: example_tokens for i in range(min(n_examples, len(rows)))}
    reducer = _DetectorReducer(lm, patterns=PATTERN_NAMES, statistics=True, exclude_bos=exclude_bos,
                               exclude_current_token=exclude_current_token, error_measure=error_measure,
                               example_rows=examples)
    n_tokens = run_probe(lm, rows, [reducer], batch_size=batch_size, progress=progress, description="head detectors")
    count = max(reducer.count, 1)
    rename = {"induction": "induction_text", "duplicate_token": "duplicate_token_text"}
    scores = {rename.get(n, n): (s / count).float() for n, s in reducer.sums.items()}
    nulls = {rename.get(n, n): torch.full_like(scores[rename.get(n, n)], reducer.uniform[n] / count)
             for n in reducer.sums}
    nulls["attention_entropy"] = torch.ones_like(scores["attention_entropy"])  # uniform attention: exactly 1
    kept = []
    for index in sorted(reducer.examples):
        layers = reducer.examples[index]
        ids = rows[index][: example_tokens]
        text = prompts[index] if isinstance(prompts[index], str) else lm.decode(ids)
        kept.append(AttentionExample(prompt=str(text), token_ids=tuple(ids), tokens=tuple(lm.token_strings(ids)),
                                     patterns=torch.stack([t for t in layers if t is not None])))
    params = dict(max_tokens=max_tokens, exclude_bos=exclude_bos, exclude_current_token=exclude_current_token,
                  error_measure=error_measure)
    return DetectorScores(scores=scores, nulls=nulls, examples=tuple(kept), n_sequences=reducer.count,
                          n_tokens=n_tokens, params=params)


def repeated_token_detectors(
    lm: LoadedModel,
    *,
    n_sequences: int = 8,
    half_length: int = 20,
    seed: int = 0,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    error_measure: str = "mul",
    batch_size: int = 8,
    progress: bool | None = None,
) -> DetectorScores:
    """``detect_head``'s induction and duplicate-token scores on the shipped seeded repeated random tokens
    ``BOS, R, R[:-1]`` (:func:`interp.tasks.induction_task`), where every query of the second copy has
    exactly one earlier duplicate and one induction target.

    Null of each: the larger of the uniform-attention score and the head's score on the same sequences
    with the first copy of ``R`` replaced by fresh random tokens, scored against the detection pattern of
    the repeated sequence (nothing repeats there, so only a head that attends by position scores).

    Examples:
        >>> import interp
        >>> lm = interp.load_model("tiny-gpt2")
        >>> s = repeated_token_detectors(lm, n_sequences=2, half_length=5, progress=False)
        >>> sorted(s.scores), tuple(s.nulls["induction"].shape)
        (['duplicate_token', 'induction'], (2, 4))
    """
    from interp.tasks import induction_task

    _check_lm(lm)
    check_detector_options(error_measure)
    task = induction_task(lm, n_sequences=n_sequences, half_length=half_length, seed=seed)
    clean = [list(e.tokens) for e in task.examples]
    corrupted = [list(e.corrupted) for e in task.examples if e.corrupted is not None]
    rows = clean + corrupted
    reference = {len(clean) + i: clean[i] for i in range(len(corrupted))}
    names = ("duplicate_token", "induction")
    reducer = _DetectorReducer(lm, patterns=names, statistics=False, exclude_bos=exclude_bos,
                               exclude_current_token=exclude_current_token, error_measure=error_measure,
                               reference_rows=reference, null_rows=frozenset(reference))
    n_tokens = run_probe(lm, rows, [reducer], batch_size=batch_size, progress=progress,
                         description="repeated-token detectors")
    scores, nulls = {}, {}
    for name in names:
        scores[name] = (reducer.sums[name] / max(reducer.count, 1)).float()
        shuffled = (reducer.shuffled[name] / max(reducer.null_count, 1)).float()
        nulls[name] = torch.clamp(shuffled, min=reducer.uniform[name] / max(reducer.count, 1))
    params = dict(n_sequences=n_sequences, half_length=half_length, seed=seed, exclude_bos=exclude_bos,
                  exclude_current_token=exclude_current_token, error_measure=error_measure)
    return DetectorScores(scores=scores, nulls=nulls, n_sequences=reducer.count, n_tokens=n_tokens, params=params,
                          token_rows=tuple(tuple(r) for r in clean))


# ----------------------------------------------------------------------------------------------------
# Weight detectors
# ----------------------------------------------------------------------------------------------------
def normalized_embedding(lm: LoadedModel, rows: Tensor) -> Tensor:
    """Embedding rows as the first norm sees them: centred for LayerNorm, then scaled to unit RMS (the
    norm's gain is folded into the next weights by TransformerLens's processing)."""
    x = rows.double()
    if lm.facts.normalization == "layernorm":
        x = x - x.mean(-1, keepdim=True)
    if lm.facts.normalization is not None:
        x = x / x.pow(2).mean(-1, keepdim=True).sqrt().clamp(min=1e-12)
    return x


def ov_factors(lm: LoadedModel) -> tuple[Tensor, Tensor]:
    """``W_V [layer, head, d_model, d_head]`` and ``W_O [layer, head, d_head, d_model]`` (post-attention norm
    gain folded into ``W_O``), float64 on the model's device."""
    values, outputs = [], []
    with torch.no_grad():
        for layer in range(lm.n_layers):
            weights = lm.head_weights(layer)
            w_o = weights.W_O.double()
            if weights.post_gain is not None:
                w_o = w_o * weights.post_gain.double().to(w_o.device)[None, None, :]
            values.append(weights.W_V.double())
            outputs.append(w_o)
    return torch.stack(values), torch.stack(outputs)


def _copying_ratio(w_v: Tensor, w_o: Tensor, gram: Tensor, dtype: torch.dtype) -> Tensor:
    """``Σλ / Σ|λ|`` of ``W_O G W_V`` per head (``[layer, head]``)."""
    small = (w_o.to(dtype) @ gram.to(dtype)) @ w_v.to(dtype)  # [L, H, d_head, d_head]
    # NumPy's LAPACK: about twice as fast as torch's batched eigvals on 2 CPU threads (same eigenvalues).
    eig = torch.from_numpy(np.linalg.eigvals(small.cpu().numpy()))
    total = eig.abs().sum(-1).double()
    trace = small.diagonal(dim1=-2, dim2=-1).sum(-1).double().cpu()
    return torch.where(total > 0, trace / total.clamp(min=1e-300), torch.zeros_like(total))


@dataclass(frozen=True)
class WeightScores:
    """A weight-only detector: the score per head, its null (``mean + 3·sd`` of the shuffled ``|score|``) and
    the shuffled samples ``[sample, layer, head]``."""

    score: Float[Tensor, "layer head"]
    null: Float[Tensor, "layer head"]
    samples: Float[Tensor, "sample layer head"]
    params: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)


def _floor(samples: Tensor) -> Tensor:
    magnitude = samples.abs().double()
    spread = magnitude.std(dim=0, unbiased=True) if samples.shape[0] > 1 else torch.zeros_like(magnitude[0])
    return (magnitude.mean(dim=0) + 3 * spread).float()


def copying_tokens(lm: LoadedModel, n_tokens: int) -> list[int]:
    """The first ``n_tokens`` word-like tokens of the vocabulary (:func:`interp.tasks.ordinary_token_pool`)."""
    from interp.tasks import ordinary_token_pool

    pool = ordinary_token_pool(lm)
    if len(pool) < 2:
        raise OptionError(f"{lm.name}'s vocabulary has too few ordinary tokens for the OV copying score")
    return pool[:n_tokens]


def ov_copying_scores(lm: LoadedModel, *, n_tokens: int = 4096, null_samples: int = 6, seed: int = 0,
                      factors: tuple[Tensor, Tensor] | None = None) -> WeightScores:
    """Elhage et al.'s copying score ``Σλ/Σ|λ|`` of every head's full OV circuit on ``n_tokens`` word-like
    tokens, with the shuffled-embedding null (see the module docstring).

    Examples:
        >>> import interp
        >>> s = ov_copying_scores(interp.load_model("tiny-gpt2"), n_tokens=64, null_samples=4)
        >>> bool((s.score.abs() <= 1 + 1e-6).all()), tuple(s.samples.shape)
        (True, (4, 2, 4))
    """
    _check_lm(lm)
    if n_tokens < 2:
        raise OptionError(f"the OV copying score needs at least 2 tokens, got {n_tokens}")
    if null_samples < 0:
        raise OptionError(f"null_samples must be 0 or more, got {null_samples}")
    tokens = torch.tensor(copying_tokens(lm, n_tokens))
    with torch.no_grad():
        w_v, w_o = factors if factors is not None else ov_factors(lm)
        device = w_v.device
        embed = normalized_embedding(lm, lm.W_E[tokens.to(lm.W_E.device)]).to(device)  # [n, d]
        unembed = lm.W_U[:, tokens.to(lm.W_U.device)].double().to(device)  # [d, n]
        score = _copying_ratio(w_v, w_o, unembed @ embed, torch.float64).float()
        generator = torch.Generator().manual_seed(seed)
        samples = []
        embed32, unembed32 = embed.float(), unembed.float()
        for _ in range(null_samples):  # the null in float32: its spread, not its last digits, matters
            order = torch.randperm(len(tokens), generator=generator).to(device)
            samples.append(_copying_ratio(w_v, w_o, unembed32 @ embed32[order], torch.float32).float())
    stacked = torch.stack(samples) if samples else torch.zeros(0, lm.n_layers, lm.n_heads)
    null = _floor(stacked) if samples else torch.zeros_like(score)
    return WeightScores(score=score, null=null, samples=stacked,
                        params=dict(n_tokens=len(tokens), null_samples=null_samples, seed=seed))


def ordinal_sequences(lm: LoadedModel) -> dict[str, list[int]]:
    """Token ids of each ordinal sequence: per sequence the variant (with a leading space, or without) whose
    longest single-token prefix is longest; sequences with fewer than 3 such items are left out."""
    chosen: dict[str, list[int]] = {}
    for name, items in ORDINAL_SEQUENCES.items():
        best: list[int] = []
        for prefix in (" ", ""):
            ids: list[int] = []
            for item in items:
                encoded = lm.encode(prefix + item, prepend_bos=False)
                if len(encoded) != 1 or encoded[0] in ids:
                    break
                ids.append(int(encoded[0]))
            if len(ids) > len(best):
                best = ids
        if len(best) >= 3:
            chosen[name] = best
    return chosen


def mlp0_embedding(lm: LoadedModel, token_ids: Sequence[int]) -> Tensor:
    """Gould et al.'s effective embedding ``W_E[t] + MLP0(W_E[t])`` per token: each token run alone with
    block 0's attention output zeroed, the residual after block 0 (``[token, d_model]``)."""
    store: dict[str, Tensor] = {}

    def zero(attn_out: Tensor, hook: object) -> Tensor:
        return torch.zeros_like(attn_out)

    def keep(resid: Tensor, hook: object) -> None:
        store["resid"] = resid.detach()

    batch = lm.pad([[int(t)] for t in token_ids])
    with torch.inference_mode():
        lm.forward(batch, fwd_hooks=[("blocks.0.hook_attn_out", zero), ("blocks.0.hook_resid_post", keep)],
                   stop_at_layer=1)
    return store["resid"][:, 0]


def _successor_hits(logits: Tensor, sequences: dict[str, list[int]], index: dict[int, int]) -> tuple[Tensor, Tensor]:
    """Hits ``[layer, head]`` and the number of scored items: argmax over each sequence's own items."""
    hits = torch.zeros(logits.shape[:2], dtype=torch.float64)
    total = 0
    for ids in sequences.values():
        columns = torch.tensor([index[t] for t in ids])
        block = logits[:, :, columns[:-1]][..., columns]  # [L, H, items-1, items]
        top = block.argmax(dim=-1)  # [L, H, items-1]
        target = torch.arange(1, len(ids))
        hits += (top == target).double().sum(-1)
        total += len(ids) - 1
    return hits, torch.tensor(total)


def successor_scores(lm: LoadedModel, *, null_samples: int = 32, seed: int = 0,
                     factors: tuple[Tensor, Tensor] | None = None) -> WeightScores:
    """Gould et al.'s successor score of every head (see the module docstring), with the shuffled-input null.

    Examples:
        >>> import interp
        >>> s = successor_scores(interp.load_model("tiny-gpt2"), null_samples=4)
        >>> sorted(s.details["sequences"])
        ['letters', 'numbers']
    """
    _check_lm(lm)
    if null_samples < 0:
        raise OptionError(f"null_samples must be 0 or more, got {null_samples}")
    sequences = ordinal_sequences(lm)
    if not sequences:
        raise OptionError(f"none of the ordinal sequences is made of single tokens in {lm.name}'s vocabulary")
    vocabulary = sorted({t for ids in sequences.values() for t in ids})
    index = {t: i for i, t in enumerate(vocabulary)}
    ids = torch.tensor(vocabulary)
    with torch.no_grad():
        w_v, w_o = factors if factors is not None else ov_factors(lm)
        device = w_v.device
        raw = normalized_embedding(lm, lm.W_E[ids.to(lm.W_E.device)]).to(device)
        effective = raw
        if lm.n_layers > 1:
            effective = normalized_embedding(lm, mlp0_embedding(lm, vocabulary)).to(device)
        unembed = lm.W_U[:, ids.to(lm.W_U.device)].double().to(device)  # [d, n]
        write = w_o @ unembed  # [L, H, d_head, n]

        def logits_of(first_layer: Tensor, later_layers: Tensor) -> Tensor:
            """OV logits ``[layer, head, input, candidate]``: layer 0 reads ``first_layer``, the others ``later_layers``."""
            read = torch.cat([torch.einsum("nd,hde->hne", first_layer, w_v[0])[None],
                              torch.einsum("nd,lhde->lhne", later_layers, w_v[1:])])
            return (read @ write).cpu()

        logits = logits_of(raw, effective)
        hits, total = _successor_hits(logits, sequences, index)
        score = (hits / total).float()
        generator = torch.Generator().manual_seed(seed)
        samples = []
        for _ in range(null_samples):
            # shuffling which token goes in permutes the rows of the OV logits (inputs are rows)
            order = torch.randperm(len(vocabulary), generator=generator)
            samples.append((_successor_hits(logits[:, :, order], sequences, index)[0] / total).float())
    stacked = torch.stack(samples) if samples else torch.zeros(0, lm.n_layers, lm.n_heads)
    null = _floor(stacked) if samples else torch.zeros_like(score)
    details = dict(sequences={name: lm.token_strings(t) for name, t in sequences.items()}, items=int(total))
    return WeightScores(score=score, null=null, samples=stacked, params=dict(null_samples=null_samples, seed=seed),
                        details=details)
