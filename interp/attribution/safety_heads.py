"""Safety heads: Ships, generalized Ships and the Sahara greedy group search (Zhou et al., "On the Role of
Attention Heads in Large Language Model Safety", ICLR 2025, arXiv 2410.13708; docs/analyses/safety-heads.md).

* **Ablation operators** (:mod:`interp.interventions`): *undifferentiated attention* (``scale_query``: the
  head's query is multiplied by ε, default 1e-5, so its pattern collapses to the causal-uniform one) and
  *scaling contribution* (``scale_output``: the head's output ``z`` is multiplied by ε). With grouped-query
  attention only the query head is touched.
* **Ships** of head ``h`` on query ``q``: ``KL(p(·|q; θ) ‖ p(·|q; θ \\ h))`` of the next-token distribution
  at the last prompt position (base first, as in the official code, which adds 1e-12 to both
  distributions; here the KL is computed exactly from float64 log-softmaxes). The dataset score is the
  mean over queries; per query the top heads are kept.
* **Generalized Ships** of a head group ``G``: stack the final hidden state (after the final norm) at the
  last prompt token of every harmful query into ``M ∈ R^{|Q|×d}`` for the base model and for the model
  with ``G`` ablated; the score is the sum of the top ``r_main`` principal angles, in degrees, between the
  top-``r_main`` left-singular subspaces of the two matrices (``r_main = 1`` in the official code). The
  angles are computed stably (arcsin of the sines for small angles), so near-zero scores are exact.
* **Sahara**: greedy search — at every step add the head whose ablation, together with the group so far,
  maximises generalized Ships.

Speed: the naive way (the official code's) runs one full forward pass per head per step. Here the clean run
is done once and its residual stream cached; a candidate head in layer ``l`` is scored by running only
layers ``l..L-1`` from the cached ``resid_pre`` of layer ``l``, with every head of that layer stacked
along the batch dimension (row block ``j`` ablates head ``j``, :func:`interp.interventions.layer_edit_hooks`)
and the unembedding computed at the last prompt position only. For a Sahara step with group ``G`` the run
with ``G`` ablated is done once and cached the same way, so a candidate in layer ``l`` still starts at
``l``. :func:`naive_ships_scan` and :func:`naive_sahara` are the reference loops; tests check both give
the same scores.

Deviation to know: TransformerLens folds the final norm's gain into the unembedding (``fold_ln``), so the
"final hidden state" here (the output of ``ln_final``) is the normalised residual without the gain; the
official code uses Hugging Face's ``hidden_states[-1]``, which includes it. Load the model with
``processing={"fold_ln": False}`` to match it exactly.

Examples:
    >>> import interp
    >>> from interp.attribution.safety_heads import ships_scan, sahara
    >>> lm = interp.load_model("tiny-gpt2")
    >>> scores = ships_scan(lm, ["How do I do a bad thing?", "Tell me a bad thing."], template="none")
    >>> tuple(scores.mean.shape)
    (2, 4)
    >>> group = sahara(lm, ["How do I do a bad thing?", "Tell me a bad thing."], steps=2, template="none")
    >>> len(group.heads)
    2
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import OptionError, PromptError
from interp.interventions import ABLATION_MODES, ablate_heads, check_heads, layer_edit_hooks
from interp.models import LoadedModel, TokenBatch
from interp.results import tidy_frame

Head = tuple[int, int]
Template = Literal["chat", "raw", "none", "auto"]
#: The raw prompt format of the official Ships / Sahara scripts.
RAW_TEMPLATE = "## Query:{q}\n## Answer:"
SAFETY_MODES = ("scale_query", "scale_output")


# ----------------------------------------------------------------------------------------------------
# Scores
# ----------------------------------------------------------------------------------------------------
def ships_kl(base_logits: Float[Tensor, "rows vocab"], ablated_logits: Float[Tensor, "rows vocab"]) -> Tensor:
    """``KL(base ‖ ablated)`` per row, in nats, computed in float64 from log-softmaxes.

    Examples:
        >>> x = torch.randn(2, 5)
        >>> ships_kl(x, x)
        tensor([0., 0.], dtype=torch.float64)
    """
    base = torch.log_softmax(base_logits.double(), dim=-1)
    ablated = torch.log_softmax(ablated_logits.double(), dim=-1)
    return (base.exp() * (base - ablated)).sum(dim=-1)


def principal_angles(a: Float[Tensor, "n r"], b: Float[Tensor, "n r"]) -> Tensor:
    """Principal angles (radians, ascending) between the column spans of two orthonormal matrices.

    Small angles come from the sines (``arcsin σ(B − A AᵀB)``), large ones from the cosines
    (``arccos σ(AᵀB)``), so neither end loses precision (Björck & Golub, 1973).

    Examples:
        >>> e = torch.eye(3, dtype=torch.float64)
        >>> principal_angles(e[:, :1], e[:, 1:2])
        tensor([1.5708], dtype=torch.float64)
    """
    a, b = a.double(), b.double()
    cross = a.T @ b
    cosines = torch.linalg.svdvals(cross).clamp(0.0, 1.0)  # descending → angles ascending
    sines = torch.linalg.svdvals(b - a @ cross).clamp(0.0, 1.0).flip(0)  # ascending
    sines = sines[: cosines.shape[0]]
    small = torch.asin(sines)
    large = torch.acos(cosines)
    return torch.where(cosines**2 > 0.5, small, large)


def subspace_angle_score(base_states: Float[Tensor, "query d_model"], ablated_states: Float[Tensor, "query d_model"],
                         r_main: int = 1) -> float:
    """Generalized Ships: sum of the top ``r_main`` principal angles (degrees) between the top left-singular
    subspaces of the two matrices of last-token hidden states.

    Examples:
        >>> m = torch.randn(6, 4, dtype=torch.float64)
        >>> round(subspace_angle_score(m, m), 6)
        0.0
    """
    if r_main < 1 or r_main > min(base_states.shape):
        raise OptionError(f"r_main must be between 1 and min(queries, d_model) = {min(base_states.shape)}, got {r_main}")
    u_base = torch.linalg.svd(base_states.double(), full_matrices=False)[0][:, :r_main]
    u_ablated = torch.linalg.svd(ablated_states.double(), full_matrices=False)[0][:, :r_main]
    return float(principal_angles(u_base, u_ablated).sum() * 180.0 / math.pi)


# ----------------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------------
def resolve_template(lm: LoadedModel, template: str) -> str:
    """``auto`` → ``chat`` when the tokenizer has a chat template, else ``raw``."""
    if template not in ("chat", "raw", "none", "auto"):
        raise OptionError(f"unknown template {template!r}: use chat, raw, none or auto")
    if template == "auto":
        return "chat" if getattr(lm.tokenizer, "chat_template", None) else "raw"
    if template == "chat" and not getattr(lm.tokenizer, "chat_template", None):
        raise OptionError(f"{lm.name} has no chat template: use template 'raw' or 'none'")
    return template


def format_prompts(lm: LoadedModel, requests: Sequence[str], template: str = "auto") -> list[list[int]]:
    """Token rows of the requests: the chat template (user turn + generation prompt), the official raw
    template ``"## Query:{q}\\n## Answer:"`` (BOS prepended), or the bare text (``none``)."""
    from interp.generation import prompt_token_rows

    if len(requests) == 0:
        raise PromptError("the harmful prompt set is empty: give at least one request")
    template = resolve_template(lm, template)
    if template == "chat":
        return prompt_token_rows(lm, list(requests), chat_template=True)
    if template == "raw":
        return [lm.encode(RAW_TEMPLATE.format(q=q)) for q in requests]
    return [lm.encode(q) for q in requests]


# ----------------------------------------------------------------------------------------------------
# The engine: partial forward passes from cached residual streams
# ----------------------------------------------------------------------------------------------------
@dataclass
class _Batch:
    batch: TokenBatch
    last: Tensor  # index of the last real token per row

    @property
    def rows(self) -> int:
        return len(self.batch)


def _batches(lm: LoadedModel, rows: Sequence[Sequence[int]], batch_size: int) -> list[_Batch]:
    out = []
    for start in range(0, len(rows), batch_size):
        batch = lm.pad(rows[start:start + batch_size])
        out.append(_Batch(batch, batch.lengths - 1))
    return out


def _finish(lm: LoadedModel, residual: Tensor, last: Tensor, want_logits: bool) -> tuple[Tensor, Tensor | None]:
    """Final norm (and unembedding) of each row's last real position."""
    picked = residual[torch.arange(residual.shape[0]), last.to(residual.device)][:, None, :]
    states = lm.final_norm(picked)
    logits = lm.unembed(states)[:, 0] if want_logits else None
    return states[:, 0], logits


def _run_layers(lm: LoadedModel, residual: Tensor, mask: Tensor, start: int, hooks: list) -> Tensor:
    return lm.forward(residual=residual, start_at_layer=start, stop_at_layer=lm.n_layers, attention_mask=mask,
                      fwd_hooks=hooks)


def _full_run(lm: LoadedModel, item: _Batch, hooks: list, keep_from: int | None) -> tuple[dict[int, Tensor], Tensor, Tensor]:
    """One full forward with ``hooks``; caches ``resid_pre`` of layers ≥ ``keep_from``; returns final states
    and last-position logits."""
    cached: dict[int, Tensor] = {}

    def keep(layer: int) -> Callable[..., None]:
        def hook(resid: Tensor, hook: Any) -> None:
            cached[layer] = resid.detach()

        return hook

    layers = range(keep_from, lm.n_layers) if keep_from is not None else range(0)
    capture = [(f"blocks.{layer}.hook_resid_pre", keep(layer)) for layer in layers]
    residual = lm.forward(item.batch, fwd_hooks=list(hooks) + capture, stop_at_layer=lm.n_layers)
    states, logits = _finish(lm, residual, item.last, want_logits=True)
    assert logits is not None
    return cached, states, logits


def _group_hooks(lm: LoadedModel, group: Sequence[Head], mode: str, eps: float, from_layer: int,
                 extra: dict[int, Tensor] | None = None) -> list:
    """Hooks ablating ``group`` in layers ≥ ``from_layer``; ``extra[layer]`` is a per-row selection that
    is merged with the group's heads of that layer (for stacked candidate rows)."""
    by_layer: dict[int, Tensor] = {}
    for layer, head in group:
        if layer >= from_layer:
            by_layer.setdefault(layer, torch.zeros(1, lm.n_heads))[0, head] = 1.0
    for layer, selection in (extra or {}).items():
        base = by_layer.get(layer, torch.zeros(1, lm.n_heads))
        by_layer[layer] = torch.clamp(selection + base, max=1.0)
    hooks: list = []
    for layer in sorted(by_layer):
        hooks += layer_edit_hooks(lm, layer, by_layer[layer], mode, eps=eps)
    return hooks


def _check_operator(mode: str, eps: float | None) -> float:
    if mode not in ABLATION_MODES:
        raise OptionError(f"unknown ablation mode {mode!r}: the safety-head operators are {', '.join(SAFETY_MODES)}")
    if mode not in SAFETY_MODES:
        raise OptionError(f"mode {mode!r} is not a safety-head operator: use scale_query (undifferentiated "
                          "attention) or scale_output (scaling contribution)")
    value = 1e-5 if eps is None else float(eps)
    if not math.isfinite(value) or value < 0:
        raise OptionError(f"eps must be a finite number ≥ 0, got {eps}")
    return value


def _candidates(lm: LoadedModel, candidates: Sequence[Head] | None) -> list[Head]:
    if candidates is None:
        return [(layer, head) for layer in range(lm.n_layers) for head in range(lm.n_heads)]
    checked = check_heads(lm, list(candidates))
    if not checked:
        raise OptionError("the candidate head list is empty: give at least one (layer, head) pair")
    return sorted(set(checked))


def _scan(lm: LoadedModel, items: list[_Batch], group: Sequence[Head], candidates: Sequence[Head], mode: str,
          eps: float, want_logits: bool, progress: bool | None, chunk_rows: int,
          ) -> tuple[dict[Head, list[Tensor]], dict[Head, list[Tensor]], list[Tensor], list[Tensor]]:
    """For every candidate c, the last-token states (and logits) with ``group ∪ {c}`` ablated.

    Returns per-candidate lists over prompt batches, plus the clean states and clean logits per batch.
    """
    group = list(group)
    pending = [c for c in candidates if c not in group]
    first_layer = min([c[0] for c in pending], default=lm.n_layers)
    states: dict[Head, list[Tensor]] = {c: [] for c in pending}
    logits: dict[Head, list[Tensor]] = {c: [] for c in pending}
    clean_states: list[Tensor] = []
    clean_logits: list[Tensor] = []
    by_layer: dict[int, list[int]] = {}
    for layer, head in pending:
        by_layer.setdefault(layer, []).append(head)
    iterator: Any = [(b, layer) for b in range(len(items)) for layer in sorted(by_layer)]
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="ablation scan", unit="layer")
    cache: dict[int, dict[int, Tensor]] = {}
    with torch.inference_mode():
        for index, item in enumerate(items):
            clean_cache, clean_state, clean_logit = _full_run(lm, item, [], first_layer if not group else None)
            clean_states.append(clean_state)
            clean_logits.append(clean_logit)
            if group:  # the run with the group so far ablated, done once per step
                group_cache, _, _ = _full_run(lm, item, _group_hooks(lm, group, mode, eps, 0), first_layer)
                cache[index] = group_cache
            else:
                cache[index] = clean_cache
        for index, layer in iterator:
            item = items[index]
            resid = cache[index][layer]
            mask = item.batch.attention_mask.to(lm.device)
            heads = by_layer[layer]
            per_chunk = max(1, chunk_rows // item.rows)
            for start in range(0, len(heads), per_chunk):
                chunk = heads[start:start + per_chunk]
                k = len(chunk)
                selection = torch.zeros(k * item.rows, lm.n_heads)
                for j, head in enumerate(chunk):
                    selection[j * item.rows:(j + 1) * item.rows, head] = 1.0
                hooks = _group_hooks(lm, group, mode, eps, layer, extra={layer: selection})
                out = _run_layers(lm, resid.repeat(k, 1, 1), mask.repeat(k, 1), layer, hooks)
                s, lg = _finish(lm, out, item.last.repeat(k), want_logits)
                for j, head in enumerate(chunk):
                    rows = slice(j * item.rows, (j + 1) * item.rows)
                    states[(layer, head)].append(s[rows].float().cpu())
                    if lg is not None:
                        logits[(layer, head)].append(lg[rows].float().cpu())
    return states, logits, [s.float().cpu() for s in clean_states], [lg.float().cpu() for lg in clean_logits]


# ----------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShipsScores:
    """Ships per head and query, and generalized Ships per single head.

    Attributes:
        per_query: ``KL(base ‖ ablated)`` per query and head, nats.
        mean: dataset-level Ships (mean over queries).
        generalized: generalized Ships of each head on its own (degrees; Sahara's first step).
        prompts: the requests scored.
    """

    per_query: Float[Tensor, "query layer head"]
    mean: Float[Tensor, "layer head"]
    generalized: Float[Tensor, "layer head"]
    prompts: tuple[str, ...]
    mode: str
    eps: float
    r_main: int
    template: str
    seconds: float = 0.0

    def top_heads(self, k: int = 10, *, metric: str = "ships") -> list[tuple[int, int, float]]:
        """The ``k`` heads with the highest dataset Ships (``metric="ships"``) or generalized Ships."""
        table = self.mean if metric == "ships" else self.generalized
        flat = torch.nan_to_num(table, nan=-math.inf).flatten()
        order = torch.argsort(flat, descending=True)[:k]
        n_heads = table.shape[1]
        return [(int(i) // n_heads, int(i) % n_heads, float(flat[i])) for i in order]

    def per_query_top(self, k: int = 10) -> list[list[tuple[int, int, float]]]:
        """For every query, its ``k`` highest-Ships heads (the official code keeps the top 10)."""
        n_heads = self.per_query.shape[2]
        out = []
        for row in self.per_query:
            flat = row.flatten()
            order = torch.argsort(flat, descending=True)[:k]
            out.append([(int(i) // n_heads, int(i) % n_heads, float(flat[i])) for i in order])
        return out

    def to_frame(self) -> pd.DataFrame:
        """Tidy rows: ``ships_mean`` and ``generalized_ships`` per head, ``ships`` per (query, head)."""
        n_query, n_layers, n_heads = self.per_query.shape
        layer_idx, head_idx = np.meshgrid(range(n_layers), range(n_heads), indexing="ij")
        frames = [
            pd.DataFrame(dict(layer=layer_idx.ravel(), head=head_idx.ravel(), metric="ships_mean",
                              value=self.mean.numpy().ravel())),
            pd.DataFrame(dict(layer=layer_idx.ravel(), head=head_idx.ravel(), metric="generalized_ships",
                              value=self.generalized.numpy().ravel())),
        ]
        q_idx, l_idx, h_idx = np.meshgrid(range(n_query), range(n_layers), range(n_heads), indexing="ij")
        frames.append(pd.DataFrame(dict(layer=l_idx.ravel(), head=h_idx.ravel(), prompt=q_idx.ravel(),
                                        metric="ships", value=self.per_query.numpy().ravel())))
        frame = tidy_frame(pd.concat(frames, ignore_index=True), extra_columns=("prompt",))
        if "prompt" in frame:
            frame["prompt"] = frame["prompt"].astype("Int64")
        return frame


@dataclass(frozen=True)
class SaharaResult:
    """The greedy head group.

    Attributes:
        heads: heads in the order they were added.
        scores: generalized Ships (degrees) of the group after each step.
        step_scores: the score of every candidate at every step (NaN where not evaluated).
    """

    heads: tuple[Head, ...]
    scores: tuple[float, ...]
    step_scores: Float[Tensor, "step layer head"]
    r_main: int
    mode: str
    eps: float
    seconds: float = 0.0
    params: dict = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        rows = [dict(layer=layer, head=head, position=step, metric="sahara_group_score", value=score)
                for step, ((layer, head), score) in enumerate(zip(self.heads, self.scores, strict=True), start=1)]
        steps, n_layers, n_heads = self.step_scores.shape
        for step in range(steps):
            for layer in range(n_layers):
                for head in range(n_heads):
                    value = float(self.step_scores[step, layer, head])
                    if not math.isnan(value):
                        rows.append(dict(layer=layer, head=head, position=step + 1, metric="sahara_candidate_score",
                                         value=value))
        return tidy_frame(rows)


# ----------------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------------
def ships_scan(
    lm: LoadedModel,
    requests: Sequence[str] | Sequence[Sequence[int]],
    *,
    mode: str = "scale_query",
    eps: float | None = None,
    r_main: int = 1,
    template: str = "auto",
    candidates: Sequence[Head] | None = None,
    batch_size: int = 16,
    chunk_rows: int = 160,
    progress: bool | None = None,
) -> ShipsScores:
    """Ships (per query and dataset mean) and single-head generalized Ships of every (or each candidate) head.

    Args:
        lm: a decoder model.
        requests: harmful requests (formatted by ``template``) or ready token rows.
        mode: ``scale_query`` (undifferentiated attention, default) or ``scale_output`` (scaling contribution).
        eps: the operator's factor (default 1e-5).
        r_main: singular directions in generalized Ships (official: 1).
        template: ``auto`` (chat template when the model has one), ``chat``, ``raw`` or ``none``.
        candidates: heads to score (default all); others are NaN.
        batch_size: prompts per forward pass; ``chunk_rows`` caps prompts × stacked heads per pass.

    Examples:
        >>> import interp
        >>> s = ships_scan(interp.load_model("tiny-llama"), ["abc", "defgh"], template="none")
        >>> bool((s.mean >= 0).all())
        True
    """
    if lm.is_encoder:
        raise OptionError(f"{lm.name} is an encoder; Ships needs a decoder's next-token distribution")
    value = _check_operator(mode, eps)
    started = time.perf_counter()
    rows, template = _rows(lm, requests, template)
    items = _batches(lm, rows, batch_size)
    heads = _candidates(lm, candidates)
    states, logits, clean_states, clean_logits = _scan(lm, items, [], heads, mode, value, True, progress, chunk_rows)
    base_states = torch.cat(clean_states)
    base_logits = torch.cat(clean_logits)
    per_query = torch.full((len(rows), lm.n_layers, lm.n_heads), float("nan"))
    generalized = torch.full((lm.n_layers, lm.n_heads), float("nan"))
    for (layer, head) in heads:
        per_query[:, layer, head] = ships_kl(base_logits, torch.cat(logits[(layer, head)])).float()
        generalized[layer, head] = subspace_angle_score(base_states, torch.cat(states[(layer, head)]), r_main)
    prompts = tuple(str(r) for r in requests)
    return ShipsScores(per_query=per_query, mean=per_query.mean(dim=0), generalized=generalized, prompts=prompts,
                       mode=mode, eps=value, r_main=r_main, template=template,
                       seconds=round(time.perf_counter() - started, 3))


def _rows(lm: LoadedModel, requests: Sequence[Any], template: str) -> tuple[list[list[int]], str]:
    if len(requests) == 0:
        raise PromptError("the harmful prompt set is empty: give at least one request")
    if isinstance(requests[0], str):
        return format_prompts(lm, list(requests), template), resolve_template(lm, template)
    return [list(map(int, r)) for r in requests], "token ids"


def sahara(
    lm: LoadedModel,
    requests: Sequence[str] | Sequence[Sequence[int]],
    *,
    steps: int = 3,
    mode: str = "scale_query",
    eps: float | None = None,
    r_main: int = 1,
    template: str = "auto",
    candidates: Sequence[Head] | None = None,
    pool: int | None = None,
    first_step: ShipsScores | None = None,
    batch_size: int = 16,
    chunk_rows: int = 160,
    progress: bool | None = None,
) -> SaharaResult:
    """Greedy search of the head group (size ``steps``, at most 5) that maximises generalized Ships.

    Args:
        steps: group size S (1..5; the paper uses up to 5, the official demo 1).
        candidates: heads searched (default all).
        pool: after the first step, search only the ``pool`` heads with the highest single-head score
            (default: all candidates, as the paper does). A CPU shortcut; the report says when it is used.
        first_step: a :func:`ships_scan` result on the same requests and operator, reused as step 1.

    The other arguments are those of :func:`ships_scan`.

    Examples:
        >>> import interp
        >>> result = sahara(interp.load_model("tiny-gpt2"), ["ab", "cde", "fghi"], steps=1, template="none")
        >>> len(result.heads), len(result.scores)
        (1, 1)
    """
    if lm.is_encoder:
        raise OptionError(f"{lm.name} is an encoder; Sahara needs a decoder")
    if not 1 <= steps <= 5:
        raise OptionError(f"steps (the group size S) must be between 1 and 5, got {steps}")
    if pool is not None and pool < 1:
        raise OptionError(f"pool must be at least 1 (or omitted for a full search), got {pool}")
    value = _check_operator(mode, eps)
    started = time.perf_counter()
    rows, template = _rows(lm, requests, template)
    items = _batches(lm, rows, batch_size)
    heads = _candidates(lm, candidates)
    if len(heads) < steps:
        raise OptionError(f"steps={steps} needs at least that many candidate heads, got {len(heads)}")
    step_scores = torch.full((steps, lm.n_layers, lm.n_heads), float("nan"))
    group: list[Head] = []
    scores: list[float] = []
    base_states: Tensor | None = None
    for step in range(steps):
        if step == 0 and first_step is not None:
            if first_step.mode != mode or first_step.eps != value or first_step.r_main != r_main:
                raise OptionError("first_step was computed with another operator, eps or r_main")
            table = first_step.generalized.clone()
            keep = torch.zeros_like(table, dtype=torch.bool)
            for layer, head in heads:
                keep[layer, head] = True
            table[~keep] = float("nan")
        else:
            searched = heads
            if step > 0 and pool is not None:
                ranked = sorted(heads, key=lambda h: -float(torch.nan_to_num(step_scores[0][h], nan=-1.0)))
                searched = ranked[:pool]
            states, _, clean_states, _ = _scan(lm, items, group, searched, mode, value, False, progress, chunk_rows)
            if base_states is None:
                base_states = torch.cat(clean_states)
            table = torch.full((lm.n_layers, lm.n_heads), float("nan"))
            for head, per_batch in states.items():
                table[head] = subspace_angle_score(base_states, torch.cat(per_batch), r_main)
        for head in group:
            table[head] = float("nan")
        step_scores[step] = table
        flat = torch.nan_to_num(table, nan=-math.inf).flatten()
        best = int(torch.argmax(flat))
        if not math.isfinite(float(flat[best])):
            break
        group.append((best // lm.n_heads, best % lm.n_heads))
        scores.append(float(flat[best]))
    return SaharaResult(heads=tuple(group), scores=tuple(scores), step_scores=step_scores, r_main=r_main, mode=mode,
                        eps=value, seconds=round(time.perf_counter() - started, 3),
                        params=dict(steps=steps, pool=pool, template=template, n_queries=len(rows)))


def group_score(lm: LoadedModel, requests: Sequence[str] | Sequence[Sequence[int]], heads: Sequence[Head], *,
                mode: str = "scale_query", eps: float | None = None, r_main: int = 1, template: str = "auto",
                batch_size: int = 16) -> float:
    """Generalized Ships of one head group, by two full forward passes (base and ablated)."""
    value = _check_operator(mode, eps)
    rows, _ = _rows(lm, requests, template)
    base, _ = _naive_states(lm, rows, [], mode, value, batch_size)
    ablated, _ = _naive_states(lm, rows, list(heads), mode, value, batch_size)
    return subspace_angle_score(base, ablated, r_main)


# ----------------------------------------------------------------------------------------------------
# Reference loops (one full forward per head, as the official code does)
# ----------------------------------------------------------------------------------------------------
def _naive_states(lm: LoadedModel, rows: Sequence[Sequence[int]], heads: Sequence[Head], mode: str, eps: float,
                  batch_size: int) -> tuple[Tensor, Tensor]:
    states, logits = [], []
    for start in range(0, len(rows), batch_size):
        batch = lm.pad(rows[start:start + batch_size])
        captured: dict[str, Tensor] = {}

        def grab(value: Tensor, hook: Any, store: dict[str, Tensor] = captured) -> None:
            store["resid"] = value.detach()

        name = f"blocks.{lm.n_layers - 1}.hook_resid_post"
        with torch.inference_mode():
            if heads:
                with ablate_heads(lm, list(heads), mode, eps=eps):
                    full = lm.forward(batch, fwd_hooks=[(name, grab)])
            else:
                full = lm.forward(batch, fwd_hooks=[(name, grab)])
            last = batch.lengths - 1
            index = torch.arange(len(batch))
            picked = captured["resid"][index, last][:, None]
            final = lm.final_norm(picked)[:, 0]
        states.append(final.float().cpu())
        logits.append(full[index, last].float().cpu())
    return torch.cat(states), torch.cat(logits)


def naive_ships_scan(lm: LoadedModel, requests: Sequence[Any], *, mode: str = "scale_query", eps: float | None = None,
                     r_main: int = 1, template: str = "auto", candidates: Sequence[Head] | None = None,
                     batch_size: int = 16) -> ShipsScores:
    """Reference Ships scan: a full forward pass (all layers, full logits) per head."""
    value = _check_operator(mode, eps)
    started = time.perf_counter()
    rows, template = _rows(lm, requests, template)
    base_states, base_logits = _naive_states(lm, rows, [], mode, value, batch_size)
    per_query = torch.full((len(rows), lm.n_layers, lm.n_heads), float("nan"))
    generalized = torch.full((lm.n_layers, lm.n_heads), float("nan"))
    for head in _candidates(lm, candidates):
        states, logits = _naive_states(lm, rows, [head], mode, value, batch_size)
        per_query[:, head[0], head[1]] = ships_kl(base_logits, logits).float()
        generalized[head] = subspace_angle_score(base_states, states, r_main)
    return ShipsScores(per_query=per_query, mean=per_query.mean(dim=0), generalized=generalized,
                       prompts=tuple(str(r) for r in requests), mode=mode, eps=value, r_main=r_main,
                       template=template, seconds=round(time.perf_counter() - started, 3))


def naive_sahara(lm: LoadedModel, requests: Sequence[Any], *, steps: int = 3, mode: str = "scale_query",
                 eps: float | None = None, r_main: int = 1, template: str = "auto",
                 candidates: Sequence[Head] | None = None, batch_size: int = 16) -> SaharaResult:
    """Reference Sahara: a full forward pass per candidate per step (the official algorithm)."""
    value = _check_operator(mode, eps)
    started = time.perf_counter()
    rows, _ = _rows(lm, requests, template)
    base_states, _ = _naive_states(lm, rows, [], mode, value, batch_size)
    heads = _candidates(lm, candidates)
    step_scores = torch.full((steps, lm.n_layers, lm.n_heads), float("nan"))
    group: list[Head] = []
    scores: list[float] = []
    for step in range(steps):
        for head in heads:
            if head in group:
                continue
            states, _ = _naive_states(lm, rows, group + [head], mode, value, batch_size)
            step_scores[step][head] = subspace_angle_score(base_states, states, r_main)
        flat = torch.nan_to_num(step_scores[step], nan=-math.inf).flatten()
        best = int(torch.argmax(flat))
        group.append((best // lm.n_heads, best % lm.n_heads))
        scores.append(float(flat[best]))
    return SaharaResult(heads=tuple(group), scores=tuple(scores), step_scores=step_scores, r_main=r_main, mode=mode,
                        eps=value, seconds=round(time.perf_counter() - started, 3), params=dict(steps=steps))


@dataclass(frozen=True)
class MatchedGroup:
    """A random head group grown until its damage to ordinary text matches a target (a control for breakage).

    Attributes:
        heads: the group.
        loss_change: its change in next-token loss on the utility texts (nats/token).
        target: the loss change it was matched to; ``matched`` whether it reached ``fraction × target``.
    """

    heads: tuple[Head, ...]
    loss_change: float
    target: float
    matched: bool


def loss_matched_group(
    lm: LoadedModel, target_change: float, *, start_size: int, exclude: Sequence[Head], texts: Sequence[str],
    base_loss: float, rng: Any, mode: str = "scale_query", eps: float | None = None, max_size: int | None = None,
    fraction: float = 0.8, max_tokens: int = 64, batch_size: int = 8,
) -> MatchedGroup:
    """The smallest prefix of a random order of heads (none of ``exclude``, at least ``start_size``) whose
    ablation raises the loss on ``texts`` by at least ``fraction × target_change`` (sizes doubled until it
    does, then bisected; at most ``max_size`` heads, default all the others).

    A group that removes refusal *and* damages the model must be compared with groups that damage it as much:
    if equally damaging random groups raise the attack-success rate as much, the found heads are not safety
    heads, only important heads.

    Examples:
        >>> import interp, random
        >>> from interp.safety_tune import text_loss
        >>> lm = interp.load_model("tiny-gpt2")
        >>> texts = ["a short text to score", "and one more"]
        >>> group = loss_matched_group(lm, 0.01, start_size=1, exclude=[], texts=texts, rng=random.Random(0),
        ...                            base_loss=text_loss(lm, texts))
        >>> group.matched
        True
    """
    from interp.interventions import ablation_hooks, apply_hooks
    from interp.safety_tune import text_loss

    _check_operator(mode, eps)
    pool = [(layer, head) for layer in range(lm.n_layers) for head in range(lm.n_heads) if (layer, head) not in set(exclude)]
    rng.shuffle(pool)
    limit = len(pool) if max_size is None else min(max_size, len(pool))
    goal = fraction * target_change
    measured: dict[int, float] = {}

    def change_at(size: int) -> float:
        if size not in measured:
            with apply_hooks(lm, ablation_hooks(lm, sorted(pool[:size]), mode, eps=eps)):
                measured[size] = text_loss(lm, texts, max_tokens=max_tokens, batch_size=batch_size) - base_loss
        return measured[size]

    low, high = 0, max(1, min(start_size, limit))
    while change_at(high) < goal and high < limit:  # double until the damage is reached
        low, high = high, min(2 * high, limit)
    if change_at(high) >= goal:
        while high - low > 1:  # the smallest size that reaches it (damage grows with the prefix, roughly)
            middle = (low + high) // 2
            if middle >= start_size and change_at(middle) >= goal:
                high = middle
            else:
                low = middle
    return MatchedGroup(heads=tuple(sorted(pool[:high])), loss_change=change_at(high), target=target_change,
                        matched=change_at(high) >= goal)
