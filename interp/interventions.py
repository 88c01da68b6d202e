"""Head interventions: ablate, scale, patch and edit attention heads with TransformerLens hooks.

Every intervention is a list of ``(hook_name, hook_fn)`` pairs, or a context manager that installs such a
list through the backend's :meth:`~interp.backends.Backend.hooks` and removes exactly those hooks on exit
(also on exceptions). Nothing
is ever mutated in place: weights stay as loaded. Contexts nest and compose (the hooks of an inner
context run after those of an outer one on the same hook point).

Ablation vocabulary (Michel, Levy & Neubig 2019; Yu, Merullo & Pavlick 2023; Zhou et al., ICLR 2025;
docs/concepts/interventions.md), for a head ``(layer, head)``:

* ``zero``: the head's output ``z`` (``blocks.l.attn.hook_z[:, :, h]``) is set to 0 (Michel et al. 2019).
* ``mean``: ``z`` is replaced by its mean over a reference prompt set (:func:`head_means`, pooled over
  positions or per position).
* ``resample``: ``z`` is replaced by the head's ``z`` from another run (:func:`cache_head_outputs` on
  corrupted prompts of the same length): activation patching, also available as :func:`patch_heads`.
* ``scale_output`` (ε): ``z ← ε·z``, the Safety-Heads "scaling contribution"; the pattern is unchanged.
* ``scale_value`` (α): the head's value vectors are scaled by α (Yu, Merullo & Pavlick 2023). Because
  ``z = A·v`` is linear in ``v`` and the pattern does not depend on ``v``, this is applied exactly as
  ``z ← α·z``; with grouped-query attention it is the only way to scale one query head's values without
  touching the other query heads that share its key/value head.
* ``scale_query`` (ε): the head's query is scaled by ε, so its scores go to 0 and its pattern collapses
  to the causal-uniform one (Safety Heads' "undifferentiated attention"). Only the *query* head is
  scaled, never a shared key/value head. The hook is ``hook_rot_q`` for rotary models (after any q-norm;
  RoPE is linear so this equals scaling before RoPE — but scaling *before* a q-norm, as on Gemma 3,
  would be undone by the norm), ``hook_q`` otherwise, and the attention scores for non-rotary models
  with a q-norm.
* ``uniform``: the head's scores are set to 0 on every key it may attend to, so its pattern is uniform
  over those keys (``1/(i+1)`` for a causal head on an unpadded prompt): the ε → 0 limit of
  ``scale_query``.

General edits: :func:`head_z_edit` (a function of one head's ``z``) and :func:`head_output_edit` (a
function of one head's d_model output ``z·W_O``, e.g. :func:`project_out` of some directions) return
hook pairs; install them with :func:`apply_hooks` (the backend switches per-head ``hook_result`` on only
while it is needed).

Batched scans use :func:`layer_edit_hooks`, whose selection mask may differ per batch row, so several
heads' ablations run in one forward pass on stacked copies of a batch.

Examples:
    >>> import interp, torch
    >>> from interp.interventions import ablate_heads
    >>> lm = interp.load_model("tiny-gpt2")
    >>> batch = lm.tokenize(["The cat sat on the mat."])
    >>> with ablate_heads(lm, [(1, 2)], mode="scale_query", eps=1e-6):
    ...     logits = lm.forward(batch)
    >>> tuple(logits.shape[:2])
    (1, 24)

Generation works inside the contexts too (``zero``, pooled ``mean``, the scale modes and ``uniform`` are
position-free; per-position and per-example references need the same prompt length).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import OptionError, PromptError
from interp.models import LoadedModel, TokenBatch

Head = tuple[int, int]
HookPair = tuple[str, Callable[..., Any]]
Mode = Literal["zero", "mean", "resample", "scale_output", "scale_value", "scale_query", "uniform"]

#: Every ablation mode :func:`ablate_heads` accepts.
ABLATION_MODES: tuple[str, ...] = ("zero", "mean", "resample", "scale_output", "scale_value", "scale_query", "uniform")
#: Default ε for the two Safety-Heads operators (the Sahara default); ``scale_value`` needs an explicit α.
DEFAULT_EPS: dict[str, float] = {"scale_query": 1e-5, "scale_output": 1e-5}
_Z_MODES = ("zero", "mean", "resample", "scale_output", "scale_value")


# ----------------------------------------------------------------------------------------------------
# Checking input
# ----------------------------------------------------------------------------------------------------
def check_heads(lm: LoadedModel, heads: Sequence[Head] | Head) -> list[Head]:
    """Validate ``(layer, head)`` pairs against the model; returns them as a list of int pairs.

    Raises :class:`~interp.errors.OptionError` (one line, naming the accepted range) for an index out of
    range or something that is not a pair.

    Examples:
        >>> import interp
        >>> check_heads(interp.load_model("tiny-gpt2"), [(1, 3)])
        [(1, 3)]
    """
    n_layers, n_heads = lm.n_layers, lm.n_heads
    accepted = f"layers 0..{n_layers - 1}, heads 0..{n_heads - 1}"
    single = isinstance(heads, tuple) and len(heads) == 2 and all(isinstance(x, int) for x in heads)
    items: list[Any] = [heads] if single else list(heads)  # a single (layer, head) pair, or pairs: checked below
    out: list[Head] = []
    for item in items:
        try:
            layer, head = (int(x) for x in item)
        except (TypeError, ValueError):
            raise OptionError(f"head {item!r} is not a (layer, head) pair of integers: give pairs in {accepted}") from None
        if not 0 <= layer < n_layers:
            raise OptionError(f"layer {layer} of head {layer}.{head} is out of range for {lm.name}: {accepted}")
        if not 0 <= head < n_heads:
            raise OptionError(f"head {layer}.{head} is out of range for {lm.name}: {accepted}")
        out.append((layer, head))
    return out


def _check_mode(mode: str, eps: float | None) -> float:
    if mode not in ABLATION_MODES:
        raise OptionError(f"unknown ablation mode {mode!r}: choose one of {', '.join(ABLATION_MODES)}")
    if eps is None:
        if mode == "scale_value":
            raise OptionError("mode 'scale_value' needs a scale factor: pass eps=alpha (e.g. 0.0, 0.5 or 2.0)")
        return DEFAULT_EPS.get(mode, 0.0)
    value = float(eps)
    if value != value or value in (float("inf"), float("-inf")):
        raise OptionError(f"eps must be a finite number, got {eps}")
    return value


# ----------------------------------------------------------------------------------------------------
# Reference activations for mean and resample ablation
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeadReference:
    """Replacement values for heads' ``hook_z`` outputs, per layer.

    Attributes:
        z: layer → tensor of shape ``[head, d_head]`` (``kind="pooled"``), ``[pos, head, d_head]``
            (``"per_position"``) or ``[batch, pos, head, d_head]`` (``"per_example"``).
        kind: how the tensors are indexed.
        count: prompts that went into a mean (per-example references: the batch size).
    """

    z: dict[int, Tensor]
    kind: Literal["pooled", "per_position", "per_example"]
    count: int = 0

    def for_layer(self, layer: int, rows: int, n_pos: int) -> Float[Tensor, "rows pos head d_head"]:
        """The replacement for one layer, broadcastable to an activation of ``rows × n_pos``.

        A per-example reference of batch ``B`` serves ``rows = k·B`` (``k`` stacked copies of the batch).
        """
        if layer not in self.z:
            raise OptionError(f"the reference holds layers {sorted(self.z)}, not layer {layer}: rebuild it for that layer")
        value = self.z[layer]
        if self.kind == "pooled":
            return value[None, None]
        if self.kind == "per_position":
            if value.shape[0] < n_pos:
                raise PromptError(
                    f"the per-position mean covers {value.shape[0]} positions but the prompt has {n_pos}: "
                    "use a pooled mean or a longer reference set")
            return value[None, :n_pos]
        batch = value.shape[0]
        if value.shape[1] != n_pos or rows % batch:
            raise PromptError(
                f"the resample reference has {batch} prompts × {value.shape[1]} positions but the run has "
                f"{rows} rows × {n_pos} positions: corrupted prompts must match the clean ones in count and length")
        return value if rows == batch else value.repeat(rows // batch, 1, 1, 1)


def _as_batch(lm: LoadedModel, prompts: Sequence[str] | TokenBatch, max_tokens: int | None) -> TokenBatch:
    if isinstance(prompts, TokenBatch):
        return prompts
    if len(prompts) == 0:
        raise PromptError("the reference prompt set is empty: give at least one prompt")
    return lm.tokenize(list(prompts), max_tokens=max_tokens)


def head_means(
    lm: LoadedModel,
    prompts: Sequence[str] | TokenBatch,
    *,
    per_position: bool = False,
    max_tokens: int | None = None,
    batch_size: int = 8,
    layers: Sequence[int] | None = None,
) -> HeadReference:
    """Mean of every head's ``z`` over the real tokens of a reference prompt set (for ``mode="mean"``).

    ``per_position=True`` keeps one mean per position (over the prompts that reach it), as in IOI-style
    mean ablation per template; otherwise the mean is pooled over positions.

    Examples:
        >>> import interp
        >>> lm = interp.load_model("tiny-gpt2")
        >>> ref = head_means(lm, ["one prompt", "another prompt"])
        >>> tuple(ref.z[0].shape)      # [head, d_head]
        (4, 16)
    """
    batch = _as_batch(lm, prompts, max_tokens)
    chosen = list(range(lm.n_layers)) if layers is None else [int(x) for x in layers]
    sums: dict[int, Tensor] = {}
    counts: dict[int, Tensor] = {}
    width = batch.tokens.shape[1]
    for start in range(0, len(batch), batch_size):
        rows = slice(start, start + batch_size)
        sub = TokenBatch(batch.tokens[rows], batch.attention_mask[rows], batch.lengths[rows])
        cached = _capture_z(lm, sub, chosen)
        for layer, z in cached.items():
            mask = sub.attention_mask.to(z.device, torch.float64)  # [b, pos], where the model's z is
            weighted = z.double() * mask[:, :, None, None]
            if per_position:
                total, count = weighted.sum(dim=0), mask.sum(dim=0)  # [pos, h, d], [pos]
            else:
                total, count = weighted.sum(dim=(0, 1)), mask.sum()
            sums[layer] = total if layer not in sums else sums[layer] + total
            counts[layer] = count if layer not in counts else counts[layer] + count
    dtype = lm.dtype
    means: dict[int, Tensor] = {}
    for layer in chosen:
        if per_position:
            means[layer] = (sums[layer] / counts[layer].clamp(min=1)[:, None, None])[:width].to(dtype)
        else:
            means[layer] = (sums[layer] / counts[layer].clamp(min=1)).to(dtype)
    return HeadReference(z=means, kind="per_position" if per_position else "pooled", count=len(batch))


def cache_head_outputs(
    lm: LoadedModel, prompts: Sequence[str] | TokenBatch, *, layers: Sequence[int] | None = None,
    max_tokens: int | None = None,
) -> HeadReference:
    """Every head's ``z`` on a (corrupted) batch, for ``mode="resample"`` or :func:`patch_heads`.

    Examples:
        >>> import interp
        >>> lm = interp.load_model("tiny-gpt2")
        >>> ref = cache_head_outputs(lm, ["The dog sat."])
        >>> ref.kind, tuple(ref.z[1].shape)
        ('per_example', (1, 13, 4, 16))
    """
    batch = _as_batch(lm, prompts, max_tokens)
    chosen = list(range(lm.n_layers)) if layers is None else [int(x) for x in layers]
    return HeadReference(z=_capture_z(lm, batch, chosen), kind="per_example", count=len(batch))


def _capture_z(lm: LoadedModel, batch: TokenBatch, layers: Sequence[int]) -> dict[int, Tensor]:
    captured: dict[int, Tensor] = {}

    def keep(layer: int) -> Callable[..., None]:
        def hook(z: Tensor, hook: Any) -> None:
            captured[layer] = z.detach().clone()

        return hook

    stop = max(layers) + 1 if layers else 1
    with torch.inference_mode():
        lm.forward(batch, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", keep(layer)) for layer in layers],
                   stop_at_layer=None if (stop >= lm.n_layers or lm.is_encoder) else stop)
    return captured


# ----------------------------------------------------------------------------------------------------
# Hooks
# ----------------------------------------------------------------------------------------------------
def query_hook_name(lm: LoadedModel, layer: int) -> str:
    """Where ``scale_query`` acts: ``hook_rot_q`` (rotary), ``hook_q``, or the scores (q-norm, no RoPE)."""
    if lm.facts.positional == "rotary":
        return f"blocks.{layer}.attn.hook_rot_q"
    if lm.facts.qk_norm:
        return f"blocks.{layer}.attn.hook_attn_scores"
    return f"blocks.{layer}.attn.hook_q"


def layer_edit_hooks(
    lm: LoadedModel,
    layer: int,
    selection: Float[Tensor, "rows head"],
    mode: str,
    *,
    eps: float | None = None,
    reference: HeadReference | None = None,
) -> list[HookPair]:
    """Hooks that apply ``mode`` to the heads of one layer selected per batch row.

    ``selection[r, h] = 1`` applies the intervention to head ``h`` in row ``r`` (``selection`` may have a
    single row, broadcast over the batch). This is the primitive behind :func:`ablate_heads` and the
    batched ablation scans, where row block ``k`` of a stacked batch ablates the ``k``-th head.
    """
    value = _check_mode(mode, eps)
    if mode in ("mean", "resample") and reference is None:
        raise OptionError(f"mode {mode!r} needs a reference: pass reference=head_means(...) or cache_head_outputs(...)")
    if mode == "mean" and reference is not None and reference.kind == "per_example":
        raise OptionError("mode 'mean' needs a mean reference (head_means), not a per-example cache")
    if selection.dim() != 2 or selection.shape[1] != lm.n_heads:
        raise OptionError(f"selection must have shape [rows, {lm.n_heads}], got {tuple(selection.shape)}")

    def mask_for(activation: Tensor, head_axis: int) -> Tensor:
        select = selection.to(device=activation.device, dtype=activation.dtype)
        shape = [select.shape[0]] + [1] * (activation.dim() - 1)
        shape[head_axis] = select.shape[1]
        return select.reshape(shape)

    if mode in _Z_MODES:
        def z_hook(z: Tensor, hook: Any) -> Tensor:
            m = mask_for(z, 2)
            if mode == "zero":
                return z * (1 - m)
            if mode in ("scale_output", "scale_value"):
                return z * (1 - m + m * value)
            assert reference is not None
            replacement = reference.for_layer(layer, z.shape[0], z.shape[1]).to(device=z.device, dtype=z.dtype)
            return z * (1 - m) + m * replacement

        return [(f"blocks.{layer}.attn.hook_z", z_hook)]

    if mode == "uniform":
        def uniform_hook(scores: Tensor, hook: Any) -> Tensor:
            m = mask_for(scores, 1).bool()
            return torch.where(m & torch.isfinite(scores), torch.zeros_like(scores), scores)

        return [(f"blocks.{layer}.attn.hook_attn_scores", uniform_hook)]

    name = query_hook_name(lm, layer)
    if name.endswith("hook_attn_scores"):
        def score_hook(scores: Tensor, hook: Any) -> Tensor:
            m = mask_for(scores, 1).bool()
            return torch.where(m & torch.isfinite(scores), scores * value, scores)

        return [(name, score_hook)]

    def query_hook(q: Tensor, hook: Any) -> Tensor:
        m = mask_for(q, 2)
        return q * (1 - m + m * value)

    return [(name, query_hook)]


def ablation_hooks(
    lm: LoadedModel,
    heads: Sequence[Head],
    mode: str = "zero",
    *,
    eps: float | None = None,
    reference: HeadReference | None = None,
) -> list[HookPair]:
    """Hook pairs that apply ``mode`` to every listed head (for ``lm.forward(fwd_hooks=...)``).

    Examples:
        >>> import interp
        >>> lm = interp.load_model("tiny-gpt2")
        >>> [name for name, _ in ablation_hooks(lm, [(0, 1), (1, 0)])]
        ['blocks.0.attn.hook_z', 'blocks.1.attn.hook_z']
    """
    checked = check_heads(lm, heads)
    if not checked:
        raise OptionError(f"no heads given: list at least one (layer, head) pair, layers 0..{lm.n_layers - 1}, "
                          f"heads 0..{lm.n_heads - 1}")
    _check_mode(mode, eps)
    by_layer: dict[int, Tensor] = {}
    for layer, head in checked:
        by_layer.setdefault(layer, torch.zeros(1, lm.n_heads))[0, head] = 1.0
    hooks: list[HookPair] = []
    for layer in sorted(by_layer):
        hooks += layer_edit_hooks(lm, layer, by_layer[layer], mode, eps=eps, reference=reference)
    return hooks


@contextlib.contextmanager
def apply_hooks(lm: LoadedModel, hooks: Sequence[HookPair]) -> Iterator[LoadedModel]:
    """Install hook pairs for the duration of the block; per-head ``hook_result`` is switched on if needed.

    Examples:
        >>> import interp
        >>> lm = interp.load_model("tiny-gpt2")
        >>> batch = lm.tokenize(["hi"])
        >>> with apply_hooks(lm, ablation_hooks(lm, [(0, 0)])):
        ...     ablated = lm.forward(batch)
        >>> bool((ablated != lm.forward(batch)).any())   # removed on exit
        True
    """
    with lm.hooks(list(hooks)):
        yield lm


@contextlib.contextmanager
def ablate_heads(
    lm: LoadedModel,
    heads: Sequence[Head],
    mode: str = "zero",
    *,
    eps: float | None = None,
    reference: HeadReference | None = None,
) -> Iterator[LoadedModel]:
    """Context manager: every forward pass inside runs with ``heads`` ablated by ``mode``.

    Args:
        heads: ``(layer, head)`` pairs (query-head indices for grouped-query models).
        mode: one of :data:`ABLATION_MODES`.
        eps: the factor of the scale modes (defaults: 1e-5 for ``scale_query``/``scale_output``;
            ``scale_value`` needs it).
        reference: :func:`head_means` for ``mean``; :func:`cache_head_outputs` for ``resample``.

    Examples:
        >>> import interp
        >>> lm = interp.load_model("tiny-llama")
        >>> batch = lm.tokenize(["a b c d"])
        >>> with ablate_heads(lm, [(0, 1)], mode="uniform"):
        ...     ablated = lm.forward(batch)
        >>> bool((ablated != lm.forward(batch)).any())
        True
    """
    hooks = ablation_hooks(lm, heads, mode, eps=eps, reference=reference)
    with apply_hooks(lm, hooks):
        yield lm


@contextlib.contextmanager
def patch_heads(lm: LoadedModel, heads: Sequence[Head], source: HeadReference) -> Iterator[LoadedModel]:
    """Activation patching: the listed heads' outputs come from a cached run (:func:`cache_head_outputs`).

    Examples:
        >>> import interp
        >>> lm = interp.load_model("tiny-gpt2")
        >>> corrupted = cache_head_outputs(lm, ["The dog ran."])
        >>> with patch_heads(lm, [(1, 0)], corrupted):
        ...     _ = lm.forward(lm.tokenize(["The cat sat."]))
    """
    if source.kind != "per_example":
        raise OptionError("patch_heads needs a per-example cache from cache_head_outputs(...)")
    with ablate_heads(lm, heads, "resample", reference=source):
        yield lm


def _one_head_hook(head: int, fn: Callable[[Tensor], Tensor]) -> Callable[..., Tensor]:
    """A hook on a ``[batch, pos, head, d]`` activation replacing head ``head``'s slice by ``fn`` of it.

    Built out of place (a one-hot blend), so autograd and the other heads' values are untouched.
    """

    def hook(activation: Tensor, hook: Any) -> Tensor:
        edited = fn(activation[:, :, head])
        onehot = torch.zeros(activation.shape[2], device=activation.device, dtype=activation.dtype)
        onehot[head] = 1
        return activation * (1 - onehot)[None, None, :, None] + edited[:, :, None, :] * onehot[None, None, :, None]

    return hook


def head_z_edit(lm: LoadedModel, layer: int, head: int, fn: Callable[[Tensor], Tensor]) -> HookPair:
    """Hook pair replacing one head's ``z`` ``[batch, pos, d_head]`` by ``fn(z)``.

    Examples:
        >>> import interp
        >>> lm = interp.load_model("tiny-gpt2")
        >>> with apply_hooks(lm, [head_z_edit(lm, 0, 2, lambda z: 2.0 * z)]):
        ...     _ = lm.forward(lm.tokenize(["hi"]))
    """
    check_heads(lm, [(layer, head)])

    return (f"blocks.{layer}.attn.hook_z", _one_head_hook(head, fn))


def head_output_edit(lm: LoadedModel, layer: int, head: int, fn: Callable[[Tensor], Tensor]) -> HookPair:
    """Hook pair replacing one head's d_model output ``z_h·W_O^h`` ``[batch, pos, d_model]`` by ``fn(·)``.

    It acts on ``hook_result``; install it with :func:`apply_hooks`, which switches ``use_attn_result``
    on for the duration. Combine with :func:`project_out` to remove directions from a head's output.

    Examples:
        >>> import interp, torch
        >>> lm = interp.load_model("tiny-gpt2")
        >>> u = torch.randn(64)
        >>> with apply_hooks(lm, [head_output_edit(lm, 1, 0, project_out(u))]):
        ...     _ = lm.forward(lm.tokenize(["hi"]))
    """
    check_heads(lm, [(layer, head)])

    return (f"blocks.{layer}.attn.hook_result", _one_head_hook(head, fn))


def project_out(directions: Tensor) -> Callable[[Tensor], Tensor]:
    """A function removing the span of ``directions`` (``[d]`` or ``[k, d]``) from vectors ``[..., d]``.

    Examples:
        >>> import torch
        >>> remove_x = project_out(torch.tensor([1.0, 0.0]))
        >>> remove_x(torch.tensor([[3.0, 4.0]]))
        tensor([[0., 4.]])
    """
    basis = directions.reshape(-1, directions.shape[-1]).double()
    q, r = torch.linalg.qr(basis.T)  # orthonormal basis of the span, [d, k]
    keep = r.diagonal().abs() > 1e-10 * max(1.0, float(r.diagonal().abs().max()))
    q = q[:, keep]

    def fn(x: Tensor) -> Tensor:
        basis_x = q.to(device=x.device, dtype=x.dtype)
        return x - (x @ basis_x) @ basis_x.T

    return fn


def causal_uniform_pattern(n_pos: int, dtype: torch.dtype = torch.float32) -> Float[Tensor, "q k"]:
    """The causal-uniform pattern ``A[i, j] = 1/(i+1)`` for ``j ≤ i`` (0-based), the ε → 0 limit.

    Examples:
        >>> causal_uniform_pattern(3)[2]
        tensor([0.3333, 0.3333, 0.3333])
    """
    rows = torch.arange(1, n_pos + 1, dtype=dtype)[:, None]
    return torch.tril(torch.ones(n_pos, n_pos, dtype=dtype)) / rows
