"""Attention sparsity: certified top-k truncation, output-aware KV-eviction scores, effective rank.

Method (Tzachristas et al., certified top-k; Gu, Liang, Zhao & Diao 2025, OBCache, arXiv 2510.07651;
Roy & Vetterli 2007; docs/analyses/attention-sparsity.md):

* Certified top-k (Tzachristas et al.). For one query, ``P = softmax(s)`` over the keys it can see, ``H`` the
  k largest logits, ``T`` the rest and ``P̂`` the renormalised truncation. Then ``TV(P, P̂) = P(T) =: τ``
  (the tail mass), ``TV = 1 − exp(−KL(P̂‖P))``, and the attention output moves by exactly
  ``Attn − Attn_k = τ (μ_T − μ_H)`` (``μ`` the attention-weighted mean value of each set), so
  ``‖Attn − Attn_k‖ ≤ τ · diam_{H,T}``. ``k_ε`` is the smallest k with ``τ ≤ ε``; ``n / k_ε`` is the factor
  of keys saved. The single-gap bound is ``τ ≤ 1 / (1 + k/(n−k) · e^{Δ_k})`` with ``Δ_k = s_(k) − s_(k+1)``.
  Under Gaussian logits ``s ~ N(μ, σ²)``, ``k_ε / n ≈ Φ_c(σ + Φ⁻¹(ε))``.
* KV-cache eviction scores over a window of the last ``W`` queries (H2O / SnapKV style). Accumulated
  attention ``Σ_i a_ij`` (the heuristic) against the output-aware saliencies of OBCache (Gu, Liang, Zhao &
  Diao 2025): the squared perturbation of each window query's output when token ``j`` is pruned, summed
  over the window — value pruning (``v_j → 0``: ``a_ij² ‖v_j‖²``), key pruning (``k_j → 0``, so its logit
  becomes 0: ``((c_i − a_ij)/(1 − a_ij + c_i))² ‖v_j − o_i‖²`` with ``c_i = e^{−logsumexp(s_i)}``) and joint
  key-value pruning (the token leaves the softmax: ``a_ij² ‖o_i − v_j‖² / (1 − a_ij)²``). All three are the
  exact single-token perturbations (the paper's own closed forms, which are second-order OBD expansions,
  were not available to check against). For a cache budget β the lowest-scored
  ``(1 − β)`` share of the evictable keys (all but the window) is evicted under each score, and the
  root-mean-square relative output error of the window queries is measured by recomputing the
  renormalised attention over the kept keys.
* Attention effective rank (Roy & Vetterli 2007; used by the 2026 self-reference paper): with
  ``p_i = σ_i / Σσ`` the singular values of a head's attention matrix, ``erank = exp(−Σ p_i log p_i)``;
  and the attention entropy ``−Σ_j a_ij log a_ij`` of each query.

Everything is reduced in one forward pass from ``hook_attn_scores`` (masked entries are ``−inf``: causal
mask, padding, local windows), ``hook_pattern`` and ``hook_v`` of every layer; no cache of activations is
kept. Under grouped-query attention ``hook_v`` has ``n_key_value_heads`` heads (TransformerLens 3.9 leaves
it grouped unless ``cfg.ungroup_grouped_query_attention``); query head ``h`` reads KV head
``h // (n_heads // n_kv_heads)``. Padded queries and keys never count.

Examples:
    >>> import interp
    >>> from interp.attribution.sparsity import attention_sparsity
    >>> lm = interp.load_model("tiny-gpt2")
    >>> text = "The quick brown fox jumps over the lazy dog by the river. " * 2
    >>> scores = attention_sparsity(lm, [text], window=8, min_keys=4, progress=False)
    >>> scores.keys_saved.shape        # [layer, head, ε]: the ε grid, the reported ε included
    torch.Size([2, 4, 9])
    >>> scores.reported_epsilons
    (0.05, 0.01)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import OptionError
from interp.models import LoadedModel, TokenBatch
from interp.probes import Reducer, is_text_prompts, run_probe, tokenize_prompts
from interp.results import tidy_frame

#: Eviction scores, heuristic first.
SCORES: tuple[str, ...] = ("accumulated", "value", "key", "joint")
#: Scores that use the values and outputs (OBCache).
OUTPUT_AWARE: tuple[str, ...] = ("value", "key", "joint")
DEFAULT_EPSILON_GRID: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
_SAFE = 1e-6  # floor on 1 − mass to keep a renormalisation finite when almost all mass is removed


# ----------------------------------------------------------------------------------------------------
# Pure maths on one or many queries (last axis = keys). Masked keys are −inf logits / 0 probabilities.
# ----------------------------------------------------------------------------------------------------


def sort_descending(values: Tensor) -> Tensor:
    """Values sorted along the last axis, largest first (NumPy's sort on CPU: several times faster)."""
    if values.device.type == "cpu" and values.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(np.ascontiguousarray(np.sort(values.numpy(), axis=-1)[..., ::-1]))
    return torch.sort(values, dim=-1, descending=True).values


def _sort_ascending(values: Tensor) -> Tensor:
    if values.device.type == "cpu" and values.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(np.sort(values.numpy(), axis=-1))
    return torch.sort(values, dim=-1).values


def sorted_probabilities(logits: Float[Tensor, "... n"]) -> tuple[Tensor, Tensor, Tensor]:
    """``(sorted logits, sorted probabilities, logsumexp)`` of ``softmax(logits)``, largest first."""
    ordered = sort_descending(logits)
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    probs = torch.exp(ordered - lse).nan_to_num(0.0)
    return ordered, probs, lse


def tail_masses(sorted_probs: Float[Tensor, "... n"]) -> Float[Tensor, "... n"]:
    """``tail[..., k] = Σ_{r ≥ k} P_(r)``: the mass outside the top k (suffix sums, exact for small tails)."""
    return sorted_probs.flip(-1).cumsum(-1).flip(-1)


def tail_mass(logits: Float[Tensor, "... n"], k: int) -> Float[Tensor, "..."]:
    """τ: the attention mass outside the k largest logits (0 when k ≥ the number of keys).

    Examples:
        >>> float(tail_mass(torch.tensor([2.0, 1.0, 0.0]), 1))  # doctest: +ELLIPSIS
        0.334...
    """
    if k < 0:
        raise OptionError(f"k must be non-negative, got {k}")
    _, probs, _ = sorted_probabilities(logits)
    if k >= probs.shape[-1]:
        return torch.zeros(probs.shape[:-1], dtype=probs.dtype, device=probs.device)
    return tail_masses(probs)[..., k]


def topk_mask(logits: Float[Tensor, "... n"], k: int | Tensor) -> Tensor:
    """Boolean mask of the k largest logits per query (``k`` an int or a per-query tensor)."""
    order = torch.sort(logits, dim=-1, descending=True).indices
    positions = torch.arange(logits.shape[-1], device=order.device)
    ranks = torch.empty_like(order).scatter_(-1, order, positions.expand_as(order))
    k_tensor = torch.as_tensor(k, device=order.device)
    return ranks < (k_tensor[..., None] if k_tensor.ndim else k_tensor)


def truncate_topk(logits: Float[Tensor, "... n"], k: int | Tensor) -> Float[Tensor, "... n"]:
    """``P̂``: the softmax restricted to the top-k keys and renormalised."""
    probs = torch.softmax(logits, dim=-1)
    kept = probs * topk_mask(logits, k)
    return kept / kept.sum(dim=-1, keepdim=True)


def total_variation(p: Tensor, q: Tensor) -> Tensor:
    """``½ Σ |p − q|`` over the last axis."""
    return 0.5 * (p - q).abs().sum(dim=-1)


def kl_divergence(p: Tensor, q: Tensor) -> Tensor:
    """``KL(p ‖ q) = Σ p log(p/q)`` over the last axis (terms with ``p = 0`` are 0)."""
    safe_q = torch.where(p > 0, q, torch.ones_like(q))
    safe_p = torch.where(p > 0, p, torch.ones_like(p))
    return torch.where(p > 0, p * (safe_p.log() - safe_q.log()), torch.zeros_like(p)).sum(dim=-1)


def k_epsilon(logits: Float[Tensor, "... n"], epsilon: float | Sequence[float]) -> Tensor:
    """``k_ε = min{k : τ_k ≤ ε}``: the fewest top keys whose tail mass is within the TV budget ε.

    With a sequence of ε the result gains a trailing axis, one entry per ε.

    Examples:
        >>> int(k_epsilon(torch.tensor([5.0, 0.0, 0.0, 0.0]), 0.05))
        1
    """
    _, probs, _ = sorted_probabilities(logits)
    return _k_from_sorted(probs, epsilon)


def _k_from_sorted(sorted_probs: Tensor, epsilon: float | Sequence[float]) -> Tensor:
    scalar = isinstance(epsilon, float | int)
    eps = torch.tensor([float(epsilon)] if scalar else [float(e) for e in epsilon], dtype=sorted_probs.dtype,
                       device=sorted_probs.device)
    ascending = sorted_probs.flip(-1).cumsum(-1).contiguous()  # ascending[j] = tail mass outside the top n−1−j
    n = sorted_probs.shape[-1]
    at_or_below = torch.searchsorted(ascending, eps.expand(*ascending.shape[:-1], -1).contiguous(), right=True)
    k = n - at_or_below
    return k[..., 0] if scalar else k


def single_gap_bound(logits: Float[Tensor, "... n"], k: int) -> Float[Tensor, "..."]:
    """Deterministic bound ``τ_k ≤ 1 / (1 + k/(n−k) · e^{Δ_k})``, ``Δ_k = s_(k) − s_(k+1)`` (0 if k ≥ n)."""
    ordered = sort_descending(logits)
    n = torch.isfinite(ordered).sum(dim=-1)
    return _gap_bound_from_sorted(ordered, n, k)


def _gap_bound_from_sorted(ordered: Tensor, n: Tensor, k: int) -> Tensor:
    if k < 1 or k >= ordered.shape[-1]:
        return torch.zeros(ordered.shape[:-1], dtype=ordered.dtype, device=ordered.device)
    gap = ordered[..., k - 1] - ordered[..., k]
    rest = (n - k).to(ordered.dtype)
    bound = 1.0 / (1.0 + (k / rest.clamp(min=1)) * torch.exp(gap.clamp(max=80.0)))
    return torch.where(n > k, bound, torch.zeros_like(bound))


def gaussian_law_kept_fraction(sigma: Tensor | float, epsilon: float) -> Tensor:
    """Tzachristas et al.'s Gaussian-logit law: ``k_ε / n ≈ Φ_c(σ + Φ⁻¹(ε))``.

    Examples:
        >>> round(float(gaussian_law_kept_fraction(1.0, 0.05)), 4)
        0.7405
    """
    sigma_t = torch.as_tensor(sigma, dtype=torch.float64)
    return 1.0 - torch.special.ndtr(sigma_t + torch.special.ndtri(torch.tensor(float(epsilon), dtype=torch.float64)))


@dataclass(frozen=True)
class TruncationError:
    """The exact decomposition of the top-k output error for a batch of queries."""

    difference: Float[Tensor, "... d"]  # Attn − Attn_k
    tau: Float[Tensor, "..."]
    mu_head: Float[Tensor, "... d"]
    mu_tail: Float[Tensor, "... d"]
    diameter: Float[Tensor, "..."]  # max_{i∈H, j∈T} ‖v_i − v_j‖ (0 when T is empty)

    @property
    def bound(self) -> Tensor:
        """``τ · diam_{H,T}``."""
        return self.tau * self.diameter


def topk_output_error(logits: Float[Tensor, "... n"], values: Float[Tensor, "n d"], k: int | Tensor) -> TruncationError:
    """Output error of keeping the top-k keys, with the factors of ``Attn − Attn_k = τ (μ_T − μ_H)``.

    Brute force (builds the head/tail masks explicitly); meant for checks and small cases.
    """
    probs = torch.softmax(logits, dim=-1)
    head = topk_mask(logits, k) & (probs > 0)
    tail = ~head & torch.isfinite(logits)
    full = probs @ values
    truncated = truncate_topk(logits, k) @ values
    p_head = (probs * head).sum(-1, keepdim=True)
    p_tail = (probs * tail).sum(-1, keepdim=True)
    mu_head = (probs * head) @ values / p_head
    mu_tail = (probs * tail) @ values / p_tail.clamp(min=torch.finfo(probs.dtype).tiny)
    distances = torch.cdist(values[None], values[None])[0]  # [n, n]
    pair = head[..., :, None] & tail[..., None, :]
    diameter = torch.where(pair, distances, torch.zeros_like(distances)).amax(dim=(-1, -2))
    return TruncationError(full - truncated, p_tail[..., 0], mu_head, mu_tail, diameter)


def obcache_saliencies(logits: Float[Tensor, "q n"], values: Float[Tensor, "n d"]) -> dict[str, Tensor]:
    """Per query and key, the squared output perturbation of pruning that key (``[q, n]`` each).

    ``accumulated`` is the attention weight itself (the heuristic). ``value``: ``v_j → 0``; ``key``:
    ``k_j → 0`` (logit 0); ``joint``: key and value pruned (the token leaves the softmax). Invisible keys
    (−inf logits) get 0.

    Examples:
        >>> s = obcache_saliencies(torch.tensor([[1.0, 0.0]]), torch.eye(2))
        >>> sorted(s)
        ['accumulated', 'joint', 'key', 'value']
    """
    probs = torch.softmax(logits, dim=-1)
    outputs = probs @ values
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    visible = torch.isfinite(logits)
    dist2 = ((outputs[:, None, :] - values[None, :, :]) ** 2).sum(-1)
    norms2 = (values**2).sum(-1)
    return _saliency_terms(probs, lse, norms2[None, :].expand_as(probs), dist2, visible)


def _saliency_terms(a: Tensor, lse: Tensor, norms2: Tensor, dist2: Tensor, visible: Tensor) -> dict[str, Tensor]:
    """Shared closed forms (also used by the streaming reducer on whole windows)."""
    c = torch.exp(-lse)
    key_factor = (c - a) / (1.0 - a + c)
    return {
        "accumulated": a,
        "value": a * a * norms2,
        "key": torch.where(visible, key_factor * key_factor * dist2, torch.zeros_like(a)),
        "joint": a * a * dist2 / (1.0 - a).clamp(min=_SAFE) ** 2,
    }


def evicted_output(logits: Float[Tensor, "q n"], values: Float[Tensor, "n d"], evicted: Tensor) -> Tensor:
    """Brute force: attention outputs recomputed after removing the ``evicted`` keys from the softmax."""
    kept_logits = logits.masked_fill(evicted, float("-inf"))
    return torch.softmax(kept_logits, dim=-1) @ values


def eviction_errors_from_order(
    probs: Float[Tensor, "b h q n"],
    values: Float[Tensor, "b kv n d"],
    order: Tensor,
    evict_counts: Tensor,
    outputs: Tensor | None = None,
) -> Float[Tensor, "b h q budget"]:
    """Squared output errors ``‖o' − o‖²`` of evicting the first ``evict_counts[..., j]`` keys of ``order``.

    ``probs`` ``[b, h, q, n]``; ``values`` ``[b, kv, n, d]`` (query head h reads KV head h // (h/kv));
    ``order`` ``[b, h, n]`` lists keys in eviction order; ``evict_counts`` ``[b | 1, h | 1, budget]`` is
    non-decreasing along the budget axis. Evicted sets are nested prefixes of ``order``, so each segment of
    keys is multiplied once: ``o' = (o − Σ_E a_j v_j) / (1 − Σ_E a_j)``.
    """
    b, h, q, n = probs.shape
    kv, d = values.shape[1], values.shape[-1]
    if outputs is None:
        outputs = (probs.reshape(b, kv, (h // kv) * q, n) @ values).reshape(b, h, q, d)
    counts = evict_counts.expand(b, h, evict_counts.shape[-1])
    most = int(counts.max())
    a_sorted = probs.gather(-1, order[:, :, None, :most].expand(b, h, q, most))
    # Row indexing copies contiguous value vectors (several times faster than gather along n).
    arange = functools.partial(torch.arange, device=probs.device)
    source = (arange(b)[:, None] * kv + arange(h)[None, :] // (h // kv))[:, :, None]
    v_sorted = values.reshape(b * kv, n, d)[source, order[..., :most]]  # [b, h, most, d]
    removed = torch.zeros_like(outputs)
    removed_mass = torch.zeros(outputs.shape[:-1], dtype=probs.dtype, device=probs.device)
    previous = torch.zeros(b, h, dtype=torch.long, device=probs.device)
    errors = []
    for j in range(counts.shape[-1]):
        current = counts[..., j].long()
        low, high = int(previous.min()), int(current.max())
        if high > low:
            columns = arange(low, high)
            in_segment = (columns >= previous[..., None]) & (columns < current[..., None])  # [b, h, width]
            segment = a_sorted[..., low:high] * in_segment[:, :, None, :].to(probs.dtype)
            removed = removed + segment @ v_sorted[:, :, low:high, :]
            removed_mass = removed_mass + segment.sum(-1)
        numerator = removed_mass[..., None] * outputs - removed
        errors.append((numerator * numerator).sum(-1) / (1.0 - removed_mass).clamp(min=_SAFE) ** 2)
        previous = torch.maximum(previous, current)
    return torch.stack(errors, dim=-1)


def head_tail_diameter(
    values: Float[Tensor, "r kv n d"],
    head_set: Tensor,
    tail_set: Tensor,
    last_key: Tensor,
) -> Float[Tensor, "r h q"]:
    """``diam_{H,T} = max_{i∈H, j∈T} ‖v_i − v_j‖`` for every query (0 when T is empty), exactly.

    ``head_set``/``tail_set`` are ``[r, h, q, n]`` masks (query head h reads KV head h // group) and
    ``last_key`` ``[r, q]`` the last key position each query sees (its own position in a causal model, the
    last real token in an encoder). Fast path: with ``R(i)`` the largest distance from key i to any key up
    to ``last_key`` and ``i*`` the head key with the largest ``R``, the diameter equals ``R(i*)`` whenever
    ``i*``'s farthest key lies in the tail (``R(i*)`` bounds the diameter and is then attained); the
    remaining queries (and keys hidden by local windows) are computed pairwise.
    """
    r, h, q, n = head_set.shape
    group = h // values.shape[1]
    gram = values @ values.transpose(-1, -2)  # [r, kv, n, n]
    sq = torch.diagonal(gram, dim1=-2, dim2=-1)
    dist2 = (sq[..., :, None] + sq[..., None, :] - 2.0 * gram).clamp(min=0.0)
    reach, farthest = dist2.cummax(dim=-1)  # farthest key among the first j + 1
    column = last_key[:, None, None, :].expand(r, values.shape[1], n, q)
    reach, farthest = reach.gather(-1, column), farthest.gather(-1, column)  # [r, kv, n(i), q]
    reach = _per_query_head(reach, h).transpose(-1, -2)  # [r, h, q, n(i)]
    farthest = _per_query_head(farthest, h).transpose(-1, -2)
    candidate = reach.masked_fill(~head_set, -1.0)
    upper, best_head = candidate.max(dim=-1)  # [r, h, q]
    partner = farthest.gather(-1, best_head[..., None])[..., 0]
    exact = tail_set.gather(-1, partner[..., None])[..., 0]
    diameter2 = torch.where(exact, upper, torch.zeros_like(upper))
    has_tail = tail_set.any(-1)
    for rr, hh, qq in (~exact & has_tail).nonzero().tolist():
        pair = dist2[rr, hh // group][head_set[rr, hh, qq]][:, tail_set[rr, hh, qq]]
        diameter2[rr, hh, qq] = pair.max()
    return torch.where(has_tail, diameter2, torch.zeros_like(diameter2)).sqrt()


def effective_rank(matrix: Float[Tensor, "... m n"]) -> Tensor:
    """Roy–Vetterli effective rank ``exp(−Σ p_i log p_i)``, ``p_i = σ_i / Σσ`` (zero rows/columns add nothing).

    The singular values are the square roots of the eigenvalues of the float64 Gram matrix ``A Aᵀ`` (the
    smaller side); values below float64 rounding of the largest are 0 (on peaked 256-key patterns the result
    is within 3e-6 relative of a full float64 SVD's, where a float32 SVD is 0.2% off). On the
    CPU the symmetric eigensolver is NumPy's: on a batch of 256-key patterns it takes about 3 ms per matrix,
    where torch's batched ``eigvalsh`` or ``svdvals`` with two threads take 9–20 ms (measured, 2 cores).

    Examples:
        >>> round(float(effective_rank(torch.eye(4))), 4)
        4.0
    """
    wide = matrix.double()
    gram = wide @ wide.transpose(-1, -2) if wide.shape[-2] <= wide.shape[-1] else wide.transpose(-1, -2) @ wide
    if gram.device.type == "cpu":
        eigen = torch.from_numpy(np.linalg.eigvalsh(gram.numpy()))
    else:
        eigen = torch.linalg.eigvalsh(gram)
    floor = eigen.amax(dim=-1, keepdim=True) * (eigen.shape[-1] * torch.finfo(torch.float64).eps)
    singular = torch.where(eigen > floor, eigen, torch.zeros_like(eigen)).sqrt()
    p = singular / singular.sum(dim=-1, keepdim=True).clamp(min=torch.finfo(torch.float64).tiny)
    entropy = torch.special.entr(p).sum(-1)  # −Σ p log p, with 0 log 0 = 0
    return torch.exp(entropy)


def attention_entropy(logits: Float[Tensor, "... n"]) -> Tensor:
    """``−Σ_j a_j log a_j`` in nats (masked keys contribute 0)."""
    log_probs = torch.log_softmax(logits, dim=-1)
    probs = log_probs.exp()
    return -torch.where(probs > 0, probs * log_probs, torch.zeros_like(probs)).sum(-1)


# ----------------------------------------------------------------------------------------------------
# Result
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SparsityScores:
    """Everything the sparsity probe measured. L = layers, H = heads, E = ε values, S = scores, B = budgets.

    Averages over queries use the real queries that see at least ``min_keys`` keys; window quantities use
    the last ``window`` queries of each prompt of at least ``2 · window`` tokens.
    """

    epsilons: tuple[float, ...]  # the ε grid (reported ε values included)
    reported_epsilons: tuple[float, ...]
    kept_fraction: Float[Tensor, "layer head eps"]  # mean k_ε / n
    keys_saved: Float[Tensor, "layer head eps"]  # mean n / k_ε
    keys_saved_total: Float[Tensor, "layer head eps"]  # Σ n / Σ k_ε
    law_kept_fraction: Float[Tensor, "layer head eps"]  # Φ_c(σ_h + Φ⁻¹(ε)), σ_h fitted per head
    law_kept_fraction_per_query: Float[Tensor, "layer head eps"]  # mean_i Φ_c(σ_i + Φ⁻¹(ε))
    logit_sigma: Float[Tensor, "layer head"]  # sqrt(mean_i Var_j s_ij)
    tail_at_k: Float[Tensor, "layer head"]  # mean τ_k (queries with n > k)
    gap_bound_at_k: Float[Tensor, "layer head"]  # mean single-gap bound at k
    truncation_error: Float[Tensor, "layer head"]  # mean ‖Attn − Attn_kε‖ (window, first reported ε)
    truncation_bound: Float[Tensor, "layer head"]  # mean τ · diam_{H,T}
    truncation_tau: Float[Tensor, "layer head"]
    output_norm: Float[Tensor, "layer head"]  # mean ‖o‖ of window queries
    eviction_error: Float[Tensor, "score budget layer head"]  # sqrt(Σ‖Δo‖² / Σ‖o‖²)
    sink_evicted: Float[Tensor, "score budget layer head"]  # share of prompts whose position 0 is evicted
    bos_attention: Float[Tensor, "layer head"]  # Gu et al.'s α₀ (sink marker)
    entropy: Float[Tensor, "layer head"]
    normalized_entropy: Float[Tensor, "layer head"]  # entropy / log n
    effective_rank: Float[Tensor, "layer head"]
    effective_rank_fraction: Float[Tensor, "layer head"]  # erank / n
    budgets: tuple[float, ...]
    scores: tuple[str, ...]
    k: int
    window: int
    min_keys: int
    n_prompts: int
    n_tokens: int
    n_window_prompts: int
    n_rank_prompts: int
    params: dict = field(default_factory=dict)

    def epsilon_index(self, epsilon: float) -> int:
        for index, value in enumerate(self.epsilons):
            if math.isclose(value, epsilon, rel_tol=1e-9):
                return index
        raise OptionError(f"epsilon {epsilon} was not measured: choose one of {list(self.epsilons)}")

    def mean_keys_saved(self, epsilon: float) -> tuple[float, float]:
        """(mean over heads of mean n/k_ε, mean over heads of Σn/Σk_ε) at ``epsilon``."""
        index = self.epsilon_index(epsilon)
        return float(self.keys_saved[:, :, index].mean()), float(self.keys_saved_total[:, :, index].mean())

    def mean_eviction_error(self) -> Float[Tensor, "score budget"]:
        """Relative eviction error averaged over heads (every head weighs the same)."""
        return self.eviction_error.mean(dim=(-1, -2))

    def eviction_ratio(self, score: str, budget: float) -> float:
        """Mean error of ``score`` over the mean error of accumulated attention at ``budget`` (< 1: better)."""
        means = self.mean_eviction_error()
        b = [i for i, x in enumerate(self.budgets) if math.isclose(x, budget)]
        if not b:
            raise OptionError(f"budget {budget} was not measured: choose one of {list(self.budgets)}")
        base = float(means[self.scores.index("accumulated"), b[0]])
        return float(means[self.scores.index(score), b[0]]) / base if base > 0 else float("nan")

    def to_frame(self) -> pd.DataFrame:
        """Tidy long-format rows (``layer, head, position, token, metric, value`` + epsilon/score/budget)."""
        n_layers, n_heads = self.logit_sigma.shape
        layer_idx, head_idx = np.meshgrid(range(n_layers), range(n_heads), indexing="ij")
        base = dict(layer=layer_idx.ravel(), head=head_idx.ravel())
        parts: list[pd.DataFrame] = []

        def add(metric: str, values: Tensor, **extra: object) -> None:
            parts.append(pd.DataFrame(dict(base, metric=metric, value=values.double().numpy().ravel(), **extra)))

        for e, eps in enumerate(self.epsilons):
            add("kept_fraction", self.kept_fraction[:, :, e], epsilon=eps)
            add("keys_saved", self.keys_saved[:, :, e], epsilon=eps)
            add("keys_saved_total", self.keys_saved_total[:, :, e], epsilon=eps)
            add("law_kept_fraction", self.law_kept_fraction[:, :, e], epsilon=eps)
            add("law_kept_fraction_per_query", self.law_kept_fraction_per_query[:, :, e], epsilon=eps)
        eps0 = self.reported_epsilons[0]
        add("truncation_error", self.truncation_error, epsilon=eps0)
        add("truncation_bound", self.truncation_bound, epsilon=eps0)
        add("truncation_tau", self.truncation_tau, epsilon=eps0)
        for name in ("logit_sigma", "bos_attention", "entropy", "normalized_entropy", "effective_rank",
                     "effective_rank_fraction", "output_norm"):
            add(name, getattr(self, name))
        add("tail_at_k", self.tail_at_k, k=self.k)
        add("gap_bound_at_k", self.gap_bound_at_k, k=self.k)
        for s, score in enumerate(self.scores):
            for b, budget in enumerate(self.budgets):
                add("eviction_error", self.eviction_error[s, b], score=score, budget=budget)
                add("sink_evicted", self.sink_evicted[s, b], score=score, budget=budget, position=0)
        frame = pd.concat(parts, ignore_index=True)
        tidy = tidy_frame(frame, extra_columns=("epsilon", "score", "budget", "k"))
        tidy["score"] = tidy["score"].astype("string")
        tidy["k"] = tidy["k"].astype("Int64")
        return tidy


# ----------------------------------------------------------------------------------------------------
# The streaming reducer
# ----------------------------------------------------------------------------------------------------


def _per_query_head(values_kv: Tensor, n_heads: int) -> Tensor:
    """``[b, kv, ...]`` → ``[b, n_heads, ...]``: query head h reads KV head h // group."""
    n_kv = values_kv.shape[1]
    return values_kv if n_kv == n_heads else values_kv.repeat_interleave(n_heads // n_kv, dim=1)


def _grouped_matmul(weights: Tensor, values_kv: Tensor) -> Tensor:
    """``weights [b, h, q, n] @ values [b, kv, n, d]`` with query head h on KV head h // (h/kv), no copy of V."""
    b, h, q, n = weights.shape
    kv = values_kv.shape[1]
    grouped = weights.reshape(b, kv, (h // kv) * q, n) @ values_kv
    return grouped.reshape(b, h, q, values_kv.shape[-1])


class _SparsityReducer(Reducer):
    def __init__(self, lm: LoadedModel, *, epsilons: tuple[float, ...], reported: tuple[float, ...], k: int,
                 budgets: tuple[float, ...], window: int, min_keys: int, rank_prompts: int) -> None:
        self.is_encoder = lm.is_encoder  # not the model: a reducer travels with a remote pass
        n_layers, n_heads = lm.n_layers, lm.n_heads
        self.n_heads = n_heads
        self.epsilons, self.reported, self.k = epsilons, reported, k
        self.budgets, self.window, self.min_keys, self.rank_prompts = budgets, window, min_keys, rank_prompts
        self.hook_names = tuple(
            f"blocks.{layer}.attn.{name}" for layer in range(n_layers)
            for name in ("hook_v", "hook_attn_scores", "hook_pattern"))
        L, H, E, S, B = n_layers, n_heads, len(epsilons), len(SCORES), len(budgets)

        def zeros(*shape: int) -> Tensor:
            return torch.zeros(*shape, dtype=torch.float64)

        self.count, self.count_k = zeros(L, H), zeros(L, H)
        self.kept_sum, self.saved_sum, self.k_sum, self.law_query_sum = (zeros(L, H, E) for _ in range(4))
        self.n_sum, self.var_sum, self.tail_k_sum, self.gap_k_sum = (zeros(L, H) for _ in range(4))
        self.entropy_sum, self.norm_entropy_sum, self.bos_sum = zeros(L, H), zeros(L, H), zeros(L, H)
        self.trunc_err_sum, self.trunc_bound_sum, self.trunc_tau_sum = zeros(L, H), zeros(L, H), zeros(L, H)
        self.out_norm_sum, self.out_sq_sum, self.window_count = zeros(L, H), zeros(L, H), zeros(L, H)
        self.evict_sq_sum, self.sink_evicted_sum = zeros(S, B, L, H), zeros(S, B, L, H)
        self.erank_sum, self.erank_frac_sum = zeros(L, H), zeros(L, H)
        self.n_prompts, self.n_window_prompts, self.n_rank_prompts = 0, 0, 0
        self.pending: dict[tuple[int, str], Tensor] = {}
        self.law_offsets = torch.special.ndtri(torch.tensor(epsilons, dtype=torch.float64))

    def update(self, hook_name: str, activation: Tensor, batch: TokenBatch) -> None:
        _, layer_text, _, name = hook_name.split(".")
        layer = int(layer_text)
        self.pending[(layer, name)] = activation
        keys = [(layer, n) for n in ("hook_v", "hook_attn_scores", "hook_pattern")]
        if all(key in self.pending for key in keys):
            v, scores, pattern = (self.pending.pop(key) for key in keys)
            # Runs on the caller's torch threads: a library must not change the process's thread count.
            self._layer(layer, scores, pattern, v, batch)

    def end_batch(self, batch: TokenBatch, logits: Tensor | None) -> None:
        self.pending.clear()

    # -- per-layer work ------------------------------------------------------------------------------
    def _layer(self, layer: int, scores: Tensor, pattern: Tensor, v: Tensor, batch: TokenBatch) -> None:
        b = scores.shape[0]
        mask = batch.attention_mask.to(scores.device).bool()
        logits = scores.float()
        # TransformerLens writes −inf into masked entries (causal, padding, local windows); a finite fill
        # such as finfo.min would also count as masked here, and its probability underflows to 0 anyway.
        visible = logits > torch.finfo(logits.dtype).min / 2
        probs = pattern.float()
        n_visible = visible.sum(-1)  # [b, h, q]
        eligible = mask[:, None, :] & (n_visible >= self.min_keys)
        if layer == 0:
            self.n_prompts += b
        self._truncation_stats(layer, logits, probs, visible, n_visible, eligible)
        # Gu et al.'s α₀ (the same quantity as the sinks analysis): mean attention on key 0 over real queries.
        alpha0 = (probs[:, :, :, 0] * mask[:, None, :]).sum(-1) / batch.lengths.to(probs.device)[:, None]
        self.bos_sum[layer] += alpha0.double().sum(0).cpu()
        self._effective_rank(layer, probs, mask, batch)
        self._window(layer, logits, probs, visible, v, mask, batch)

    def _truncation_stats(self, layer: int, logits: Tensor, probs: Tensor, visible: Tensor, n_visible: Tensor,
                          eligible: Tensor) -> None:
        width = logits.shape[-1]
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)
        # Ascending order avoids flips: ``cum[j]`` is the mass outside the top (width − 1 − j) keys.
        ascending = _sort_ascending(logits)
        probs_asc = torch.exp(ascending - lse)
        cum = probs_asc.cumsum(-1)
        eps = torch.tensor(self.epsilons, dtype=cum.dtype, device=cum.device)
        k_eps = (width - torch.searchsorted(cum, eps.expand(*cum.shape[:-1], -1).contiguous(), right=True)).double()
        weight = eligible.double()
        w = weight[..., None]
        n = n_visible.double()
        self.count[layer] += weight.sum((0, 2)).cpu()
        self.n_sum[layer] += (n * weight).sum((0, 2)).cpu()
        self.kept_sum[layer] += (k_eps / n.clamp(min=1)[..., None] * w).sum((0, 2)).cpu()
        self.saved_sum[layer] += (n[..., None] / k_eps.clamp(min=1) * w).sum((0, 2)).cpu()
        self.k_sum[layer] += (k_eps * w).sum((0, 2)).cpu()
        # Per-query Gaussian fit: population variance of the visible logits, shifted by the row maximum
        # (``ascending[..., -1]``) so that the one-pass formula does not cancel.
        shifted = torch.where(visible, logits - ascending[..., -1:], 0.0)
        count = n_visible.clamp(min=1).to(shifted.dtype)
        mean = shifted.sum(-1) / count
        var = ((shifted * shifted).sum(-1) / count - mean * mean).clamp(min=0.0)
        self.var_sum[layer] += (var.double() * weight).sum((0, 2)).cpu()
        law = 1.0 - torch.special.ndtr(var.double().sqrt()[..., None] + self.law_offsets.to(var.device))
        self.law_query_sum[layer] += (law * w).sum((0, 2)).cpu()
        # Fixed k: the tail mass and the single-gap bound, over queries that see more than k keys.
        if self.k < width:
            with_k = weight * (n_visible > self.k)
            tail_k = cum[..., width - 1 - self.k]
            gap = ascending[..., width - self.k] - ascending[..., width - 1 - self.k]  # s_(k) − s_(k+1)
            rest = (n_visible - self.k).clamp(min=1).to(gap.dtype)
            bound = 1.0 / (1.0 + (self.k / rest) * torch.exp(gap.clamp(max=80.0)))
            self.count_k[layer] += with_k.sum((0, 2)).cpu()
            self.tail_k_sum[layer] += (tail_k.double() * with_k).sum((0, 2)).cpu()
            self.gap_k_sum[layer] += (bound.double() * with_k).sum((0, 2)).cpu()
        entropy = torch.special.entr(probs).sum(-1)  # −Σ a log a, 0 log 0 = 0
        self.entropy_sum[layer] += (entropy.double() * weight).sum((0, 2)).cpu()
        self.norm_entropy_sum[layer] += (entropy.double() / n.clamp(min=2).log() * weight).sum((0, 2)).cpu()

    def _effective_rank(self, layer: int, probs: Tensor, mask: Tensor, batch: TokenBatch) -> None:
        rows = [i for i, p in enumerate(batch.prompt_index) if p < self.rank_prompts]
        if not rows:
            return
        chosen = probs[rows] * mask[rows][:, None, :, None]  # zero the padded query rows
        erank = effective_rank(chosen).double().cpu()  # [r, h]
        lengths = batch.lengths[rows].double().cpu()
        self.erank_sum[layer] += erank.sum(0)
        self.erank_frac_sum[layer] += (erank / lengths[:, None]).sum(0)
        if layer == 0:
            self.n_rank_prompts += len(rows)

    def _window(self, layer: int, logits: Tensor, probs: Tensor, visible: Tensor, v: Tensor, mask: Tensor,
                batch: TokenBatch) -> None:
        b, h, width, _ = logits.shape
        W = self.window
        lengths = batch.lengths.to(logits.device)
        valid = lengths >= 2 * W
        if not bool(valid.any()):
            return
        if bool(valid.all()):
            rows = None
        else:
            rows = valid.nonzero()[:, 0]
            lengths, logits, probs, visible, v = (x[rows] for x in (lengths, logits, probs, visible, v))
        r = lengths.shape[0]
        query_pos = (lengths[:, None] - W + torch.arange(W, device=logits.device)).clamp(min=0)  # [r, W]
        index = query_pos[:, None, :, None].expand(r, h, W, width)
        a = probs.gather(2, index)  # [r, h, W, n]
        seen = visible.gather(2, index)
        lse = torch.logsumexp(logits.gather(2, index), dim=-1, keepdim=True)
        values = v.float().permute(0, 2, 1, 3)  # [r, kv, n, d]
        if h % values.shape[1] != 0:
            raise RuntimeError(f"{h} query heads cannot share {values.shape[1]} value heads")
        outputs = _grouped_matmul(a, values)  # [r, h, W, d]
        out_sq = (outputs**2).sum(-1)
        cross = _outputs_dot_values(outputs, values)  # [r, h, W, n]
        norms2 = _per_query_head((values**2).sum(-1), h)  # [r, h, n]
        dist2 = (out_sq[..., None] + norms2[:, :, None, :] - 2.0 * cross).clamp(min=0.0)
        terms = _saliency_terms(a, lse, norms2[:, :, None, :], dist2, seen)
        positions = torch.arange(width, device=logits.device)
        evictable = positions[None, :] < (lengths - W)[:, None]  # [r, n]
        m = (lengths - W).double()
        evict_counts = torch.stack([(m - torch.ceil(beta * m)).long() for beta in self.budgets], dim=-1)  # [r, B]
        budget_order = sorted(range(len(self.budgets)), key=lambda i: -self.budgets[i])  # evict fewest first
        counts_sorted = evict_counts[:, budget_order]
        # All scores in one batched call (the score axis stacked on the prompt axis): one pass of the segment
        # loop instead of one per score.
        n_scores = len(SCORES)
        orders = torch.cat([
            torch.argsort(terms[name].sum(2).masked_fill(~evictable[:, None, :], float("inf")), dim=-1, stable=True)
            for name in SCORES])  # [S·r, h, n]
        all_errors = eviction_errors_from_order(
            a.repeat(n_scores, 1, 1, 1), values.repeat(n_scores, 1, 1, 1), orders,
            counts_sorted.repeat(n_scores, 1)[:, None, :], outputs.repeat(n_scores, 1, 1, 1),
        ).view(n_scores, r, h, W, -1)  # [S, r, h, W, B]
        for s in range(n_scores):
            order, errors = orders[s * r:(s + 1) * r], all_errors[s]
            rank_of_first = (order == 0).int().argmax(-1)  # [r, h]: eviction rank of position 0
            sums = errors.double().sum((0, 2)).cpu()  # [h, B]
            for j, budget_index in enumerate(budget_order):
                self.evict_sq_sum[s, budget_index, layer] += sums[:, j]
                evicted_first = (rank_of_first < counts_sorted[:, None, j]).double()
                self.sink_evicted_sum[s, budget_index, layer] += evicted_first.sum(0).cpu()
        self.out_sq_sum[layer] += out_sq.double().sum((0, 2)).cpu()
        self.out_norm_sum[layer] += out_sq.double().sqrt().sum((0, 2)).cpu()
        self.window_count[layer] += float(r * W)
        if layer == 0:
            self.n_window_prompts += r
        self._window_truncation(layer, a, seen, outputs, values, query_pos, lengths)

    def _window_truncation(self, layer: int, a: Tensor, seen: Tensor, outputs: Tensor, values: Tensor,
                           query_pos: Tensor, lengths: Tensor) -> None:
        """Realised top-k_ε output error of the window queries against its certificate τ · diam_{H,T}."""
        eps = self.reported[0]
        a_sorted, order = torch.sort(a, dim=-1, descending=True)
        k = _k_from_sorted(a_sorted, eps)  # [r, h, W]
        positions = torch.arange(a.shape[-1], device=a.device)
        ranks = torch.empty_like(order).scatter_(-1, order, positions.expand_as(order))
        head_set = ranks < k[..., None]
        tail_set = seen & ~head_set
        head_mass = (a * head_set).sum(-1)
        tau = (a * tail_set).sum(-1)
        mu_head = _grouped_matmul(a * head_set, values) / head_mass.clamp(min=_SAFE)[..., None]
        realised = (outputs - mu_head).norm(dim=-1)
        if self.is_encoder:  # every real key is visible: right padding makes them a prefix
            last_key = (lengths[:, None] - 1).expand_as(query_pos)
        else:
            last_key = query_pos
        diameter = head_tail_diameter(values, head_set, tail_set, last_key)
        bound = tau * diameter
        self.trunc_err_sum[layer] += realised.double().sum((0, 2)).cpu()
        self.trunc_bound_sum[layer] += bound.double().sum((0, 2)).cpu()
        self.trunc_tau_sum[layer] += tau.double().sum((0, 2)).cpu()

    def result(self) -> None:
        return None


def _outputs_dot_values(outputs: Tensor, values: Tensor) -> Tensor:
    """``o_i · v_j`` for every window query and key: ``[r, h, W, d] × [r, kv, n, d] → [r, h, W, n]``."""
    r, h, W, d = outputs.shape
    kv = values.shape[1]
    grouped = outputs.reshape(r, kv, (h // kv) * W, d) @ values.transpose(-1, -2)
    return grouped.reshape(r, h, W, values.shape[2])


# ----------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------


def long_prompts(paragraphs: Sequence[str], n_prompts: int | None = None, per_prompt: int = 3) -> list[str]:
    """Prompts made of ``per_prompt`` consecutive paragraphs (cyclically), for ~256-token inputs.

    Examples:
        >>> long_prompts(["a", "b", "c"], per_prompt=2)
        ['a b', 'b c', 'c a']
    """
    if per_prompt < 1 or not paragraphs:
        raise OptionError("long_prompts needs at least one paragraph and per_prompt >= 1")
    count = len(paragraphs) if n_prompts is None else n_prompts
    return [" ".join(paragraphs[(i + j) % len(paragraphs)] for j in range(per_prompt)) for i in range(count)]


def attention_sparsity(
    lm: LoadedModel,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    *,
    epsilons: Sequence[float] = (0.05, 0.01),
    epsilon_grid: Sequence[float] = DEFAULT_EPSILON_GRID,
    k: int = 32,
    budgets: Sequence[float] = (0.1, 0.25, 0.5, 0.75),
    window: int = 32,
    min_keys: int = 16,
    rank_prompts: int = 2,
    max_tokens: int = 256,
    batch_size: int = 8,
    progress: bool | None = None,
) -> SparsityScores:
    """Certified top-k sparsity, eviction-score comparison, entropy and effective rank of every head.

    Args:
        lm: a loaded decoder or encoder.
        prompts: texts (or token id lists), each cut to ``max_tokens`` tokens.
        epsilons: TV budgets to report (the first one also drives the truncation-error check).
        epsilon_grid: extra ε values for the TV-budget curves.
        k: the fixed k for the tail mass and the single-gap bound.
        budgets: cache budgets (share of evictable keys kept) for the eviction comparison.
        window: the last ``window`` queries of each prompt score and judge eviction; prompts need at least
            ``2 · window`` tokens to take part.
        min_keys: queries that see fewer keys are left out of the per-query averages.
        rank_prompts: effective rank is computed on the first N prompts (default 2: an eigendecomposition of a
            ``n × n`` Gram matrix per head and prompt, about 0.26 s per 256-token prompt on gemma-3-270m with 2
            CPU threads — as much as the rest of the analysis for that prompt; 0 turns it off, and the report
            says so).

    Examples:
        >>> import interp
        >>> lm = interp.load_model("tiny-llama")
        >>> s = attention_sparsity(lm, ["one two three four five six seven eight nine ten " * 3],
        ...                        window=8, min_keys=4, progress=False)
        >>> bool((s.keys_saved >= 1).all())
        True
    """
    reported = tuple(float(e) for e in epsilons)
    if not reported:
        raise OptionError("give at least one epsilon")
    for eps in (*reported, *epsilon_grid):
        if not 0.0 < float(eps) < 1.0:
            raise OptionError(f"epsilon must be in (0, 1), got {eps}")
    grid = tuple(sorted({float(e) for e in (*epsilon_grid, *reported)}))
    budget_tuple = tuple(float(x) for x in budgets)
    if not budget_tuple or any(not 0.0 < x < 1.0 for x in budget_tuple):
        raise OptionError(f"budgets must be shares in (0, 1), got {list(budgets)}")
    if k < 1:
        raise OptionError(f"k must be at least 1, got {k}")
    if window < 1:
        raise OptionError(f"window must be at least 1, got {window}")
    if min_keys < 1:
        raise OptionError(f"min_keys must be at least 1, got {min_keys}")
    if rank_prompts < 0:
        raise OptionError(f"rank_prompts must be non-negative, got {rank_prompts}")
    if max_tokens < 2 or max_tokens > lm.info.n_ctx:
        raise OptionError(f"max_tokens must be between 2 and the context window {lm.info.n_ctx}, got {max_tokens}")
    if is_text_prompts(prompts):
        token_rows = tokenize_prompts(lm, prompts, max_tokens=max_tokens)
    else:
        token_rows = [list(r)[:max_tokens] for r in prompts]
    longest = max((len(r) for r in token_rows), default=0)
    if longest < 2 * window:
        raise OptionError(f"the longest prompt has {longest} tokens but window={window} needs prompts of at least "
                          f"{2 * window}: lower --window or give longer prompts")
    if longest < min_keys:
        raise OptionError(f"no query sees min_keys={min_keys} keys (longest prompt {longest} tokens): lower --min-keys")
    reducer = _SparsityReducer(lm, epsilons=grid, reported=reported, k=k, budgets=budget_tuple, window=window,
                               min_keys=min_keys, rank_prompts=rank_prompts)
    n_tokens = run_probe(lm, token_rows, [reducer], batch_size=batch_size, progress=progress,
                         description="attention sparsity")
    r = reducer
    count = r.count.clamp(min=1)
    count3 = count[..., None]
    sigma = (r.var_sum / count).sqrt()
    law = 1.0 - torch.special.ndtr(sigma[..., None] + r.law_offsets)
    window_count = r.window_count.clamp(min=1)
    evict = (r.evict_sq_sum / r.out_sq_sum.clamp(min=1e-30)).sqrt()
    n_window = max(r.n_window_prompts, 1)

    def per_rank_prompt(total: Tensor) -> Tensor:
        # Not measured (rank_prompts=0, or no prompt reached): NaN, never a 0 that reads as a rank.
        return (total / r.n_rank_prompts).float() if r.n_rank_prompts else torch.full_like(total, math.nan).float()

    return SparsityScores(
        epsilons=grid,
        reported_epsilons=reported,
        kept_fraction=(r.kept_sum / count3).float(),
        keys_saved=(r.saved_sum / count3).float(),
        keys_saved_total=(r.n_sum[..., None] / r.k_sum.clamp(min=1)).float(),
        law_kept_fraction=law.float(),
        law_kept_fraction_per_query=(r.law_query_sum / count3).float(),
        logit_sigma=sigma.float(),
        tail_at_k=(r.tail_k_sum / r.count_k.clamp(min=1)).float(),
        gap_bound_at_k=(r.gap_k_sum / r.count_k.clamp(min=1)).float(),
        truncation_error=(r.trunc_err_sum / window_count).float(),
        truncation_bound=(r.trunc_bound_sum / window_count).float(),
        truncation_tau=(r.trunc_tau_sum / window_count).float(),
        output_norm=(r.out_norm_sum / window_count).float(),
        eviction_error=evict.float(),
        sink_evicted=(r.sink_evicted_sum / n_window).float(),
        bos_attention=(r.bos_sum / max(r.n_prompts, 1)).float(),
        entropy=(r.entropy_sum / count).float(),
        normalized_entropy=(r.norm_entropy_sum / count).float(),
        effective_rank=per_rank_prompt(r.erank_sum),
        effective_rank_fraction=per_rank_prompt(r.erank_frac_sum),
        budgets=budget_tuple,
        scores=SCORES,
        k=k,
        window=window,
        min_keys=min_keys,
        n_prompts=r.n_prompts,
        n_tokens=n_tokens,
        n_window_prompts=r.n_window_prompts,
        n_rank_prompts=r.n_rank_prompts,
        params=dict(epsilons=list(reported), epsilon_grid=list(grid), k=k, budgets=list(budget_tuple),
                    window=window, min_keys=min_keys, rank_prompts=rank_prompts, max_tokens=max_tokens),
    )
