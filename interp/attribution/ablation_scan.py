"""Exact single-head ablation scans that reuse the clean run (Michel, Levy & Neubig, NeurIPS 2019, §3).

``Δ_h = M(model with head h ablated) − M(model)`` for every head, where M is the task loss, the
logit difference between a correct and an incorrect answer, the KL divergence of the answer-position
distribution from the clean one, or the accuracy at the answer position.

The naive way (TransformerLens's patching helpers, the official Safety-Heads code) runs one full forward
pass per head. This scan does the same arithmetic with less work:

1. one clean pass caches the residual stream entering every layer (``hook_resid_pre``) and the clean
   metrics;
2. an ablation at layer ``l`` leaves layers ``< l`` unchanged, so the pass for the heads of layer ``l``
   restarts from the cached residual with ``start_at_layer=l``;
3. the heads of a layer run together: ``k`` copies of the batch are stacked along the batch axis and row
   block ``i`` ablates head ``i`` (:func:`interp.interventions.layer_edit_hooks` with a per-row mask);
4. the final norm is applied only at the scored positions, and the unembedding of all passes is done
   together, streaming ``W_U`` in column chunks (a running log-sum-exp, arg-max and clean-weighted sum):
   on CPU a small unembedding costs about as much as reading the matrix, which the naive loop does once
   per head. When only the logit difference is needed, two columns of ``W_U`` suffice.

Results agree with :func:`naive_ablation_scan` to float rounding (checked to 1e-4 in the tests and the
benchmark ``benchmarks/bench_head_importance.py``).

Examples:
    >>> import interp
    >>> from interp.tasks import induction_task
    >>> from interp.attribution.ablation_scan import ablation_scan
    >>> lm = interp.load_model("tiny-gpt2")
    >>> scan = ablation_scan(lm, induction_task(lm, n_sequences=2, half_length=6))
    >>> tuple(scan.delta("loss").shape)      # [layer, head]
    (2, 4)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import OptionError
from interp.interventions import Head, HeadReference, ablation_hooks, check_heads, layer_edit_hooks
from interp.models import LoadedModel
from interp.tasks import Task, TaskTensors

#: Metrics a scan can compute; all but ``loss`` need a task with answers.
METRICS: tuple[str, ...] = ("loss", "logit_diff", "kl", "accuracy")
_ANSWER_METRICS = ("logit_diff", "kl", "accuracy")
#: Bytes of logits materialised at once (rows are processed in chunks below this).
LOGIT_BUDGET_BYTES = 64 * 2**20
#: Final-norm outputs of ablated passes kept before they are unembedded together.
PENDING_BUDGET_BYTES = 64 * 2**20


@dataclass(frozen=True)
class ScanResult:
    """Per-head metric values with heads ablated one at a time.

    Attributes:
        values: metric → ``[layer, head]`` metric value with that head ablated (NaN where not scanned).
        clean: metric → value of the unablated model.
        mode, eps: the ablation.
        seconds: wall time of the scan.
        forward_passes: model passes run (the clean one included).
    """

    values: dict[str, Float[Tensor, "layer head"]]
    clean: dict[str, float]
    mode: str
    eps: float | None
    seconds: float
    forward_passes: int
    params: dict = field(default_factory=dict)

    def delta(self, metric: str) -> Float[Tensor, "layer head"]:
        """``M(ablated) − M(clean)``; for ``kl`` the KL itself (it is 0 on the clean model)."""
        if metric not in self.values:
            raise OptionError(f"metric {metric!r} was not scanned: this scan has {', '.join(self.values)}")
        if metric == "kl":
            return self.values[metric]
        return self.values[metric] - self.clean[metric]

    def importance(self, metric: str) -> Float[Tensor, "layer head"]:
        """Oriented so that larger = more important: loss and KL rise, logit difference and accuracy fall."""
        sign = -1.0 if metric in ("logit_diff", "accuracy") else 1.0
        return sign * self.delta(metric)


def check_metrics(task: Task | TaskTensors, metrics: Sequence[str]) -> tuple[str, ...]:
    chosen = tuple(metrics)
    unknown = [m for m in chosen if m not in METRICS]
    if unknown or not chosen:
        raise OptionError(f"unknown metric(s) {unknown or '(none)'}: choose from {', '.join(METRICS)}")
    if not task.has_answers and any(m in _ANSWER_METRICS for m in chosen):
        raise OptionError(f"metrics {', '.join(_ANSWER_METRICS)} need a task with correct/incorrect answers; "
                          "this task has only the loss")
    return chosen


# ----------------------------------------------------------------------------------------------------
# Metrics per batch row
# ----------------------------------------------------------------------------------------------------
def _repeat(t: Tensor | None, k: int) -> Tensor | None:
    return None if t is None else t.repeat(k, *([1] * (t.dim() - 1)))


def _score_positions(tt: TaskTensors) -> Tensor:
    """``[B, P+1]``: the target positions, then the answer position (or the last target) last."""
    answer = tt.answer_positions if tt.answer_positions is not None else tt.target_positions[:, -1]
    return torch.cat([tt.target_positions, answer[:, None]], dim=1)


def rows_from_logits(
    logits: Float[Tensor, "rows pos vocab"],
    tt: TaskTensors,
    metrics: Sequence[str],
    clean_logprobs: Tensor | None,
    k: int = 1,
) -> dict[str, Tensor]:
    """Per-row metric ingredients from logits at ``_score_positions`` (``k`` stacked copies of the task).

    Returns ``loss_sum`` and ``n_targets`` (for a token-weighted loss), and per-row ``logit_diff``,
    ``kl`` and ``accuracy`` (answer position).
    """
    out: dict[str, Tensor] = {}
    # float64 reductions: a float32 log-softmax over a 262k vocabulary is off by ~1e-4 (Gemma 3).
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    if "loss" in metrics:
        target_tokens, target_mask = _repeat(tt.target_tokens, k), _repeat(tt.target_mask, k)
        assert target_tokens is not None and target_mask is not None
        picked = logprobs[:, :-1].gather(-1, target_tokens.to(logits.device)[..., None])[..., 0]
        mask = target_mask.to(logits.device)
        out["loss_sum"] = -(picked * mask).sum(dim=1).double()
        out["n_targets"] = mask.sum(dim=1).double()
    if tt.has_answers:
        correct, incorrect = _repeat(tt.correct, k), _repeat(tt.incorrect, k)
        assert correct is not None and incorrect is not None
        last = logits[:, -1]
        rows = torch.arange(last.shape[0], device=last.device)
        if "logit_diff" in metrics:
            out["logit_diff"] = (last[rows, correct] - last[rows, incorrect]).double()
        if "accuracy" in metrics:
            out["accuracy"] = (last.argmax(dim=-1) == correct.to(last.device)).double()
        if "kl" in metrics:
            assert clean_logprobs is not None
            clean = _repeat(clean_logprobs, k)
            assert clean is not None
            out["kl"] = (clean.exp() * (clean - logprobs[:, -1])).sum(dim=-1).double()
    return out


def _unembed(lm: LoadedModel, normalized: Tensor) -> Tensor:
    return lm.unembed(normalized)


def rows_from_resid(
    lm: LoadedModel,
    resid: Float[Tensor, "rows pos d_model"],
    tt: TaskTensors,
    metrics: Sequence[str],
    clean_logprobs: Tensor | None,
    k: int = 1,
) -> tuple[dict[str, Tensor], Tensor | None]:
    """Metric ingredients from the final residual (before the final norm), unembedding only what is needed.

    Returns the ingredients and the answer-position log-probs (when the full vocabulary was computed).
    """
    normalized = final_vectors(lm, resid, tt, k)  # [R, P+1, d]
    if set(metrics) == {"logit_diff"}:  # two columns of W_U suffice
        correct, incorrect = _repeat(tt.correct, k), _repeat(tt.incorrect, k)
        assert correct is not None and incorrect is not None
        last = normalized[:, -1]
        return {"logit_diff": (lm.logits_for(last, correct) - lm.logits_for(last, incorrect)).double()}, None
    vocab = lm.d_vocab
    per_row = normalized.shape[1] * vocab * 8  # float64 log-probs
    chunk = max(1, LOGIT_BUDGET_BYTES // max(per_row, 1))
    parts: list[dict[str, Tensor]] = []
    answer_logprobs: list[Tensor] = []
    rows_total = normalized.shape[0]
    batch = rows_total // k
    for start in range(0, rows_total, chunk):
        stop = min(rows_total, start + chunk)
        logits = _unembed(lm, normalized[start:stop])
        sub = _slice_rows(tt, start, stop, batch)
        clean_sub = None if clean_logprobs is None else _cycle_rows(clean_logprobs, start, stop, batch)
        parts.append(rows_from_logits(logits, sub, metrics, clean_sub, k=1))
        answer_logprobs.append(torch.log_softmax(logits[:, -1].double(), dim=-1))
        del logits
    merged = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    return merged, torch.cat(answer_logprobs)


def _cycle_rows(t: Tensor, start: int, stop: int, batch: int) -> Tensor:
    """Rows ``start:stop`` of ``t`` repeated cyclically (row ``r`` is task row ``r mod batch``)."""
    index = torch.arange(start, stop) % batch
    return t[index.to(t.device)]


def _slice_rows(tt: TaskTensors, start: int, stop: int, batch: int) -> TaskTensors:
    def pick(t: Tensor | None) -> Tensor | None:
        return None if t is None else _cycle_rows(t, start, stop, batch)

    return TaskTensors(
        batch=tt.batch, corrupted=tt.corrupted,
        target_positions=pick(tt.target_positions), target_tokens=pick(tt.target_tokens),  # type: ignore[arg-type]
        target_mask=pick(tt.target_mask), answer_positions=pick(tt.answer_positions),  # type: ignore[arg-type]
        correct=pick(tt.correct), incorrect=pick(tt.incorrect),
    )


def aggregate(rows: dict[str, Tensor], k: int) -> dict[str, Tensor]:
    """Per-copy metric values from per-row ingredients (``k`` stacked copies): ``metric → [k]``."""
    out: dict[str, Tensor] = {}
    if "loss_sum" in rows:
        out["loss"] = rows["loss_sum"].reshape(k, -1).sum(1) / rows["n_targets"].reshape(k, -1).sum(1).clamp(min=1)
    for metric in _ANSWER_METRICS:
        if metric in rows:
            out[metric] = rows[metric].reshape(k, -1).mean(1)
    return out


# ----------------------------------------------------------------------------------------------------
# The scans
# ----------------------------------------------------------------------------------------------------
def _heads_to_scan(lm: LoadedModel, heads: Sequence[Head] | None) -> dict[int, list[int]]:
    chosen = check_heads(lm, heads) if heads is not None else [
        (layer, head) for layer in range(lm.n_layers) for head in range(lm.n_heads)]
    if not chosen:
        raise OptionError(f"no heads to scan: give (layer, head) pairs in layers 0..{lm.n_layers - 1}, "
                          f"heads 0..{lm.n_heads - 1}")
    by_layer: dict[int, list[int]] = {}
    for layer, head in chosen:
        by_layer.setdefault(layer, []).append(head)
    return by_layer


def final_vectors(lm: LoadedModel, resid: Tensor, tt: TaskTensors, k: int = 1) -> Float[Tensor, "rows score d_model"]:
    """Final-norm outputs at the scored positions (targets, then the answer) of ``k`` stacked task copies."""
    positions = _repeat(_score_positions(tt), k)
    assert positions is not None
    picked = resid.gather(1, positions.to(resid.device)[..., None].expand(-1, -1, resid.shape[-1]))
    return lm.final_norm(picked)


def _streamed_vocab_stats(
    lm: LoadedModel, vectors: Float[Tensor, "n d_model"], weights: Tensor | None, weight_index: Tensor | None,
    wanted: Tensor,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """``logsumexp`` and ``argmax`` of every vector's logits, and ``Σ_v w[v]·logit[v]`` for weighted rows.

    The vocabulary is processed in column chunks, so ``W_U`` is read once for all vectors (on CPU a small
    unembedding is bound by reading the matrix, not by arithmetic) and no ``[n, vocab]`` tensor exists.
    ``weights`` ``[m, vocab]`` are the clean answer distributions; ``weight_index[i]`` picks the row of
    ``weights`` for vector ``i`` (−1: none). ``wanted`` ``[n, j]`` lists token ids whose logits are returned
    (−1: none), read from the same matrix product as the log-sum-exp.
    """
    w_u, b_u = lm.W_U, lm.b_U
    n, vocab = vectors.shape[0], int(w_u.shape[1])
    chunk = max(1024, LOGIT_BUDGET_BYTES // max(1, n * vectors.element_size()))
    running_max = torch.full((n,), -float("inf"), dtype=vectors.dtype, device=vectors.device)
    running_sum = torch.zeros(n, dtype=torch.float64, device=vectors.device)
    best = torch.full((n,), -float("inf"), dtype=vectors.dtype, device=vectors.device)
    best_index = torch.zeros(n, dtype=torch.long, device=vectors.device)
    weighted = torch.zeros(n, dtype=torch.float64, device=vectors.device) if weights is not None else None
    has_weight = None if weight_index is None else (weight_index >= 0)
    wanted = wanted.to(vectors.device)
    picked = torch.zeros(wanted.shape, dtype=vectors.dtype, device=vectors.device)
    for start in range(0, vocab, chunk):
        stop = min(vocab, start + chunk)
        logits = lm.softcap(vectors @ w_u[:, start:stop] + b_u[start:stop])
        inside = (wanted >= start) & (wanted < stop)
        if bool(inside.any()):
            local = (wanted - start).clamp(0, stop - start - 1)
            picked = torch.where(inside, logits.gather(1, local), picked)
        chunk_max, chunk_arg = logits.max(dim=-1)
        better = chunk_max > best
        best = torch.where(better, chunk_max, best)
        best_index = torch.where(better, chunk_arg + start, best_index)
        new_max = torch.maximum(running_max, chunk_max)
        running_sum = running_sum * torch.exp((running_max - new_max).double()) + torch.exp(
            logits - new_max[:, None]).sum(-1).double()
        running_max = new_max
        if weights is not None and weighted is not None and has_weight is not None and weight_index is not None:
            rows = has_weight.nonzero()[:, 0]
            w = weights[weight_index[rows], start:stop].double()
            weighted[rows] += (w * logits[rows].double()).sum(-1)
        del logits
    lse = running_max.double() + running_sum.log()
    return lse, best_index, weighted, picked


def rows_from_vectors(
    lm: LoadedModel,
    vectors: Float[Tensor, "rows score d_model"],
    tt: TaskTensors,
    metrics: Sequence[str],
    clean_probs: Tensor | None,
) -> dict[str, Tensor]:
    """Per-row metric ingredients (as :func:`rows_from_logits`) from final-norm outputs, streaming ``W_U``.

    Row ``r`` is task example ``r mod B``; ``clean_probs`` ``[B, vocab]`` is needed for the KL.
    """
    rows, width, d_model = vectors.shape
    batch = len(tt.batch)
    example = torch.arange(rows) % batch
    out: dict[str, Tensor] = {}
    flat = vectors.reshape(rows * width, d_model)
    if set(metrics) == {"logit_diff"} and tt.has_answers:  # two columns of W_U suffice
        assert tt.correct is not None and tt.incorrect is not None
        last = vectors[:, -1]
        diff = lm.logits_for(last, tt.correct[example]) - lm.logits_for(last, tt.incorrect[example])
        return {"logit_diff": diff.double()}
    # Tokens whose logits are needed: the target at target columns; correct and incorrect at the answer.
    wanted = torch.full((rows, width, 2), -1, dtype=torch.long)
    wanted[:, :-1, 0] = torch.where(tt.target_mask[example], tt.target_tokens[example], -1)
    if tt.has_answers:
        assert tt.correct is not None and tt.incorrect is not None
        wanted[:, -1, 0], wanted[:, -1, 1] = tt.correct[example], tt.incorrect[example]
    weight_index = None
    if "kl" in metrics and clean_probs is not None:
        weight_index = torch.full((rows, width), -1, dtype=torch.long)
        weight_index[:, -1] = example
        weight_index = weight_index.reshape(-1).to(flat.device)
    lse, argmax, weighted, picked = _streamed_vocab_stats(
        lm, flat, clean_probs if weight_index is not None else None, weight_index, wanted.reshape(-1, 2))
    lse, argmax, picked = lse.reshape(rows, width), argmax.reshape(rows, width), picked.reshape(rows, width, 2)
    weighted = None if weighted is None else weighted.reshape(rows, width)
    if "loss" in metrics:
        mask = tt.target_mask[example].to(flat.device)
        out["loss_sum"] = ((lse[:, :-1] - picked[:, :-1, 0].double()) * mask).sum(1)
        out["n_targets"] = mask.sum(1).double()
    if tt.has_answers:
        assert tt.correct is not None
        correct = tt.correct[example]
        if "logit_diff" in metrics:
            out["logit_diff"] = (picked[:, -1, 0] - picked[:, -1, 1]).double()
        if "accuracy" in metrics:
            out["accuracy"] = (argmax[:, -1] == correct.to(argmax.device)).double()
        if "kl" in metrics:
            assert weighted is not None and clean_probs is not None
            probs = clean_probs[example.to(clean_probs.device)].double()
            neg_entropy = (probs * torch.log(probs.clamp(min=torch.finfo(torch.float64).tiny))).sum(-1)
            out["kl"] = neg_entropy - weighted[:, -1] + lse[:, -1]
    return out


def clean_pass(
    lm: LoadedModel, tt: TaskTensors, metrics: Sequence[str], layers: Sequence[int] = ()
) -> tuple[dict[str, float], Tensor | None, dict[int, Tensor]]:
    """Clean metrics, the clean answer distributions (for KL) and ``hook_resid_pre`` of ``layers``."""
    cache: dict[int, Tensor] = {}

    def keep(layer: int) -> Any:
        def hook(resid: Tensor, hook: Any) -> None:
            cache[layer] = resid.detach()

        return hook

    hooks = [(f"blocks.{layer}.hook_resid_pre", keep(layer)) for layer in layers]
    final = lm.forward(tt.batch, fwd_hooks=hooks, stop_at_layer=lm.n_layers)
    vectors = final_vectors(lm, final, tt)
    clean_probs = None
    if "kl" in metrics:
        clean_probs = torch.softmax(_unembed(lm, vectors[:, -1]).double(), dim=-1)
    rows = rows_from_vectors(lm, vectors, tt, [m for m in metrics if m != "kl"], None)
    clean = {metric: float(value[0]) for metric, value in aggregate(rows, 1).items() if metric in metrics}
    if "kl" in metrics:
        clean["kl"] = 0.0
    return clean, clean_probs, cache


def ablation_scan(
    lm: LoadedModel,
    task: Task | TaskTensors,
    *,
    mode: str = "zero",
    eps: float | None = None,
    reference: HeadReference | None = None,
    metrics: Sequence[str] = METRICS,
    heads: Sequence[Head] | None = None,
    max_rows: int = 64,
) -> ScanResult:
    """Every head (or ``heads``) ablated one at a time, reusing the clean run; see the module docstring.

    Args:
        task: a :class:`~interp.tasks.Task` (or its tensors).
        mode, eps, reference: the ablation (:func:`interp.interventions.ablate_heads`).
        metrics: any of :data:`METRICS`.
        max_rows: stacked rows per pass (copies × batch); bounds memory.

    Examples:
        >>> import interp
        >>> from interp.tasks import induction_task
        >>> lm = interp.load_model("tiny-llama")
        >>> scan = ablation_scan(lm, induction_task(lm, n_sequences=2, half_length=5), mode="uniform",
        ...                      metrics=("loss", "kl"), heads=[(1, 0), (1, 3)])
        >>> bool(scan.values["kl"][1, 0] >= 0)
        True
    """
    started = time.perf_counter()
    tt = task.tensors(lm) if isinstance(task, Task) else task
    chosen = check_metrics(tt, metrics)
    by_layer = _heads_to_scan(lm, heads)
    if mode in ("mean", "resample") and reference is None:
        raise OptionError(f"mode {mode!r} needs a reference (head_means or cache_head_outputs)")
    batch_size = len(tt.batch)
    values = {m: torch.full((lm.n_layers, lm.n_heads), float("nan"), dtype=torch.float64) for m in chosen}
    passes = 1
    pending: list[tuple[list[Head], Tensor]] = []  # final-norm outputs of passes not yet unembedded
    pending_bytes = 0

    def flush() -> None:
        """Unembed every pending pass at once (one read of W_U) and record the per-head values."""
        nonlocal pending_bytes
        if not pending:
            return
        vectors = torch.cat([v for _, v in pending])
        rows = rows_from_vectors(lm, vectors, tt, chosen, clean_probs)
        order = [head for group, _ in pending for head in group]
        per_copy = aggregate(rows, len(order))
        for metric in chosen:
            for i, (layer, head) in enumerate(order):
                values[metric][layer, head] = float(per_copy[metric][i])
        pending.clear()
        pending_bytes = 0

    with torch.inference_mode():
        clean, clean_probs, cache = clean_pass(lm, tt, chosen, layers=sorted(by_layer))
        mask = tt.batch.attention_mask.to(lm.device)
        per_pass = max(1, max_rows // batch_size)
        for layer in sorted(by_layer):
            layer_heads = by_layer[layer]
            for start in range(0, len(layer_heads), per_pass):
                group = layer_heads[start : start + per_pass]
                k = len(group)
                selection = torch.zeros(k * batch_size, lm.n_heads)
                for i, head in enumerate(group):
                    selection[i * batch_size : (i + 1) * batch_size, head] = 1.0
                hooks = layer_edit_hooks(lm, layer, selection, mode, eps=eps, reference=reference)
                resid = cache[layer].repeat(k, 1, 1)
                final = lm.forward(residual=resid, start_at_layer=layer, stop_at_layer=lm.n_layers,
                                   attention_mask=mask.repeat(k, 1), fwd_hooks=hooks)
                vectors = final_vectors(lm, final, tt, k)
                pending.append(([(layer, head) for head in group], vectors))
                pending_bytes += vectors.numel() * vectors.element_size()
                passes += 1
                del final, resid
                if pending_bytes > PENDING_BUDGET_BYTES:
                    flush()
        flush()
    return ScanResult(values=values, clean=clean, mode=mode, eps=eps, seconds=time.perf_counter() - started,
                      forward_passes=passes, params=dict(max_rows=max_rows, metrics=list(chosen)))


def naive_ablation_scan(
    lm: LoadedModel,
    task: Task | TaskTensors,
    *,
    mode: str = "zero",
    eps: float | None = None,
    reference: HeadReference | None = None,
    metrics: Sequence[str] = METRICS,
    heads: Sequence[Head] | None = None,
) -> ScanResult:
    """The peer: one full forward pass per head with the ablation hooks, metrics from the full logits.

    The metrics are reduced in float64 (the forward passes run in the model's dtype), so that the
    comparison with the fast scan is not limited by float32 error in a 262k-way log-softmax.

    Kept as the reference the fast scan is checked against (tests, benchmark).
    """
    started = time.perf_counter()
    tt = task.tensors(lm) if isinstance(task, Task) else task
    chosen = check_metrics(tt, metrics)
    by_layer = _heads_to_scan(lm, heads)
    positions = _score_positions(tt).to(lm.device)
    values = {m: torch.full((lm.n_layers, lm.n_heads), float("nan"), dtype=torch.float64) for m in chosen}

    def scored_logits(logits: Tensor) -> Tensor:
        return logits.gather(1, positions[..., None].expand(-1, -1, logits.shape[-1]))

    with torch.inference_mode():
        clean_logits = scored_logits(lm.forward(tt.batch))
        clean_logprobs = torch.log_softmax(clean_logits[:, -1].double(), dim=-1)
        clean_rows = rows_from_logits(clean_logits, tt, chosen, clean_logprobs)
        clean = {m: float(v[0]) for m, v in aggregate(clean_rows, 1).items()}
        passes = 1
        for layer, layer_heads in sorted(by_layer.items()):
            for head in layer_heads:
                logits = lm.forward(tt.batch, fwd_hooks=ablation_hooks(lm, [(layer, head)], mode, eps=eps,
                                                                       reference=reference))
                per_copy = aggregate(rows_from_logits(scored_logits(logits), tt, chosen, clean_logprobs), 1)
                for metric in chosen:
                    values[metric][layer, head] = float(per_copy[metric][0])
                passes += 1
                del logits
    return ScanResult(values=values, clean=clean, mode=mode, eps=eps, seconds=time.perf_counter() - started,
                      forward_passes=passes)
