"""Head scores beyond single ablation: gradients, attribution patching, DLA, induction patterns, AttentionInfluence.

* **Gradient (Taylor) importance** (Michel, Levy & Neubig 2019, §4.1):
  ``I_h = E_x |∂L(x)/∂ξ_h|`` for a gate ``ξ_h`` multiplying head ``h``'s output ``z`` (equal to
  ``|Σ_pos z·∂L/∂z|`` per example, then averaged), normalised per layer by the ℓ2 norm over that layer's
  heads. One forward and one backward pass: the gates are per example (``[batch, head]``) so that one
  backward of ``Σ_x L(x)`` yields every ``∂L(x)/∂ξ_h``.
* **Attribution patching** (Nanda 2023; Syed et al. 2023): the first-order estimate of patching head
  ``h``'s output from a reference (a corrupted run, a mean, or zero) into the clean run,
  ``Σ_{pos,d} (z_ref − z)·∂M/∂z`` — all heads from one forward and one backward pass; the exact
  counterpart is an ablation scan in ``resample``/``mean``/``zero`` mode.
* **Direct logit attribution** (Lieberum et al. 2023; Yu, Merullo & Pavlick 2023): each head's
  output at the answer position, through the frozen final-norm scale (and the frozen post-attention
  norm scale where a block has one, as in Gemma 3), projected on ``W_U[:, correct] − W_U[:, incorrect]``.
  With the embeddings, the attention biases, the MLP outputs and the unembedding bias it sums exactly to
  the logit difference (:class:`LogitAttribution.residual_error`).
* **Induction and previous-token scores** (Olsson et al. 2022): mean attention from a repeated token to
  the token after its earlier occurrence, and from every token to the one before it.
* **AttentionInfluence** (Hua et al. 2025, "AttentionInfluence"): per document, the mean token loss with a set of
  heads masked minus the base loss, absolute and relative to the base.

Examples:
    >>> import interp
    >>> from interp.tasks import induction_task
    >>> from interp.attribution.head_scores import gradient_importance
    >>> lm = interp.load_model("tiny-gpt2")
    >>> scores = gradient_importance(lm, induction_task(lm, n_sequences=2, half_length=5))
    >>> tuple(scores.normalized.shape)
    (2, 4)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import OptionError
from interp.interventions import Head, HeadReference, ablate_heads, check_heads
from interp.models import LoadedModel
from interp.probes import tokenize_prompts
from interp.tasks import Task, TaskTensors, induction_offsets

from .ablation_scan import check_metrics, final_vectors, rows_from_resid, rows_from_vectors


def _tensors(lm: LoadedModel, task: Task | TaskTensors) -> TaskTensors:
    return task.tensors(lm) if isinstance(task, Task) else task


def _gated_forward(lm: LoadedModel, tt: TaskTensors, edit: Any) -> Tensor:
    """Final residual with ``edit(layer, z)`` applied at every ``hook_z`` (gradients enabled)."""
    def make(layer: int) -> Any:
        def hook(z: Tensor, hook: Any) -> Tensor:
            return edit(layer, z)

        return hook

    hooks = [(f"blocks.{layer}.attn.hook_z", make(layer)) for layer in range(lm.n_layers)]
    return lm.forward(tt.batch, fwd_hooks=hooks, stop_at_layer=lm.n_layers)


def per_example_metric(lm: LoadedModel, final: Tensor, tt: TaskTensors, metric: str) -> Tensor:
    """Per-example metric (``loss`` = mean target cross-entropy of each example; ``logit_diff``)."""
    rows, _ = rows_from_resid(lm, final, tt, (metric,), None)
    if metric == "loss":
        return rows["loss_sum"] / rows["n_targets"].clamp(min=1)
    return rows[metric]


# ----------------------------------------------------------------------------------------------------
# Gradient importance
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GradientImportance:
    """Michel et al.'s ``I_h``: ``raw`` = mean_x |∂L(x)/∂ξ_h|, ``normalized`` = raw / ‖raw[layer]‖₂."""

    raw: Float[Tensor, "layer head"]
    normalized: Float[Tensor, "layer head"]
    per_example: Float[Tensor, "batch layer head"]  # signed ∂L(x)/∂ξ_h


def gradient_importance(lm: LoadedModel, task: Task | TaskTensors) -> GradientImportance:
    """Gradient (Taylor) head importance of the task loss, with per-layer ℓ2 normalisation.

    Examples:
        >>> import interp
        >>> from interp.tasks import induction_task
        >>> lm = interp.load_model("tiny-llama")
        >>> g = gradient_importance(lm, induction_task(lm, n_sequences=2, half_length=5))
        >>> bool(torch.allclose(g.normalized.norm(dim=1), torch.ones(2, dtype=torch.float64)))
        True
    """
    tt = _tensors(lm, task)
    check_metrics(tt, ("loss",))
    dtype = lm.dtype
    gates = torch.ones(lm.n_layers, len(tt.batch), lm.n_heads, dtype=dtype, device=lm.device, requires_grad=True)

    def edit(layer: int, z: Tensor) -> Tensor:
        return z * gates[layer][:, None, :, None]

    with torch.enable_grad():
        final = _gated_forward(lm, tt, edit)
        losses = per_example_metric(lm, final, tt, "loss")
        (grad,) = torch.autograd.grad(losses.sum(), gates)
    per_example = grad.detach().permute(1, 0, 2).double()  # [batch, layer, head]
    raw = per_example.abs().mean(dim=0)
    norms = raw.norm(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float64).tiny)
    return GradientImportance(raw=raw, normalized=raw / norms, per_example=per_example)


# ----------------------------------------------------------------------------------------------------
# Attribution patching
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttributionPatching:
    """First-order estimates ``Σ (z_ref − z)·∂M/∂z`` of patching each head, and the clean metric."""

    estimate: Float[Tensor, "layer head"]
    metric: str
    clean_value: float


def attribution_patching(
    lm: LoadedModel,
    task: Task | TaskTensors,
    *,
    reference: HeadReference | None = None,
    metric: str = "logit_diff",
) -> AttributionPatching:
    """Estimate the effect on ``metric`` of replacing each head's ``z`` by ``reference`` (zeros if None).

    ``reference`` is a per-example cache of a corrupted run (:func:`interp.interventions.cache_head_outputs`)
    or a mean (:func:`interp.interventions.head_means`). One forward and one backward pass.

    Examples:
        >>> import interp
        >>> from interp.tasks import induction_task
        >>> from interp.interventions import cache_head_outputs
        >>> lm = interp.load_model("tiny-gpt2")
        >>> task = induction_task(lm, n_sequences=2, half_length=5)
        >>> ap = attribution_patching(lm, task, reference=cache_head_outputs(lm, task.tensors(lm).corrupted))
        >>> tuple(ap.estimate.shape)
        (2, 4)
    """
    tt = _tensors(lm, task)
    check_metrics(tt, (metric,))
    if metric not in ("loss", "logit_diff"):
        raise OptionError(f"attribution patching supports the loss or logit_diff metric, got {metric!r}")
    deltas: dict[int, Tensor] = {}
    clean_z: dict[int, Tensor] = {}

    def edit(layer: int, z: Tensor) -> Tensor:
        delta = torch.zeros_like(z, requires_grad=True)
        deltas[layer], clean_z[layer] = delta, z.detach()
        return z + delta

    with torch.enable_grad():
        final = _gated_forward(lm, tt, edit)
        value = per_example_metric(lm, final, tt, metric)
        if metric == "loss":  # token-weighted like the scans
            rows, _ = rows_from_resid(lm, final, tt, ("loss",), None)
            total = rows["loss_sum"].sum() / rows["n_targets"].sum().clamp(min=1)
        else:
            total = value.mean()
        layers = sorted(deltas)
        grads = torch.autograd.grad(total, [deltas[layer] for layer in layers])
    estimate = torch.zeros(lm.n_layers, lm.n_heads, dtype=torch.float64)
    mask = tt.batch.attention_mask.to(lm.device)[:, :, None, None]
    for layer, grad in zip(layers, grads, strict=True):
        z = clean_z[layer]
        target = torch.zeros_like(z) if reference is None else reference.for_layer(layer, z.shape[0], z.shape[1]).to(z)
        estimate[layer] = ((target - z) * grad * mask).double().sum(dim=(0, 1, 3)).cpu()
    return AttributionPatching(estimate=estimate, metric=metric, clean_value=float(total.detach()))


# ----------------------------------------------------------------------------------------------------
# Direct logit attribution
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LogitAttribution:
    """Per-example direct logit attribution of ``logit(correct) − logit(incorrect)`` at the answer position.

    ``heads + attn_bias.sum(1) + mlp.sum(1) + embed + constant`` equals ``logit_diff`` up to float error
    (``residual_error``).
    """

    heads: Float[Tensor, "batch layer head"]
    attn_bias: Float[Tensor, "batch layer"]
    mlp: Float[Tensor, "batch layer"]
    embed: Float[Tensor, " batch"]
    constant: Float[Tensor, " batch"]  # final-norm bias and unembedding bias terms
    logit_diff: Float[Tensor, " batch"]  # from the model's own logits

    @property
    def mean_heads(self) -> Float[Tensor, "layer head"]:
        return self.heads.mean(dim=0)

    @property
    def total(self) -> Float[Tensor, " batch"]:
        return self.heads.sum(dim=(1, 2)) + self.attn_bias.sum(1) + self.mlp.sum(1) + self.embed + self.constant

    @property
    def residual_error(self) -> float:
        return float((self.total - self.logit_diff).abs().max())


def direct_logit_attribution(lm: LoadedModel, task: Task | TaskTensors) -> LogitAttribution:
    """Per-head DLA of the logit difference, with every other component so the parts sum to the whole.

    Examples:
        >>> import interp
        >>> from interp.tasks import induction_task
        >>> lm = interp.load_model("tiny-gpt2")
        >>> dla = direct_logit_attribution(lm, induction_task(lm, n_sequences=2, half_length=5))
        >>> dla.residual_error < 1e-4
        True
    """
    tt = _tensors(lm, task)
    check_metrics(tt, ("logit_diff",))
    final_norm = lm.final_norm_spec()
    if final_norm is None:
        raise OptionError("direct logit attribution needs a model with a final norm")
    assert tt.answer_positions is not None and tt.correct is not None and tt.incorrect is not None
    names = ["blocks.0.hook_resid_pre", "ln_final.hook_scale"]
    for layer in range(lm.n_layers):
        names += [f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.hook_mlp_out"]
        if lm.post_attn_norm_spec(layer) is not None:
            names.append(f"blocks.{layer}.ln1_post.hook_scale")
    cache: dict[str, Tensor] = {}

    def keep(name: str) -> Any:
        def hook(x: Tensor, hook: Any) -> None:
            cache[name] = x.detach()

        return hook

    with torch.inference_mode():
        # The model's own logits before any output soft-cap (the cap is not linear; DLA explains what is).
        names.append("unembed.hook_out")
        lm.forward(tt.batch, fwd_hooks=[(n, keep(n)) for n in names])
        rows_b = torch.arange(len(tt.batch), device=lm.device)
        answer = tt.answer_positions.to(lm.device)
        logits = cache["unembed.hook_out"][rows_b, answer]
        logit_diff = logits[rows_b, tt.correct] - logits[rows_b, tt.incorrect]

        def at_answer(name: str) -> Tensor:
            return cache[name][rows_b, answer]

        final_scale = at_answer("ln_final.hook_scale")  # [B, 1]
        w_u, b_u = lm.W_U, lm.b_U
        direction = (w_u[:, tt.correct].T - w_u[:, tt.incorrect].T)  # [B, d_model]

        def project(x: Tensor) -> Tensor:
            """Logit-difference contribution of residual components ``x [B, ..., d_model]``."""
            extra = x.dim() - 2
            scale = final_scale.reshape(final_scale.shape[0], *([1] * extra), 1)
            linear = final_norm.linear(x, scale)
            return (linear * direction.reshape(direction.shape[0], *([1] * extra), -1)).sum(-1)

        constant = (final_norm.bias_or_zero(direction) * direction).sum(-1)
        constant = constant + b_u[tt.correct] - b_u[tt.incorrect]
        heads = torch.zeros(len(tt.batch), lm.n_layers, lm.n_heads, dtype=torch.float64)
        attn_bias = torch.zeros(len(tt.batch), lm.n_layers, dtype=torch.float64)
        mlp = torch.zeros(len(tt.batch), lm.n_layers, dtype=torch.float64)
        for layer in range(lm.n_layers):
            weights = lm.head_weights(layer)
            z = at_answer(f"blocks.{layer}.attn.hook_z")  # [B, H, d_head]
            result = torch.einsum("bhd,hdm->bhm", z, weights.W_O.to(z))  # [B, H, d_model]
            bias = weights.b_O.to(z)[None].expand(len(tt.batch), -1)
            post = lm.post_attn_norm_spec(layer)
            if post is not None:
                post_scale = at_answer(f"blocks.{layer}.ln1_post.hook_scale")  # [B, 1]
                result = post.linear(result, post_scale[:, None])
                bias = post.linear(bias, post_scale) + post.bias_or_zero(bias)
            heads[:, layer] = project(result).double().cpu()
            attn_bias[:, layer] = project(bias).double().cpu()
            mlp[:, layer] = project(at_answer(f"blocks.{layer}.hook_mlp_out")).double().cpu()
        embed = project(at_answer("blocks.0.hook_resid_pre")).double().cpu()
    return LogitAttribution(heads=heads, attn_bias=attn_bias, mlp=mlp, embed=embed,
                            constant=constant.double().cpu(), logit_diff=logit_diff.double().cpu())


# ----------------------------------------------------------------------------------------------------
# Induction and previous-token scores
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PatternScores:
    """Mean attention to the induction target and to the previous token, per head."""

    induction: Float[Tensor, "layer head"]
    previous_token: Float[Tensor, "layer head"]


def induction_pattern_scores(lm: LoadedModel, task: Task) -> PatternScores:
    """Induction score: attention from the second copy's ``R[k]`` to ``R[k+1]`` of the first copy.

    Previous-token score: attention from each position ``p ≥ 1`` of the first copy to ``p − 1`` (the first
    copy, so that induction does not mix in).

    Examples:
        >>> import interp
        >>> from interp.tasks import induction_task
        >>> lm = interp.load_model("tiny-gpt2")
        >>> s = induction_pattern_scores(lm, induction_task(lm, n_sequences=2, half_length=5))
        >>> bool(((s.induction >= 0) & (s.induction <= 1)).all())
        True
    """
    first, half = induction_offsets(task)
    tt = task.tensors(lm)
    induction = torch.zeros(lm.n_layers, lm.n_heads, dtype=torch.float64)
    previous = torch.zeros_like(induction)
    queries = torch.arange(first, first + half - 1)
    keys = queries - half + 1  # the token after the earlier occurrence
    prev_queries = torch.arange(2, first)  # first copy, after its first token

    def hook(pattern: Tensor, hook: Any) -> None:
        layer = int(hook.name.split(".")[1])
        p = pattern.detach().double()
        induction[layer] = p[:, :, queries, keys].mean(dim=(0, 2)).cpu()
        previous[layer] = p[:, :, prev_queries, prev_queries - 1].mean(dim=(0, 2)).cpu()

    with torch.inference_mode():
        lm.forward(tt.batch, fwd_hooks=[(lambda name: name.endswith("attn.hook_pattern"), hook)], return_type=None)
    return PatternScores(induction=induction, previous_token=previous)


# ----------------------------------------------------------------------------------------------------
# AttentionInfluence
# ----------------------------------------------------------------------------------------------------
def head_masking_loss_delta(
    lm: LoadedModel,
    texts: Sequence[str],
    heads: Sequence[Head],
    *,
    mode: str = "zero",
    eps: float | None = None,
    reference: HeadReference | None = None,
    max_tokens: int = 64,
    batch_size: int = 8,
) -> pd.DataFrame:
    """AttentionInfluence document scores: per text, the mean token loss with ``heads`` masked vs the base.

    Returns one row per text: ``document, loss_base, loss_masked, delta`` (masked − base) and
    ``relative`` (delta / base), sorted as given. Rank documents by ``relative`` (Hua et al.).

    Examples:
        >>> import interp
        >>> lm = interp.load_model("tiny-gpt2")
        >>> frame = head_masking_loss_delta(lm, ["one text here", "and another"], [(1, 0)])
        >>> list(frame.columns)[:4]
        ['document', 'loss_base', 'loss_masked', 'delta']
    """
    heads = check_heads(lm, heads)
    if not heads:
        raise OptionError(f"no heads to mask: give (layer, head) pairs in layers 0..{lm.n_layers - 1}, "
                          f"heads 0..{lm.n_heads - 1}")
    rows = tokenize_prompts(lm, list(texts), max_tokens=max_tokens, min_tokens=2)
    base_losses: list[float] = []
    masked_losses: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            batch = lm.pad(rows[start : start + batch_size])
            base_losses += _document_losses(lm, batch)
            with ablate_heads(lm, heads, mode, eps=eps, reference=reference):
                masked_losses += _document_losses(lm, batch)
    base = torch.tensor(base_losses, dtype=torch.float64)
    masked = torch.tensor(masked_losses, dtype=torch.float64)
    return pd.DataFrame({
        "document": range(len(rows)), "loss_base": base.numpy(), "loss_masked": masked.numpy(),
        "delta": (masked - base).numpy(), "relative": ((masked - base) / base).numpy(),
        "tokens": [len(r) for r in rows], "text": [str(t)[:80] for t in texts],
    })


def _document_losses(lm: LoadedModel, batch: Any) -> list[float]:
    """Mean next-token loss per row, streaming ``W_U`` (no ``[batch, pos, vocab]`` tensor is built)."""
    final = lm.forward(batch, stop_at_layer=lm.n_layers)
    width = batch.tokens.shape[1] - 1
    positions = torch.arange(width).expand(len(batch), -1)
    mask = batch.attention_mask[:, 1:].bool()
    tt = TaskTensors(batch=batch, corrupted=None, target_positions=positions, target_tokens=batch.tokens[:, 1:],
                     target_mask=mask, answer_positions=None, correct=None, incorrect=None)
    rows = rows_from_vectors(lm, final_vectors(lm, final, tt), tt, ("loss",), None)
    return (rows["loss_sum"] / rows["n_targets"].clamp(min=1)).tolist()
