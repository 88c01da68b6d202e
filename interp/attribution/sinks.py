"""Attention sinks: tokens that soak up attention, secondary sinks, and massive activations.

Method (Gu et al., ICLR 2025; Sun et al., COLM 2024; docs/analyses/attention-sinks.md):

* First-token sink score (Gu et al., ICLR 2025): ``α_k = 1/(T−k) Σ_{t≥k} A[t,k]``, the mean attention
  key position ``k`` receives (0-based, over real queries; for encoders, over all queries); ``Sink_0^ε`` is the fraction of heads whose
  ``α_0`` exceeds ε (default 0.3) on sequences cut to T tokens (default 64), averaged over prompts.
* Secondary sinks (Wong et al. 2025, suite definition): the head-averaged score
  ``mean_h mean_{t>k} A[t,k]`` of a non-first position ``k`` that reaches τ at layer ``l`` but not at
  ``l−1``; its lifetime is the number of consecutive layers at or above τ. Positions with fewer than
  ``min_queries`` later queries are skipped (the last few tokens would otherwise sink trivially).
* Massive activations (Sun et al., COLM 2024): per layer, the largest ``|resid_post|`` entries with their
  (prompt, position, dimension); flagged when ``|value| > 100`` and ``≥ 1000×`` the median magnitude of
  that hidden state.

BOS must be prepended (it is, for every decoder the suite loads); without it the first content token
becomes the sink.

Examples:
    >>> import interp
    >>> from interp.attribution.sinks import attention_sinks
    >>> lm = interp.load_model("tiny-gpt2")
    >>> sinks = attention_sinks(lm, ["The cat sat on the mat.", "Dogs bark at night."], progress=False)
    >>> sinks.bos_attention.shape      # [layer, head]
    torch.Size([2, 4])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import OptionError
from interp.models import LoadedModel, TokenBatch
from interp.probes import Reducer, attention_received, is_text_prompts, run_probe, tokenize_prompts
from interp.results import tidy_frame


@dataclass(frozen=True)
class SecondarySink:
    """A non-first position that becomes a sink in a middle layer."""

    prompt: int
    position: int
    token: str
    birth_layer: int
    lifetime: int
    peak_score: float
    peak_layer: int


@dataclass(frozen=True)
class MassiveActivation:
    """One of the largest ``|resid_post|`` entries of a layer."""

    layer: int
    prompt: int
    position: int
    dim: int
    token: str
    value: float
    median_abs: float
    ratio: float
    flagged: bool


@dataclass(frozen=True)
class SinkScores:
    """Everything the sinks probe measured.

    Shapes use L = layers, H = heads, T = the token cap.
    """

    bos_attention: Float[Tensor, "layer head"]
    sink_fraction: Float[Tensor, "layer head"]  # share of prompts where α_0 > ε, per head
    gu_sink_metric: float  # Sink_0^ε averaged over prompts
    received: Float[Tensor, "layer head position"]  # mean α_k over prompts that reach k
    resid_norm: Float[Tensor, "layer position"]
    position_counts: Tensor
    secondary_sinks: tuple[SecondarySink, ...]
    massive: tuple[MassiveActivation, ...]
    example_tokens: tuple[str, ...]
    example_resid_norm: Float[Tensor, "layer position"]
    epsilon: float
    max_tokens: int
    tau: float
    n_prompts: int
    n_tokens: int
    params: dict = field(default_factory=dict)

    @property
    def layer_bos_mass(self) -> Float[Tensor, " layer"]:
        """Head-averaged attention to the first token, per layer."""
        return self.bos_attention.mean(dim=1)

    def top_received_position(self) -> Tensor:
        """Per (layer, head) the key position with the highest mean attention received."""
        return self.received.argmax(dim=-1)

    def to_frame(self) -> pd.DataFrame:
        """Tidy long-format rows (``layer, head, position, token, metric, value`` + extras)."""
        n_layers, n_heads, n_pos = self.received.shape
        rows: list[dict] = []
        top = self.top_received_position()
        for layer in range(n_layers):
            for head in range(n_heads):
                rows.append(dict(layer=layer, head=head, position=0, metric="bos_attention",
                                 value=float(self.bos_attention[layer, head])))
                rows.append(dict(layer=layer, head=head, metric="sink_fraction",
                                 value=float(self.sink_fraction[layer, head])))
                rows.append(dict(layer=layer, head=head, position=int(top[layer, head]), metric="top_received_score",
                                 value=float(self.received[layer, head, top[layer, head]])))
            rows.append(dict(layer=layer, position=0, metric="layer_bos_mass", value=float(self.layer_bos_mass[layer])))
        received = self.received.numpy()
        layer_idx, head_idx, pos_idx = np.meshgrid(range(n_layers), range(n_heads), range(n_pos), indexing="ij")
        received_frame = pd.DataFrame(
            dict(layer=layer_idx.ravel(), head=head_idx.ravel(), position=pos_idx.ravel(),
                 metric="attention_received", value=received.ravel())
        )
        norm = self.resid_norm.numpy()
        l_idx, p_idx = np.meshgrid(range(norm.shape[0]), range(norm.shape[1]), indexing="ij")
        norm_frame = pd.DataFrame(dict(layer=l_idx.ravel(), position=p_idx.ravel(), metric="resid_norm", value=norm.ravel()))
        rows.append(dict(metric="gu_sink_metric", value=self.gu_sink_metric))
        for sink in self.secondary_sinks:
            base = dict(layer=sink.birth_layer, position=sink.position, token=sink.token, prompt=sink.prompt)
            rows.append(dict(base, metric="secondary_sink_peak", value=sink.peak_score))
            rows.append(dict(base, metric="secondary_sink_lifetime", value=sink.lifetime))
        for entry in self.massive:
            rows.append(dict(layer=entry.layer, position=entry.position, token=entry.token, prompt=entry.prompt,
                             dim=entry.dim, metric="massive_activation", value=entry.value,
                             median_abs=entry.median_abs, ratio=entry.ratio, flagged=entry.flagged))
        frame = pd.concat([pd.DataFrame.from_records(rows), received_frame, norm_frame], ignore_index=True)
        tidy = tidy_frame(frame, extra_columns=("prompt", "dim"))
        for column in ("prompt", "dim"):
            if column in tidy:
                tidy[column] = tidy[column].astype("Int64")
        if "flagged" in tidy:
            tidy["flagged"] = tidy["flagged"].astype("boolean")
        return tidy


class _SinkReducer(Reducer):
    """Per-layer attention received and residual statistics, reduced batch by batch."""

    def __init__(self, lm: LoadedModel, max_tokens: int, epsilon: float, tau: float, min_queries: int,
                 top_k: int, massive_abs: float, massive_ratio: float) -> None:
        n_layers, n_heads = lm.n_layers, lm.n_heads
        self.is_encoder = lm.is_encoder  # not the model: a reducer travels with a remote pass
        self.n_layers = n_layers
        self.epsilon, self.tau, self.min_queries = epsilon, tau, min_queries
        self.top_k, self.massive_abs, self.massive_ratio = top_k, massive_abs, massive_ratio
        self.hook_names = tuple(
            [f"blocks.{layer}.attn.hook_pattern" for layer in range(n_layers)]
            + [f"blocks.{layer}.hook_resid_post" for layer in range(n_layers)]
        )
        self.bos_sum = torch.zeros(n_layers, n_heads, dtype=torch.float64)
        self.indicator_sum = torch.zeros(n_layers, n_heads, dtype=torch.float64)
        self.received_sum = torch.zeros(n_layers, n_heads, max_tokens, dtype=torch.float64)
        self.position_counts = torch.zeros(max_tokens, dtype=torch.float64)
        self.norm_sum = torch.zeros(n_layers, max_tokens, dtype=torch.float64)
        self.n_prompts = 0
        self.layer_scores: Tensor | None = None  # [batch, layer, pos] head-averaged, t>k
        self.top: list[list[tuple[float, int, int, int, float]]] = [[] for _ in range(n_layers)]
        self.events: list[tuple[int, int, int, int, float, int]] = []
        self.example: tuple[list[int], Tensor] | None = None
        self.example_norm = torch.zeros(n_layers, max_tokens)
        self.token_rows: dict[int, list[int]] = {}

    def begin_batch(self, batch: TokenBatch) -> None:
        width = batch.tokens.shape[1]
        self.layer_scores = torch.zeros(len(batch), self.n_layers, width, dtype=torch.float64)

    def update(self, hook_name: str, activation: Tensor, batch: TokenBatch) -> None:
        layer = int(hook_name.split(".")[1])
        mask = batch.attention_mask.to(activation.device)
        if hook_name.endswith("hook_pattern"):
            self._pattern(layer, activation.double(), mask, batch)
        else:
            self._resid(layer, activation, mask, batch)

    def _pattern(self, layer: int, pattern: Tensor, mask: Tensor, batch: TokenBatch) -> None:
        causal = not self.is_encoder
        received = attention_received(pattern, mask, include_diagonal=True, causal=causal)  # [b, h, k]
        width = received.shape[-1]
        alpha0 = received[:, :, 0]
        self.bos_sum[layer] += alpha0.sum(dim=0).cpu()
        self.indicator_sum[layer] += (alpha0 > self.epsilon).double().sum(dim=0).cpu()
        self.received_sum[layer, :, :width] += received.sum(dim=0).cpu()
        if layer == 0:
            lengths = batch.lengths
            positions = torch.arange(width)
            self.position_counts[:width] += (positions[None, :] < lengths[:, None]).double().sum(dim=0)
            self.n_prompts += len(batch)
        strict = attention_received(pattern, mask, include_diagonal=False, causal=causal).mean(dim=1)  # [b, k]
        assert self.layer_scores is not None
        self.layer_scores[:, layer, :] = strict.cpu()

    def _resid(self, layer: int, resid: Tensor, mask: Tensor, batch: TokenBatch) -> None:
        width = resid.shape[1]
        norms = resid.float().norm(dim=-1) * mask  # [b, pos]
        self.norm_sum[layer, :width] += norms.double().sum(dim=0).cpu()
        if 0 in batch.prompt_index:
            row = batch.prompt_index.index(0)
            self.example_norm[layer, :width] = norms[row].cpu()
        magnitude = resid.float().abs().masked_fill(~mask.bool()[:, :, None], -1.0)
        flat = magnitude.flatten()
        k = min(self.top_k * len(batch), flat.numel())
        values, index = flat.topk(k)
        d_model = resid.shape[-1]
        for value, flat_index in zip(values.tolist(), index.tolist(), strict=True):
            if value < 0:
                continue
            row, rest = divmod(flat_index, width * d_model)
            position, dim = divmod(rest, d_model)
            median = float(resid[row, position].float().abs().median())
            signed = float(resid[row, position, dim])
            self.top[layer].append((abs(signed), batch.prompt_index[row], position, dim, median))
        # The first token's state is the same in every prompt (causal models), so keep distinct
        # (position, dim) sites: the largest occurrence of each. Occurrences equal up to float rounding
        # (1e-5 relative: batch composition changes the last bits) go to the lowest prompt index, so the
        # reported prompt does not depend on rounding.
        best: dict[tuple[int, int], tuple[float, int, int, int, float]] = {}
        for entry in self.top[layer]:
            site = (entry[2], entry[3])
            old = best.get(site)
            tied = old is not None and abs(entry[0] - old[0]) <= 1e-5 * max(abs(old[0]), 1e-12)
            if old is None or (entry[0] > old[0] and not tied) or (tied and entry[1] < old[1]):
                best[site] = entry
        self.top[layer] = sorted(best.values(), key=lambda e: -e[0])[: self.top_k]

    def end_batch(self, batch: TokenBatch, logits: Tensor | None) -> None:
        assert self.layer_scores is not None
        scores = self.layer_scores.numpy()  # [b, L, pos]
        for row in range(len(batch)):
            length = int(batch.lengths[row])
            last_candidate = length - self.min_queries  # k needs ≥ min_queries queries t>k
            for position in range(1, max(1, last_candidate)):
                series = scores[row, :, position]
                above = series >= self.tau
                layer = 0
                while layer < self.n_layers:
                    if above[layer] and (layer == 0 or not above[layer - 1]):
                        end = layer
                        while end + 1 < self.n_layers and above[end + 1]:
                            end += 1
                        window = series[layer : end + 1]
                        peak_offset = int(np.argmax(window))
                        self.events.append((batch.prompt_index[row], position, layer, end - layer + 1,
                                            float(window[peak_offset]), layer + peak_offset))
                        layer = end + 1
                    else:
                        layer += 1
        self.layer_scores = None

    def result(self) -> None:
        return None


def attention_sinks(
    lm: LoadedModel,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    *,
    epsilon: float = 0.3,
    max_tokens: int = 64,
    tau: float = 0.2,
    min_queries: int = 8,
    top_k: int = 3,
    massive_abs: float = 100.0,
    massive_ratio: float = 1000.0,
    batch_size: int = 8,
    progress: bool | None = None,
) -> SinkScores:
    """Measure first-token sinks, secondary sinks and massive activations over a prompt set.

    Args:
        lm: a loaded model (decoder or encoder; for encoders position 0 is ``[CLS]``).
        prompts: texts (or token id lists with BOS); each is cut to ``max_tokens`` tokens (BOS included),
            Gu et al.'s T.
        epsilon: Gu et al.'s threshold on α_0 (default 0.3).
        tau: secondary-sink threshold on head-averaged attention received (default 0.2).
        min_queries: a secondary-sink candidate needs at least this many later queries.
        top_k: massive-activation entries kept per layer.

    Examples:
        >>> import interp
        >>> scores = attention_sinks(interp.load_model("tiny-llama"), ["a b c d e f g h i j"], progress=False)
        >>> 0.0 <= scores.gu_sink_metric <= 1.0
        True
    """
    if not 0.0 < epsilon < 1.0:
        raise OptionError(f"epsilon must be in (0, 1), got {epsilon}")
    if not 0.0 < tau < 1.0:
        raise OptionError(f"tau must be in (0, 1), got {tau}")
    if max_tokens < 2 or max_tokens > lm.info.n_ctx:
        raise OptionError(f"max_tokens (T) must be between 2 and the context window {lm.info.n_ctx}, got {max_tokens}")
    if is_text_prompts(prompts):
        token_rows = tokenize_prompts(lm, prompts, max_tokens=max_tokens)
    else:  # already token ids (BOS included); none at all is refused by run_probe as by tokenize_prompts
        token_rows = [list(row)[:max_tokens] for row in prompts]
    reducer = _SinkReducer(lm, max_tokens, epsilon, tau, min_queries, top_k, massive_abs, massive_ratio)
    n_tokens = run_probe(lm, token_rows, [reducer], batch_size=batch_size, progress=progress,
                         description="attention sinks")
    n = max(reducer.n_prompts, 1)
    counts = reducer.position_counts.clamp(min=1)
    received = (reducer.received_sum / counts).float()
    resid_norm = (reducer.norm_sum / counts).float()
    gu_metric = float(reducer.indicator_sum.sum() / (n * lm.n_layers * lm.n_heads))

    def token_text(prompt: int, position: int) -> str:
        return lm.tokenizer.decode([token_rows[prompt][position]])

    secondary = tuple(
        SecondarySink(prompt=p, position=k, token=token_text(p, k), birth_layer=birth, lifetime=life,
                      peak_score=peak, peak_layer=peak_layer)
        for p, k, birth, life, peak, peak_layer in sorted(reducer.events, key=lambda e: -e[4])
    )
    massive = []
    for layer, entries in enumerate(reducer.top):
        for value, prompt, position, dim, median in entries:
            ratio = value / median if median > 0 else float("inf")
            massive.append(MassiveActivation(
                layer=layer, prompt=prompt, position=position, dim=dim, token=token_text(prompt, position),
                value=value, median_abs=median, ratio=ratio,
                flagged=bool(value > massive_abs and ratio >= massive_ratio)))
    example_length = len(token_rows[0])
    return SinkScores(
        bos_attention=(reducer.bos_sum / n).float(),
        sink_fraction=(reducer.indicator_sum / n).float(),
        gu_sink_metric=gu_metric,
        received=received,
        resid_norm=resid_norm,
        position_counts=reducer.position_counts,
        secondary_sinks=secondary,
        massive=tuple(massive),
        example_tokens=tuple(lm.token_strings(token_rows[0])),
        example_resid_norm=reducer.example_norm[:, :example_length].clone(),
        epsilon=epsilon,
        max_tokens=max_tokens,
        tau=tau,
        n_prompts=reducer.n_prompts,
        n_tokens=n_tokens,
        params=dict(epsilon=epsilon, max_tokens=max_tokens, tau=tau, min_queries=min_queries, top_k=top_k,
                    massive_abs=massive_abs, massive_ratio=massive_ratio),
    )
