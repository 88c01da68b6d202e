"""Channel interventions: edit what one head writes, find previous-token and induction heads from data.

Companion of :mod:`interp.attribution.channels` (weights only). Method (Merullo, Eickhoff &
Pavlick, NeurIPS 2024, "Talking Heads": channels as rank-1 components; docs/analyses/svd-channels.md):

* **What a head writes.** Head h of layer l adds ``o_h = z_h @ W_O[h]`` to the attention output. With a
  post-attention norm (Gemma-3's ``ln1_post``) its share of what reaches the residual stream is
  ``o_h ⊙ g / rms``, with ``rms`` the norm's scale (``hook_scale``) of the summed output. The edits below
  capture ``z`` (``blocks.l.attn.hook_z``) and that scale, compute the head's share exactly, and add a
  change ``Δ`` to ``blocks.l.hook_attn_out`` — the tensor added to the residual stream. The norm's scale
  is held at its clean value (the usual frozen-norm convention), so the edit is exact and linear.
  Editing ``hook_z`` with ``W_O``'s pseudo-inverse would only be exact for directions inside the row
  space of ``W_O`` (and not at all through a post-norm); this way a random ``d_model`` direction is
  handled exactly too.
* **Projecting a channel out** (Merullo et al.): ``o ← o − o W_kᵀ W_k`` with ``W_k`` the orthonormalised
  write directions ``Vh[idx]`` of the head's (effective) OV matrix. **Scaling** it: ``o ← o + (α−1) o W_kᵀ W_k``.
  **Traversal**: ``o ← o + α v`` at chosen positions.
* **Previous-token and induction heads from data** (Olsson et al. 2022): on ``[BOS] r r`` with ``r`` a
  random token sequence of length T, previous-token score = mean attention from position t to t−1 (t ≥ 2);
  induction score = mean attention from each second-repeat position t to ``t − T + 1`` (the token after
  the earlier copy of the current token).

All edits are context managers over TransformerLens hooks (``model.hooks``), so they nest with probes and
are removed on exit, exceptions included; weights are never touched.

Examples:
    >>> import interp, torch
    >>> from interp.attribution.channel_interventions import project_out, repeated_token_scores
    >>> lm = interp.load_model("tiny-gpt2")
    >>> clean = repeated_token_scores(lm, n_sequences=2, half_length=8)
    >>> with project_out(lm, 0, 1, torch.eye(64)[:3]):
    ...     edited = repeated_token_scores(lm, n_sequences=2, half_length=8)
    >>> edited.induction.shape
    torch.Size([2, 4])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from interp.attribution.channels import CompositionScores, HeadSVD, _check_head
from interp.errors import OptionError, PromptError
from interp.models import LoadedModel, TokenBatch
from interp.probes import Reducer, run_probe
from interp.results import tidy_frame

Head = tuple[int, int]
#: ``edit(share [batch, pos, d_model]) -> delta [batch, pos, d_model]`` added to what the head writes.
WriteEdit = Callable[[Tensor], Tensor]


# ----------------------------------------------------------------------------------------------------
# Editing what a head writes
# ----------------------------------------------------------------------------------------------------


def _post_gain(lm: LoadedModel, layer: int) -> Tensor | None:
    """The post-attention norm's effective gain of ``layer`` (None without such a norm)."""
    spec = lm.post_attn_norm_spec(layer)
    if spec is None:
        return None
    return spec.gain if spec.gain is not None else torch.ones(lm.d_model, dtype=lm.dtype)


@contextmanager
def edit_head_writes(lm: LoadedModel, edits: Mapping[Head, WriteEdit], *, space: str = "residual") -> Iterator[None]:
    """Within the block, add ``edit(share)`` to what each head writes into the residual stream.

    ``space="residual"``: ``share`` is the head's exact contribution to ``blocks.l.hook_attn_out``
    (``z_h W_O[h]``, times ``g / rms`` after a post-attention norm) and the edit's output is added there.
    ``space="head"``: ``share`` is ``z_h W_O[h]`` before any post-attention norm and the edit's output is
    passed through the norm's gain and (clean) scale before it is added — the space of the raw
    ``W_V W_O`` write directions. Without a post-attention norm the two are the same.
    Several heads of one layer are edited in the same hook.

    Examples:
        >>> import interp, torch
        >>> lm = interp.load_model("tiny-gpt2")
        >>> with edit_head_writes(lm, {(0, 1): lambda share: -share}):   # remove head 0.1 entirely
        ...     logits = lm.forward(lm.tokenize(["hello"]))
    """
    if space not in ("residual", "head"):
        raise OptionError(f"unknown edit space {space!r}: use 'residual' or 'head'")
    by_layer: dict[int, dict[int, WriteEdit]] = {}
    for (layer, head), edit in edits.items():
        _check_head(lm, (layer, head))
        by_layer.setdefault(layer, {})[head] = edit
    hooks: list[tuple[str, Callable]] = []
    for layer, head_edits in by_layer.items():
        captured: dict[str, Tensor] = {}
        w_o = lm.head_weights(layer).W_O.to(lm.device)  # [head, d_head, d_model]
        gain = _post_gain(lm, layer)
        post = None if gain is None else gain.to(lm.device)

        def capture_z(z: Tensor, hook: Any, captured: dict[str, Tensor] = captured) -> None:
            captured["z"] = z

        def capture_scale(scale: Tensor, hook: Any, captured: dict[str, Tensor] = captured) -> None:
            captured["scale"] = scale

        def edit_out(out: Tensor, hook: Any, captured: dict[str, Tensor] = captured, w_o: Tensor = w_o,
                     post: Any = post, head_edits: dict[int, WriteEdit] = head_edits) -> Tensor:
            z = captured.pop("z")
            delta = torch.zeros_like(out)
            for head, edit in head_edits.items():
                share = z[:, :, head, :] @ w_o[head]
                if post is None:
                    delta = delta + edit(share.to(out.dtype))
                elif space == "residual":
                    delta = delta + edit((share / captured["scale"] * post).to(out.dtype))
                else:
                    delta = delta + (edit(share) / captured["scale"] * post).to(out.dtype)
            captured.pop("scale", None)
            return out + delta

        hooks.append((f"blocks.{layer}.attn.hook_z", capture_z))
        if post is not None:
            hooks.append((f"blocks.{layer}.ln1_post.hook_scale", capture_scale))
        hooks.append((f"blocks.{layer}.hook_attn_out", edit_out))
    with lm.hooks(hooks):
        yield


def orthonormal_rows(directions: Tensor) -> Float[Tensor, "k d_model"]:
    """Orthonormal basis (rows) of the span of ``directions`` (``[k, d_model]`` or ``[d_model]``)."""
    rows = directions.reshape(-1, directions.shape[-1]).double()
    if rows.shape[0] == 0:
        raise OptionError("no directions to project out: give at least one")
    q, r = torch.linalg.qr(rows.T)
    keep = r.diagonal().abs() > 1e-10 * max(1.0, float(r.diagonal().abs().max()))
    return q[:, keep].T.float()


def project_out(lm: LoadedModel, layer: int, head: int, directions: Tensor, *, space: str = "residual") -> Any:
    """Context manager: remove the span of ``directions`` from what head ``layer.head`` writes.

    ``o ← o − o Wᵀ W`` (``W`` = orthonormalised ``directions``). Use a head's OV write directions
    ``Vh[idx]`` (from :func:`~interp.attribution.channels.head_svd`) to cut a channel.
    """
    return scale_directions(lm, layer, head, directions, 0.0, space=space)


def scale_directions(lm: LoadedModel, layer: int, head: int, directions: Tensor, factor: float, *,
                     space: str = "residual") -> Any:
    """Context manager: multiply the part of head ``layer.head``'s output inside ``span(directions)`` by ``factor``.

    ``factor = 0`` projects the span out; ``factor = 2`` doubles the channel (Merullo et al.'s singular
    value rescaling, applied to activations).
    """
    basis = orthonormal_rows(directions).to(lm.device)

    def edit(share: Tensor) -> Tensor:
        return (factor - 1.0) * ((share @ basis.T.to(share.dtype)) @ basis.to(share.dtype))

    return edit_head_writes(lm, {(layer, head): edit}, space=space)


def project_out_many(lm: LoadedModel, directions_by_head: Mapping[Head, Tensor], *, space: str = "residual") -> Any:
    """Context manager: :func:`project_out` for several heads at once."""
    edits: dict[Head, WriteEdit] = {}
    for key, directions in directions_by_head.items():
        basis = orthonormal_rows(directions).to(lm.device)
        edits[key] = lambda share, basis=basis: -((share @ basis.T.to(share.dtype)) @ basis.to(share.dtype))
    return edit_head_writes(lm, edits, space=space)


def add_to_head_write(lm: LoadedModel, layer: int, head: int, vector: Tensor,
                      positions: Sequence[int] | None = None, *, space: str = "residual") -> Any:
    """Context manager: add ``vector`` (``[d_model]``) to what head ``layer.head`` writes at ``positions``
    (all positions when None)."""
    vec = vector.reshape(-1).to(lm.device)
    if vec.shape[0] != lm.d_model:
        raise OptionError(f"the vector has {vec.shape[0]} entries but d_model is {lm.d_model}")

    def edit(share: Tensor) -> Tensor:
        delta = torch.zeros_like(share)
        if positions is None:
            delta[:] = vec.to(share.dtype)
        else:
            index = [p for p in positions if p < share.shape[1]]
            delta[:, index] = vec.to(share.dtype)
        return delta

    return edit_head_writes(lm, {(layer, head): edit}, space=space)


# ----------------------------------------------------------------------------------------------------
# Previous-token and induction scores on repeated random tokens
# ----------------------------------------------------------------------------------------------------


def token_pool(lm: LoadedModel, prompts: Sequence[str] | None = None, minimum: int = 64) -> list[int]:
    """Distinct ordinary token ids to draw random sequences from.

    Taken from the tokenization of ``prompts`` (the shipped default prompts when None) so that every id
    is a real, frequent token; special ids (BOS, EOS, PAD, ...) are excluded.
    """
    if prompts is None:
        from interp.data import default_prompts

        prompts = default_prompts()
    special = set(getattr(lm.tokenizer, "all_special_ids", []) or [])
    special.update(i for i in (lm.bos_token_id, lm.tokenizer.eos_token_id, lm.pad_token_id) if i is not None)
    pool: dict[int, None] = {}
    for prompt in prompts:
        for token in lm.encode(prompt, prepend_bos=False):
            if int(token) not in special:
                pool[int(token)] = None
    ids = list(pool)
    if len(ids) < minimum:
        raise PromptError(f"the prompts hold only {len(ids)} distinct ordinary tokens; random sequences need at least {minimum}")
    return ids


def repeated_token_rows(lm: LoadedModel, n_sequences: int, half_length: int, *, seed: int = 0,
                        pool: Sequence[int] | None = None) -> list[list[int]]:
    """``n_sequences`` rows ``[BOS] r r`` with ``r`` = ``half_length`` distinct random tokens from ``pool``."""
    if n_sequences < 1 or half_length < 2:
        raise OptionError(f"need at least 1 sequence of half length ≥ 2, got {n_sequences} × {half_length}")
    ids = list(pool) if pool is not None else token_pool(lm, minimum=half_length)
    if len(ids) < half_length:
        raise OptionError(f"half length {half_length} exceeds the {len(ids)} distinct tokens available")
    if 2 * half_length + 1 > lm.info.n_ctx:
        raise OptionError(f"half length {half_length} does not fit the context of {lm.info.n_ctx} tokens")
    generator = np.random.default_rng(seed)
    bos = [int(lm.bos_token_id)] if lm.bos_token_id is not None and lm.info.prepend_bos else []
    rows = []
    for _ in range(n_sequences):
        half = [ids[i] for i in generator.choice(len(ids), size=half_length, replace=False)]
        rows.append(bos + half + half)
    return rows


@dataclass(frozen=True)
class RepeatedTokenScores:
    """Mean previous-token and induction attention per head on repeated random sequences."""

    previous_token: Float[Tensor, "layer head"]
    induction: Float[Tensor, "layer head"]
    n_sequences: int
    half_length: int
    params: dict = field(default_factory=dict)

    def top(self, metric: str, k: int, min_layer: int = 0) -> list[tuple[Head, float]]:
        """The k heads (layer ≥ ``min_layer``) with the highest ``previous_token`` or ``induction`` score."""
        scores = getattr(self, metric).clone()
        scores[:min_layer] = -1.0
        values, index = scores.flatten().topk(k)
        n_heads = scores.shape[1]
        return [((i // n_heads, i % n_heads), v) for v, i in zip(values.tolist(), index.tolist(), strict=True)]

    def circuit_heads(self, k: int) -> tuple[list[Head], list[Head]]:
        """The ``k`` top previous-token heads, and the ``k`` top induction heads in layers after the first of them
        (an induction head reads what a previous-token head wrote, so it sits later)."""
        previous = [h for h, _ in self.top("previous_token", k)]
        return previous, [h for h, _ in self.top("induction", k, min_layer=min(h[0] for h in previous) + 1)]

    def to_frame(self) -> pd.DataFrame:
        n_layers, n_heads = self.induction.shape
        layer_idx, head_idx = np.meshgrid(range(n_layers), range(n_heads), indexing="ij")
        frames = [pd.DataFrame(dict(layer=layer_idx.ravel(), head=head_idx.ravel(), metric=name,
                                    value=getattr(self, name).numpy().ravel()))
                  for name in ("previous_token", "induction")]
        return tidy_frame(pd.concat(frames, ignore_index=True))


class _RepeatReducer(Reducer):
    """Sums attention at offset −1 (previous token) and at the induction target, per layer and head."""

    def __init__(self, layers: Sequence[int], n_heads: int, half_length: int, offset: int) -> None:
        self.layers = list(layers)
        self.hook_names = tuple(f"blocks.{layer}.attn.hook_pattern" for layer in self.layers)
        self.half = half_length
        self.offset = offset  # 1 with BOS, 0 without
        self.prev = torch.zeros(len(self.layers), n_heads, dtype=torch.float64)
        self.induction = torch.zeros(len(self.layers), n_heads, dtype=torch.float64)
        self.n_prev = 0
        self.n_induction = 0

    def update(self, hook_name: str, activation: Tensor, batch: TokenBatch) -> None:
        index = self.layers.index(int(hook_name.split(".")[1]))
        pattern = activation.double()  # [batch, head, q, k]; every row has the same length (no padding)
        n = pattern.shape[-1]
        queries = torch.arange(1 + self.offset, n)
        self.prev[index] += pattern[:, :, queries, queries - 1].sum(dim=(0, 2)).cpu()
        second = torch.arange(self.offset + self.half, n)
        self.induction[index] += pattern[:, :, second, second - self.half + 1].sum(dim=(0, 2)).cpu()
        if index == 0:
            self.n_prev += pattern.shape[0] * len(queries)
            self.n_induction += pattern.shape[0] * len(second)

    def result(self) -> tuple[Tensor, Tensor]:
        return (self.prev / max(self.n_prev, 1)).float(), (self.induction / max(self.n_induction, 1)).float()


def repeated_token_scores(
    lm: LoadedModel,
    *,
    n_sequences: int = 8,
    half_length: int = 24,
    seed: int = 0,
    rows: Sequence[Sequence[int]] | None = None,
    layers: Sequence[int] | None = None,
    batch_size: int = 8,
) -> RepeatedTokenScores:
    """Previous-token and induction scores per head (runs inside any active edit context).

    ``rows`` (from :func:`repeated_token_rows`) fixes the sequences; ``layers`` limits the probed layers
    (the forward pass stops after the last one). Heads of layers not probed score 0.

    Examples:
        >>> import interp
        >>> scores = repeated_token_scores(interp.load_model("tiny-gpt2"), n_sequences=2, half_length=8)
        >>> float(scores.previous_token.max()) <= 1.0
        True
    """
    if lm.is_encoder:
        raise OptionError(f"{lm.name} is an encoder: previous-token and induction scores need a causal decoder")
    token_rows = [list(r) for r in rows] if rows is not None else repeated_token_rows(
        lm, n_sequences, half_length, seed=seed)
    lengths = {len(r) for r in token_rows}
    if len(lengths) != 1:
        raise OptionError("repeated-token rows must all have the same length")
    offset = 1 if token_rows[0][0] == lm.bos_token_id and lm.info.prepend_bos else 0
    half = (len(token_rows[0]) - offset) // 2
    probed = sorted(set(range(lm.n_layers) if layers is None else layers))
    reducer = _RepeatReducer(probed, lm.n_heads, half, offset)
    run_probe(lm, token_rows, [reducer], batch_size=batch_size, progress=False, description="repeated tokens")
    prev_part, induction_part = reducer.result()
    prev = torch.zeros(lm.n_layers, lm.n_heads)
    induction = torch.zeros(lm.n_layers, lm.n_heads)
    prev[probed] = prev_part
    induction[probed] = induction_part
    return RepeatedTokenScores(prev, induction, len(token_rows), half,
                               params=dict(n_sequences=len(token_rows), half_length=half, seed=seed))


# ----------------------------------------------------------------------------------------------------
# The induction channel experiment and channel traversal
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelEffect:
    """Induction score of one reader with a set of writer directions removed."""

    reader: Head
    condition: str  # clean | top | random_components | random_directions | whole_head
    k: int
    trial: int
    induction: float
    writers: tuple[Head, ...]


def induction_channel_test(
    lm: LoadedModel,
    k_comp: CompositionScores,
    ov: HeadSVD,
    writers: Sequence[Head],
    readers: Sequence[Head],
    *,
    k: int = 3,
    random_trials: int = 5,
    rows: Sequence[Sequence[int]],
    seed: int = 0,
    by: str = "score",
    space: str | None = None,
) -> list[ChannelEffect]:
    """For each reader: induction score clean, with each earlier writer's top-k components (ranked
    ``by`` CS_i or share of K-composition with that reader) projected out, with k random *other*
    components of the same writers, with k random ``d_model`` directions, and with the writers removed
    entirely (all components). ``space`` defaults to where ``ov``'s write directions live ("residual"
    for effective matrices, "head" for raw ones).
    """
    space = space or ("residual" if ov.effective else "head")
    generator = torch.Generator().manual_seed(seed)
    effects: list[ChannelEffect] = []
    rank = ov.S.shape[-1]
    d_model = ov.Vh.shape[-1]
    for reader in readers:
        sources = tuple(w for w in writers if w[0] < reader[0])
        if not sources:
            continue
        layers = [reader[0]]

        def score(reader: Head = reader, layers: list[int] = layers) -> float:
            return float(repeated_token_scores(lm, rows=rows, layers=layers).induction[reader])

        effects.append(ChannelEffect(reader, "clean", 0, 0, score(), sources))
        top = {w: k_comp.top_components(w, reader, k, by=by) for w in sources}
        with project_out_many(lm, {w: ov.Vh[w][top[w]] for w in sources}, space=space):
            effects.append(ChannelEffect(reader, "top", k, 0, score(), sources))
        with project_out_many(lm, {w: ov.Vh[w] for w in sources}, space=space):
            effects.append(ChannelEffect(reader, "whole_head", rank, 0, score(), sources))
        for trial in range(random_trials):
            chosen = {}
            for w in sources:
                others = torch.tensor([i for i in range(rank) if i not in top[w]])
                chosen[w] = ov.Vh[w][others[torch.randperm(len(others), generator=generator)[:k]]]
            with project_out_many(lm, chosen, space=space):
                effects.append(ChannelEffect(reader, "random_components", k, trial, score(), sources))
            random_dirs = {w: torch.randn(k, d_model, generator=generator) for w in sources}
            with project_out_many(lm, random_dirs, space=space):
                effects.append(ChannelEffect(reader, "random_directions", k, trial, score(), sources))
    return effects


def effects_frame(effects: Sequence[ChannelEffect]) -> pd.DataFrame:
    """Tidy rows ``metric = induction_under_edit`` (reader as ``layer, head``; ``condition, k, trial`` extras)."""
    rows = [dict(layer=e.reader[0], head=e.reader[1], metric="induction_under_edit", value=e.induction,
                 condition=e.condition, k=e.k, trial=e.trial,
                 writers=" ".join(f"{w[0]}.{w[1]}" for w in e.writers)) for e in effects]
    return tidy_frame(rows, extra_columns=("condition", "k", "trial", "writers"))


@dataclass(frozen=True)
class Traversal:
    """A reader's attention as a multiple of a direction is added to a writer's output at some positions."""

    writer: Head
    reader: Head
    alphas: Float[Tensor, " alpha"]
    attention_to_positions: Float[Tensor, " alpha"]  # mean attention later queries give the edited positions
    shift: Float[Tensor, " alpha"]  # mean total-variation distance of the reader's rows from clean
    positions: tuple[int, ...]
    label: str

    def to_frame(self) -> pd.DataFrame:
        rows = []
        for alpha, to_pos, shift in zip(self.alphas.tolist(), self.attention_to_positions.tolist(),
                                        self.shift.tolist(), strict=True):
            base = dict(layer=self.reader[0], head=self.reader[1], alpha=alpha, direction=self.label,
                        writer=f"{self.writer[0]}.{self.writer[1]}")
            rows.append(dict(base, metric="traversal_attention_to_positions", value=to_pos))
            rows.append(dict(base, metric="traversal_attention_shift", value=shift))
        return tidy_frame(rows, extra_columns=("alpha", "direction", "writer"))


def channel_traversal(
    lm: LoadedModel,
    rows: Sequence[Sequence[int]],
    writer: Head,
    reader: Head,
    direction: Tensor,
    alphas: Sequence[float],
    *,
    positions: Sequence[int],
    label: str = "channel",
    space: str = "residual",
) -> Traversal:
    """Add ``α · direction`` to what ``writer`` writes at ``positions`` and record ``reader``'s attention.

    Reports, per α, the mean attention that queries after the first edited position give to the edited
    positions (the K-channel effect), and the mean total-variation distance of the reader's attention
    rows from the clean run (any channel). ``direction`` carries its own scale.

    Examples:
        >>> import interp, torch
        >>> lm = interp.load_model("tiny-gpt2")
        >>> rows = repeated_token_rows(lm, 2, 8)
        >>> t = channel_traversal(lm, rows, (0, 1), (1, 0), torch.randn(64), [-1.0, 0.0, 1.0], positions=[4])
        >>> t.attention_to_positions.shape
        torch.Size([3])
    """
    _check_head(lm, writer)
    _check_head(lm, reader)
    if writer[0] >= reader[0]:
        raise OptionError(f"the writer {writer[0]}.{writer[1]} must sit in an earlier layer than the reader {reader[0]}.{reader[1]}")
    if not positions:
        raise OptionError("give at least one position to edit")
    batch = lm.pad([list(r) for r in rows])
    name = f"blocks.{reader[0]}.attn.hook_pattern"
    first = min(positions)

    def pattern() -> Tensor:
        captured: dict[str, Tensor] = {}

        def grab(value: Tensor, hook: Any) -> None:
            captured["p"] = value[:, reader[1]].detach().double().cpu()

        with torch.inference_mode():
            lm.forward(batch, fwd_hooks=[(name, grab)], stop_at_layer=reader[0] + 1)
        return captured["p"]  # [batch, q, k]

    clean = pattern()
    queries = torch.arange(first + 1, clean.shape[1])
    to_positions, shifts = [], []
    for alpha in alphas:
        with add_to_head_write(lm, writer[0], writer[1], float(alpha) * direction, positions, space=space):
            edited = pattern()
        to_positions.append(float(edited[:, queries][:, :, list(positions)].sum(-1).mean()))
        shifts.append(float(0.5 * (edited - clean)[:, 1:].abs().sum(-1).mean()))
    return Traversal(writer, reader, torch.tensor(list(alphas), dtype=torch.float32),
                     torch.tensor(to_positions), torch.tensor(shifts), tuple(positions), label)


#: Multiples of the writer's median output norm added along a direction in :func:`traverse_strongest_channel`.
TRAVERSAL_ALPHAS = (-0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5)


@dataclass(frozen=True)
class ChannelTraversals:
    """Traversals of the strongest writer → reader K-channel: its top component, a random direction and the
    writer's top-σ component, each added at one key position in multiples of the writer's median output norm."""

    writer: Head
    reader: Head
    component: int  # the channel's top component (a row of the writer's OV ``Vh``)
    scale: float  # the writer's median output norm (BOS excluded)
    alphas: tuple[float, ...]
    traversals: tuple[Traversal, ...]

    @property
    def position(self) -> int:
        return self.traversals[0].positions[0]

    def to_frame(self) -> pd.DataFrame:
        return pd.concat([t.to_frame() for t in self.traversals], ignore_index=True)

    def table(self) -> pd.DataFrame:
        """One row per direction and α: the attention the reader gives the edited key, and its mean shift."""
        return pd.DataFrame([{"direction": t.label, "alpha": a, "attention to edited key": round(float(v), 4),
                              "mean attention shift (TV)": round(float(s), 4)}
                             for t in self.traversals
                             for a, v, s in zip(self.alphas, t.attention_to_positions, t.shift, strict=True)])


def traverse_strongest_channel(lm: LoadedModel, ov: HeadSVD, k_comp: CompositionScores, writers: Sequence[Head],
                               readers: Sequence[Head], rows: Sequence[Sequence[int]], *, seed: int = 0,
                               alphas: Sequence[float] = TRAVERSAL_ALPHAS) -> ChannelTraversals | None:
    """Pick the (writer, reader) pair with the largest K-composition among ``writers`` × ``readers`` (writer in
    an earlier layer), and traverse its top component with :func:`channel_traversal` against a random direction
    and the writer's top-σ component, at one key in the first repeat of ``rows``. None without such a pair.

    Examples:
        >>> import interp
        >>> from interp.attribution.channels import svd_channels
        >>> lm = interp.load_model("tiny-gpt2")
        >>> channels = svd_channels(lm, ["K"], baseline_samples=5)
        >>> found = traverse_strongest_channel(lm, channels.ov, channels.composition["K"], [(0, 1)], [(1, 0)],
        ...                                    repeated_token_rows(lm, 2, 8))
        >>> found.writer, found.reader, len(found.traversals)
        ((0, 1), (1, 0), 3)
    """
    candidates = [(w, r) for r in readers for w in writers if w[0] < r[0]]
    if not candidates:
        return None
    writer, reader = max(candidates, key=lambda pair: float(k_comp.scores[pair[0] + pair[1]]))
    component = k_comp.top_components(writer, reader, 1)[0]
    direction = ov.Vh[writer][component]
    norms: list[Tensor] = []

    def record(share: Tensor) -> Tensor:
        norms.append(share[:, 1:].norm(dim=-1).flatten())  # not BOS, where massive activations sit
        return torch.zeros_like(share)

    space = "residual" if ov.effective else "head"
    with edit_head_writes(lm, {writer: record}, space=space), torch.inference_mode():
        lm.forward(lm.pad([list(r) for r in rows]), stop_at_layer=writer[0] + 1)
    scale = float(torch.cat(norms).median())
    position = [(len(rows[0]) - 1) // 2 // 2 + 1]  # a key in the first repeat
    generator = torch.Generator().manual_seed(seed)
    random_direction = torch.randn(direction.shape[0], generator=generator)
    random_direction = random_direction / random_direction.norm()
    traversals = tuple(channel_traversal(lm, rows, writer, reader, scale * vector, alphas, positions=position,
                                         label=label, space=space)
                       for label, vector in (("channel", direction), ("random", random_direction),
                                             ("top-σ component", ov.Vh[writer][0])))
    return ChannelTraversals(writer, reader, component, scale, tuple(alphas), traversals)


def effects_table(effect_frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per reader and condition of :func:`induction_channel_test` (tidy rows from :func:`effects_frame`): the mean
    induction score, its spread over trials and the change from the clean run."""
    if effect_frame.empty:
        return pd.DataFrame()
    rows = []
    for (layer, head), part in effect_frame.groupby(["layer", "head"], sort=False):
        clean = float(part.loc[part["condition"] == "clean", "value"].mean())
        for condition in ("clean", "top", "random_components", "random_directions", "whole_head"):
            values = part.loc[part["condition"] == condition, "value"]
            if values.empty:
                continue
            rows.append({"reader": f"{layer}.{head}", "condition": condition,
                         "k": {"clean": "0", "whole_head": "all"}.get(condition, str(k)),
                         "induction score": round(float(values.mean()), 4),
                         "std over trials": round(float(values.std()) if len(values) > 1 else 0.0, 4),
                         "change vs clean": round(float(values.mean()) - clean, 4)})
    return pd.DataFrame(rows)


def writer_rank(scores: CompositionScores, writer: Head, reader: Head) -> tuple[int, int]:
    """Rank of ``writer`` among all heads of earlier layers by their score into ``reader`` (1 = top), and their count."""
    column = scores.scores[: reader[0], :, reader[0], reader[1]].flatten()
    return int((column > scores.scores[writer + reader]).sum()) + 1, int(column.numel())


def channel_pairs_table(k_comp: CompositionScores, writers: Sequence[Head], readers: Sequence[Head],
                        k: int) -> pd.DataFrame:
    """K-composition of every writer → reader pair (writer in an earlier layer): score, baseline, z, the writer's
    rank among earlier heads, the top component's score and the share of the top-``k`` components."""
    rows = []
    for reader in readers:
        for writer in writers:
            if writer[0] >= reader[0]:
                continue
            share = k_comp.contribution_share(writer, reader)
            top = k_comp.top_components(writer, reader, k)
            rank, of = writer_rank(k_comp, writer, reader)
            rows.append({
                "writer (previous-token)": f"{writer[0]}.{writer[1]}", "reader (induction)": f"{reader[0]}.{reader[1]}",
                "K-comp": round(float(k_comp.scores[writer + reader]), 5),
                "baseline": round(k_comp.baseline.mean, 5), "z": round(float(k_comp.z[writer + reader]), 2),
                "rank among earlier writers": f"{rank}/{of}",
                "top CS_i": round(float(k_comp.component_scores[writer[0], writer[1], top[0], reader[0], reader[1]]), 4),
                f"share of top-{k} components": round(float(share[top].sum()), 4),
                "top components": " ".join(map(str, top)),
            })
    return pd.DataFrame(rows)


def top_pairs_table(scores: CompositionScores, n: int = 15) -> pd.DataFrame:
    """The ``n`` writer → reader pairs with the highest composition score: score, z, top component and its share."""
    return pd.DataFrame([{"writer": f"{w[0]}.{w[1]}", "reader": f"{r[0]}.{r[1]}", "score": round(s, 5),
                          "z": round(float(scores.z[w + r]), 2), "top component": scores.top_components(w, r, 1)[0],
                          "its share": round(float(scores.contribution_share(w, r).max()), 4)}
                         for w, r, s in scores.top_pairs(n)])
