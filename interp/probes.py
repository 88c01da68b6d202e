"""Streaming probes: capture activations by TransformerLens hook name and reduce them on the fly.

A probe run tokenizes a prompt set, sorts it by length (less padding), runs it in batches with
read-only hooks, and hands each activation to reducers that keep only sums, maxima, top-k lists or
histograms. Nothing of size ``prompts × positions`` is kept, so memory stays flat in the number of
prompts — the opposite of ``run_with_cache`` over everything.

Padding: batches are right-padded. Padded keys are masked inside attention; padded query rows are
computed but every reducer receives a mask of real positions and ignores them.

Hooks are installed through the backend's :meth:`~interp.backends.Backend.hooks`, which removes them on
success, on exceptions and on Ctrl-C, and switches per-head ``hook_result`` on only while it is needed.

Examples:
    >>> import interp
    >>> from interp.probes import Mean, run_probe
    >>> lm = interp.load_model("tiny-gpt2")
    >>> mean_z = Mean("blocks.0.attn.hook_z")
    >>> _ = run_probe(lm, ["Hello there", "General Kenobi"], [mean_z], progress=False)
    >>> tuple(mean_z.result().shape)   # [head, d_head]
    (4, 16)
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import PromptError
from interp.models import LoadedModel, TokenBatch

if TYPE_CHECKING:
    from typing_extensions import TypeIs

_QUERY_AXIS_2 = ("hook_pattern", "hook_attn_scores")


def position_axis(hook_name: str) -> int:
    """Axis of the (query) position in a hook's activation: 2 for patterns/scores, else 1."""
    return 2 if hook_name.endswith(_QUERY_AXIS_2) else 1


def hook_layer(hook_name: str) -> int | None:
    """Layer index in ``blocks.{l}.…`` names, else None (embeddings, final norm)."""
    match = re.match(r"blocks\.(\d+)\.", hook_name)
    return int(match.group(1)) if match else None


class Reducer:
    """Base class: subscribe to hook names and reduce activations batch by batch.

    Subclasses implement :meth:`update`; :meth:`begin_batch` and :meth:`end_batch` bracket every
    batch (for reductions that combine several hooks of one forward pass).
    """

    hook_names: tuple[str, ...] = ()
    needs_logits: bool = False

    def begin_batch(self, batch: TokenBatch) -> None:  # noqa: B027 - optional hook
        pass

    def update(self, hook_name: str, activation: Tensor, batch: TokenBatch) -> None:
        raise NotImplementedError

    def end_batch(self, batch: TokenBatch, logits: Tensor | None) -> None:  # noqa: B027 - optional hook
        pass

    def result(self) -> Any:
        raise NotImplementedError


def _positions_first(hook_name: str, activation: Tensor) -> Tensor:
    """Move the (query) position axis to axis 1: ``[batch, pos, ...]``."""
    axis = position_axis(hook_name)
    return activation if axis == 1 else activation.movedim(axis, 1)


class _PositionReducer(Reducer):
    """Shared plumbing for reducers over real (non-padded) positions of one hook."""

    def __init__(self, hook_name: str, transform: Callable[[Tensor], Tensor] | None = None) -> None:
        self.hook_names = (hook_name,)
        self.transform = transform

    def _valid(self, hook_name: str, activation: Tensor, batch: TokenBatch) -> Tensor:
        """Rows of real positions: ``[n_real_positions, *features]`` in float64 for stable sums."""
        per_position = _positions_first(hook_name, activation)
        if self.transform is not None:
            per_position = self.transform(per_position)
        mask = batch.attention_mask.to(per_position.device).bool()
        return per_position[mask]


class Mean(_PositionReducer):
    """Mean over every real position of every prompt (optionally of ``transform(activation)``)."""

    def __init__(self, hook_name: str, transform: Callable[[Tensor], Tensor] | None = None) -> None:
        super().__init__(hook_name, transform)
        self.total: Tensor | None = None
        self.count = 0

    def update(self, hook_name: str, activation: Tensor, batch: TokenBatch) -> None:
        rows = self._valid(hook_name, activation, batch).double()
        summed = rows.sum(dim=0)
        self.total = summed if self.total is None else self.total + summed
        self.count += rows.shape[0]

    def result(self) -> Tensor:
        if self.total is None:
            raise RuntimeError("no activations were reduced")
        return (self.total / self.count).float()


class Max(_PositionReducer):
    """Element-wise maximum over every real position."""

    def __init__(self, hook_name: str, transform: Callable[[Tensor], Tensor] | None = None) -> None:
        super().__init__(hook_name, transform)
        self.best: Tensor | None = None

    def update(self, hook_name: str, activation: Tensor, batch: TokenBatch) -> None:
        rows = self._valid(hook_name, activation, batch)
        batch_max = rows.max(dim=0).values
        self.best = batch_max if self.best is None else torch.maximum(self.best, batch_max)

    def result(self) -> Tensor:
        if self.best is None:
            raise RuntimeError("no activations were reduced")
        return self.best


@dataclass(frozen=True)
class TopEntry:
    value: float
    prompt: int
    position: int
    feature: int


class TopK(_PositionReducer):
    """The k largest values over (prompt, position, flattened feature), with where they occurred."""

    def __init__(self, hook_name: str, k: int, transform: Callable[[Tensor], Tensor] | None = None) -> None:
        super().__init__(hook_name, transform)
        self.k = k
        self.entries: list[TopEntry] = []

    def update(self, hook_name: str, activation: Tensor, batch: TokenBatch) -> None:
        per_position = _positions_first(hook_name, activation)
        if self.transform is not None:
            per_position = self.transform(per_position)
        flat = per_position.reshape(per_position.shape[0], per_position.shape[1], -1).float()
        mask = batch.attention_mask.to(flat.device).bool()
        masked = flat.masked_fill(~mask[:, :, None], float("-inf"))
        k = min(self.k, masked.numel())
        values, index = masked.flatten().topk(k)
        n_pos, n_feat = flat.shape[1], flat.shape[2]
        for value, flat_index in zip(values.tolist(), index.tolist(), strict=True):
            if value == float("-inf"):
                continue
            row, rest = divmod(flat_index, n_pos * n_feat)
            position, feature = divmod(rest, n_feat)
            self.entries.append(TopEntry(value, batch.prompt_index[row], position, feature))
        self.entries = sorted(self.entries, key=lambda e: e.value, reverse=True)[: self.k]

    def result(self) -> list[TopEntry]:
        return list(self.entries)


class Histogram(_PositionReducer):
    """Fixed-bin histogram of every value at real positions (values outside the range are clipped)."""

    def __init__(
        self,
        hook_name: str,
        bins: int,
        value_range: tuple[float, float],
        transform: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__(hook_name, transform)
        self.bins = bins
        self.low, self.high = value_range
        self.counts = torch.zeros(bins, dtype=torch.float64)

    def update(self, hook_name: str, activation: Tensor, batch: TokenBatch) -> None:
        rows = self._valid(hook_name, activation, batch).float().clamp(self.low, self.high)
        self.counts += torch.histc(rows.cpu(), bins=self.bins, min=self.low, max=self.high).double()

    def result(self) -> tuple[Tensor, Tensor]:
        edges = torch.linspace(self.low, self.high, self.bins + 1)
        return self.counts.clone(), edges


# ----------------------------------------------------------------------------------------------------
# Attention-specific reductions shared by several analyses
# ----------------------------------------------------------------------------------------------------


def attention_received(
    pattern: Float[Tensor, "batch head q k"],
    mask: Tensor,
    *,
    include_diagonal: bool = True,
    causal: bool = True,
) -> Float[Tensor, "batch head k"]:
    """Mean attention each key position receives from the real queries that can see it.

    Causal models: ``α_k = 1/(n−k) Σ_{t=k}^{n−1} A[t,k]`` (Gu et al.) with ``include_diagonal``; without
    it the diagonal is excluded (``t>k``, the secondary-sink form) and the last position receives 0.
    Encoders (``causal=False``): the mean over all real queries (``t≠k`` without the diagonal).
    Positions past a prompt's length are 0.
    """
    dtype = pattern.dtype
    query_mask = mask.to(dtype)[:, None, :, None]
    summed = (pattern * query_mask).sum(dim=2)  # [batch, head, k]
    lengths = mask.sum(dim=1).to(dtype)  # [batch]
    positions = torch.arange(pattern.shape[-1], device=pattern.device, dtype=dtype)
    counts = lengths[:, None] - positions[None, :] if causal else lengths[:, None].expand(-1, pattern.shape[-1])
    if not include_diagonal:
        diagonal = torch.diagonal(pattern, dim1=2, dim2=3) * mask.to(dtype)[:, None, :]
        summed = summed - diagonal
        counts = counts - 1
    received = summed / counts.clamp(min=1)[:, None, :]
    last_valid = lengths[:, None] - (1 if causal and not include_diagonal else 0)
    valid_keys = (positions[None, :] < last_valid).to(dtype)
    return received * valid_keys[:, None, :]


# ----------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------


def batches(lm: LoadedModel, token_rows: Sequence[Sequence[int]], batch_size: int) -> list[TokenBatch]:
    """Length-sorted, right-padded batches (longest first) that remember each row's prompt index."""
    if batch_size < 1:
        from interp.errors import OptionError

        raise OptionError(f"batch size must be at least 1, got {batch_size}")
    order = sorted(range(len(token_rows)), key=lambda i: -len(token_rows[i]))
    return [
        lm.pad([token_rows[i] for i in order[start : start + batch_size]], prompt_index=order[start : start + batch_size])
        for start in range(0, len(order), batch_size)
    ]


def is_text_prompts(prompts: Sequence[str] | Sequence[Sequence[int]]) -> TypeIs[Sequence[str]]:
    """True when ``prompts`` are strings (judged by the first); False for token id rows and for none."""
    return len(prompts) > 0 and isinstance(prompts[0], str)


def tokenize_prompts(
    lm: LoadedModel, prompts: Sequence[str], *, max_tokens: int | None = None, min_tokens: int = 1
) -> list[list[int]]:
    """Token id lists (BOS prepended for decoders), truncated to ``max_tokens``."""
    if len(prompts) == 0:
        raise PromptError("the prompt set is empty: give at least one non-empty prompt")
    rows = []
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise PromptError(f"prompt {index} is empty: every prompt needs some text")
        ids = lm.encode(prompt)
        rows.append(ids[:max_tokens] if max_tokens else ids)
        if len(rows[-1]) < min_tokens:
            raise PromptError(f"prompt {index} has {len(rows[-1])} tokens; this analysis needs at least {min_tokens}")
    return rows


def run_probe(
    lm: LoadedModel,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    reducers: Sequence[Reducer],
    *,
    batch_size: int = 8,
    max_tokens: int | None = None,
    progress: bool | None = None,
    description: str = "probing",
) -> int:
    """Run ``prompts`` (strings, or token id lists) through ``lm`` and feed every reducer.

    The forward pass stops after the last layer any reducer listens to, unless a reducer needs the
    logits. Returns the number of tokens processed.
    """
    if len(prompts) == 0:
        raise PromptError("the prompt set is empty: give at least one non-empty prompt")
    if is_text_prompts(prompts):
        token_rows = tokenize_prompts(lm, prompts, max_tokens=max_tokens)
    else:
        token_rows = [list(r)[:max_tokens] if max_tokens else list(r) for r in prompts]
    by_hook: dict[str, list[Reducer]] = {}
    for reducer in reducers:
        for name in reducer.hook_names:
            by_hook.setdefault(name, []).append(reducer)
    lm.check_hook_names(list(by_hook))
    needs_logits = any(r.needs_logits for r in reducers)
    layers = [hook_layer(name) for name in by_hook]
    stop_at: int | None = None
    if not needs_logits and not lm.is_encoder and all(layer is not None for layer in layers) and layers:
        stop_at = max(layer for layer in layers if layer is not None) + 1
        stop_at = None if stop_at >= lm.n_layers else stop_at

    current: dict[str, TokenBatch] = {}

    def make_hook(name: str) -> Callable[[Tensor, Any], None]:
        listeners = by_hook[name]

        def hook(activation: Tensor, hook: Any) -> None:
            for reducer in listeners:
                reducer.update(name, activation.detach(), current["batch"])

        return hook

    fwd_hooks = [(name, make_hook(name)) for name in by_hook]
    all_batches = batches(lm, token_rows, batch_size)
    show = sys.stderr.isatty() if progress is None else progress
    from tqdm.auto import tqdm

    n_tokens = 0
    try:
        with torch.inference_mode(), lm.hooks(fwd_hooks):
            for batch in tqdm(all_batches, desc=description, disable=not show, unit="batch"):
                current["batch"] = batch
                for reducer in reducers:
                    reducer.begin_batch(batch)
                if stop_at is not None:
                    out = lm.forward(batch, stop_at_layer=stop_at)
                    logits = None
                else:
                    out = lm.forward(batch, return_type="logits" if needs_logits else None)
                    logits = out if needs_logits else None
                del out
                for reducer in reducers:
                    reducer.end_batch(batch, logits)
                n_tokens += int(batch.lengths.sum())
    finally:
        current.clear()
    return n_tokens
