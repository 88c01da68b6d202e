"""SVD communication channels between attention heads and Q/K/V composition scores (weights only).

Method (Elhage et al. 2021, composition scores; Merullo, Eickhoff & Pavlick, NeurIPS 2024, "Talking Heads",
arXiv 2406.09519, per-component channels; docs/analyses/svd-channels.md):

* **Per-head SVD.** TransformerLens's row convention: ``x @ OV = Σ_i σ_i (x·U[:,i]) Vh[i,:]`` with
  ``OV = W_V W_O`` and ``QK = W_Q W_Kᵀ`` (both ``d_model × d_model`` of rank ≤ ``d_head``). ``U[:,i]`` is
  the *read* direction and ``Vh[i,:]`` the *write* direction of rank-1 component ``C_i = σ_i U[:,i] Vh[i,:]``.
  The SVD is taken from the factors (thin QR of each factor, then the SVD of the small ``d_head × d_head``
  middle matrix, like ``FactoredMatrix.svd``) without forming the ``d_model × d_model`` product. Effective
  rank is Roy & Vetterli's ``exp(H(σ/Σσ))``; stable rank is ``‖M‖_F² / σ_1²``.
* **Composition scores (Elhage et al. 2021).** For writer head A in an earlier layer and reader B in a
  later one, ``score = ‖OV_A R_B‖_F / (‖OV_A‖_F ‖R_B‖_F)`` with ``R_B = QK_B`` (Q), ``QK_Bᵀ`` (K) or
  ``OV_B`` (V) — exactly TransformerLens's ``all_composition_scores`` (pairs with layer(A) ≥ layer(B)
  are 0). Writing ``R_B = P_B Σ_B Q_Bᵀ``, ``‖OV_A R_B‖_F² = Σ_i σ_i² ‖Vh_A[i] P_B Σ_B‖²``, so one matrix
  product of every writer's write directions with every later reader's read directions gives the full
  scores *and* the per-component scores at once.
* **Per-component composition (Merullo, Eickhoff & Pavlick, "Talking Heads", NeurIPS 2024).**
  ``CS_i = ‖C_i R_B‖_F / (‖C_i‖_F ‖R_B‖_F) = ‖Vh_A[i] R_B‖ / ‖R_B‖_F``. Because the ``C_i`` have
  orthonormal left *and* right singular vectors, the cross terms vanish and
  ``CS_full² ‖OV_A‖_F² = Σ_i CS_i² ‖C_i‖_F²`` (``‖C_i‖_F = σ_i``) holds exactly for all three modes (the
  reader matrix multiplies the writer on the right in Q, K and V alike; the identity would also hold with
  the writer on the right). ``σ_i² CS_i² / (CS_full² ‖OV_A‖²)`` is therefore the share of the
  interaction that component i carries; the few components with the largest shares are the channel.
* **Random baseline.** Scores have a positive floor: for any rotation-invariant random pair
  ``E[score²] = 1/d_model`` exactly. The baseline is the mean and standard deviation of the score of
  Gaussian factored matrices of the same shapes and ranks (``d_model×d_head @ d_head×d_model``), over
  ``baseline_samples`` draws; the z-score is ``(score − mean) / std``. Per-component scores get their own
  baseline (a random unit write direction against a random reader).

**Grouped-query attention.** In TransformerLens 3.9 ``attn.W_K``/``attn.W_V`` of a GQA layer are
``repeat_interleave``-expanded views of the shared ``_W_K``/``_W_V`` (``[n_kv_heads, d_model, d_head]``),
so every *query* head gets its own ``QK = W_Q[h] W_K[h // group]ᵀ`` and ``OV = W_V[h // group] W_O[h]``:
readers and writers are query heads, which is what the model computes (and what
``all_composition_scores`` uses). ``ungroup_grouped_query_attention`` only changes the forward pass.

**Effective matrices** (``effective=True``, default). Norm weights that TransformerLens cannot fold into
the head weights are folded here: a post-attention norm (Gemma-3's ``ln1_post``: the head writes
``z W_O ⊙ g / rms``) gives ``OV_eff = W_V W_O diag(g)``; per-head q/k RMS norms (Gemma-3) give
``QK_eff = W_Q diag(g_q) diag(g_k) W_Kᵀ``. The per-token RMS factors are positive scalars and rotary
position rotations depend on the token pair, so neither is part of a weight-only score (relative offset
0, as in TransformerLens). With ``effective=False`` the raw ``model.OV``/``model.QK`` are used, which is
what ``all_composition_scores`` computes; for models without such norms the two agree.

Examples:
    >>> import interp
    >>> from interp.attribution.channels import composition_scores
    >>> lm = interp.load_model("tiny-gpt2")
    >>> k_comp = composition_scores(lm, "K", baseline_samples=20)
    >>> k_comp.scores.shape                 # [writer layer, writer head, reader layer, reader head]
    torch.Size([2, 4, 2, 4])
    >>> k_comp.component_scores.shape       # [writer layer, writer head, component, reader layer, reader head]
    torch.Size([2, 4, 16, 2, 4])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import OptionError
from interp.models import LoadedModel
from interp.results import tidy_frame

Mode = Literal["Q", "K", "V"]
COMPOSITION_MODES: tuple[str, ...] = ("Q", "K", "V")
Head = tuple[int, int]


# ----------------------------------------------------------------------------------------------------
# Per-head factors and their SVD
# ----------------------------------------------------------------------------------------------------


def _check_decoder(lm: LoadedModel) -> None:
    if lm.n_layers < 1:
        raise OptionError(f"{lm.name} has no attention blocks this analysis can read")


def head_factors(
    lm: LoadedModel, which: Literal["OV", "QK"], *, effective: bool = True
) -> tuple[Float[Tensor, "layer head d_model d_head"], Float[Tensor, "layer head d_head d_model"]]:
    """The two factors ``(A, B)`` with ``A @ B`` = every head's OV (``W_V, W_O``) or QK (``W_Q, W_Kᵀ``).

    GQA key/value weights come expanded per query head (:meth:`~interp.backends.Backend.head_weights`).
    ``effective`` folds a post-attention norm weight into ``W_O`` and q/k-norm weights into ``W_Q``/``W_K``.

    Examples:
        >>> import interp
        >>> a, b = head_factors(interp.load_model("tiny-llama"), "QK")
        >>> tuple(a.shape), tuple(b.shape)
        ((2, 4, 64, 16), (2, 4, 16, 64))
    """
    if which not in ("OV", "QK"):
        raise OptionError(f"unknown matrix {which!r}: use 'OV' or 'QK'")
    _check_decoder(lm)
    lefts, rights = [], []
    with torch.no_grad():
        for layer in range(lm.n_layers):
            weights = lm.head_weights(layer)
            if which == "OV":
                left = weights.W_V
                right = weights.W_O
                if effective and weights.post_gain is not None:
                    right = right * weights.post_gain.to(right)[None, None, :]
            else:
                w_q, w_k = weights.W_Q, weights.W_K
                q_gain, k_gain = weights.q_gain, weights.k_gain
                if effective and q_gain is not None and k_gain is not None and \
                        q_gain.shape[-1] == lm.d_head and k_gain.shape[-1] == lm.d_head:
                    w_q = w_q * q_gain.to(w_q)
                    w_k = w_k * k_gain.to(w_k)
                left = w_q
                right = w_k.transpose(-2, -1)
            lefts.append(left)
            rights.append(right)
    return torch.stack(lefts), torch.stack(rights)


def factored_svd(
    left: Float[Tensor, "... m r"], right: Float[Tensor, "... r n"]
) -> tuple[Float[Tensor, "... m r"], Float[Tensor, "... r"], Float[Tensor, "... r n"]]:
    """``U, S, Vh`` of ``left @ right`` without forming the product.

    Like TransformerLens's ``FactoredMatrix.svd`` but with thin QR factorisations of the two factors
    (cheaper than their SVDs): ``left = Q_a R_a``, ``rightᵀ = Q_b R_b``, then the SVD of the small
    ``R_a R_bᵀ`` (QR in float32, the small SVD and the products in float64). Returns ``Vh`` (rows = right singular vectors): ``left @ right == U @ diag(S) @ Vh``.
    Signs are canonical: the largest-magnitude entry of every ``Vh`` row is positive.
    """
    q_a, r_a = torch.linalg.qr(left.float())
    q_b, r_b = torch.linalg.qr(right.float().transpose(-2, -1))
    u_m, s_m, vh_m = torch.linalg.svd(r_a.double() @ r_b.double().transpose(-2, -1), full_matrices=False)
    u, vh = q_a.double() @ u_m, vh_m @ q_b.double().transpose(-2, -1)
    # Each singular pair is defined up to a shared sign, which LAPACK and cuSOLVER choose differently: fix it
    # (the largest-magnitude entry of every Vh row is positive), so that directions, and results that depend
    # on their sign such as channel traversals, are the same on every device and library version.
    pivot = vh.gather(-1, vh.abs().argmax(dim=-1, keepdim=True))  # [..., r, 1]
    sign = torch.where(pivot < 0, -1.0, 1.0).to(vh.dtype)
    return u * sign.transpose(-2, -1), s_m, vh * sign


def effective_rank(singular_values: Float[Tensor, "... r"]) -> Float[Tensor, "..."]:
    """Roy & Vetterli (2007) effective rank ``exp(−Σ p_i log p_i)``, ``p = σ / Σσ`` (0 for a zero matrix)."""
    s = singular_values.double().clamp(min=0)
    total = s.sum(dim=-1, keepdim=True)
    p = torch.where(total > 0, s / total.clamp(min=1e-300), torch.zeros_like(s))
    entropy = -(torch.where(p > 0, p * p.clamp(min=1e-300).log(), torch.zeros_like(p))).sum(dim=-1)
    return torch.where(total[..., 0] > 0, entropy.exp(), torch.zeros_like(entropy))


@dataclass(frozen=True)
class HeadSVD:
    """SVD of every head's OV or QK matrix: ``M[l,h] = U[l,h] @ diag(S[l,h]) @ Vh[l,h]``.

    For OV, ``U[...,:,i]`` is what component i reads from the residual stream and ``Vh[...,i,:]`` what it
    writes. For QK (``x_q @ QK @ x_kᵀ``), ``U`` are query-side and ``Vh`` key-side directions.
    """

    which: str
    U: Float[Tensor, "layer head d_model rank"]
    S: Float[Tensor, "layer head rank"]
    Vh: Float[Tensor, "layer head rank d_model"]
    effective: bool

    @property
    def frobenius_norm(self) -> Float[Tensor, "layer head"]:
        return self.S.double().pow(2).sum(dim=-1).sqrt().float()

    @property
    def effective_rank(self) -> Float[Tensor, "layer head"]:
        return effective_rank(self.S).float()

    @property
    def stable_rank(self) -> Float[Tensor, "layer head"]:
        top = self.S[..., 0].double()
        return torch.where(top > 0, self.S.double().pow(2).sum(-1) / top.clamp(min=1e-300) ** 2, torch.zeros_like(top)).float()

    def component(self, layer: int, head: int, index: int) -> Float[Tensor, "d_model d_model"]:
        """The rank-1 matrix ``C_i = σ_i U[:,i] Vh[i,:]`` (formed explicitly: for tests and small models)."""
        return self.S[layer, head, index] * torch.outer(self.U[layer, head, :, index], self.Vh[layer, head, index])

    def to_frame(self) -> pd.DataFrame:
        """Rows ``metric = {ov|qk}_singular_value`` (with ``component``), ``..._effective_rank``, ``..._stable_rank``."""
        prefix = self.which.lower()
        n_layers, n_heads, rank = self.S.shape
        layer_idx, head_idx, comp_idx = np.meshgrid(range(n_layers), range(n_heads), range(rank), indexing="ij")
        spectrum = pd.DataFrame(dict(layer=layer_idx.ravel(), head=head_idx.ravel(), component=comp_idx.ravel(),
                                     metric=f"{prefix}_singular_value", value=self.S.numpy().ravel()))
        frames = [spectrum]
        for name, values in (("effective_rank", self.effective_rank), ("stable_rank", self.stable_rank),
                             ("frobenius_norm", self.frobenius_norm)):
            l_idx, h_idx = np.meshgrid(range(n_layers), range(n_heads), indexing="ij")
            frames.append(pd.DataFrame(dict(layer=l_idx.ravel(), head=h_idx.ravel(), metric=f"{prefix}_{name}",
                                            value=values.numpy().ravel())))
        return tidy_frame(pd.concat(frames, ignore_index=True), extra_columns=("component",))


def head_svd(lm: LoadedModel, which: Literal["OV", "QK"] = "OV", *, effective: bool = True) -> HeadSVD:
    """SVD of every head's OV or QK matrix from its factors (never forms ``d_model × d_model``).

    Examples:
        >>> import interp
        >>> ov = head_svd(interp.load_model("tiny-gpt2"), "OV")
        >>> tuple(ov.S.shape)                   # [layer, head, d_head]
        (2, 4, 16)
    """
    left, right = head_factors(lm, which, effective=effective)
    u, s, vh = factored_svd(left, right)
    # Factored on the model's device, kept on the host: composition scores, frames and figures read them there
    # (channel interventions move the directions back to the model's device).
    return HeadSVD(which=which, U=u.float().cpu(), S=s.float().cpu(), Vh=vh.float().cpu(), effective=effective)


def svd_components(lm: LoadedModel, layer: int, head: int, which: Literal["OV", "QK"] = "OV", *,
                   effective: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """``(U, S, Vh)`` of one head's OV or QK matrix (the rank-1 components of Merullo et al.'s channel analysis).

    Examples:
        >>> import interp
        >>> u, s, vh = svd_components(interp.load_model("tiny-gpt2"), 1, 0)
        >>> tuple(u.shape), tuple(s.shape), tuple(vh.shape)
        ((64, 16), (16,), (16, 64))
    """
    _check_head(lm, (layer, head))
    left, right = head_factors(lm, which, effective=effective)
    u, s, vh = factored_svd(left[layer, head], right[layer, head])
    return u.float().cpu(), s.float().cpu(), vh.float().cpu()


def _check_head(lm: LoadedModel, head: Head) -> None:
    layer, index = head
    if not (0 <= layer < lm.n_layers and 0 <= index < lm.n_heads):
        raise OptionError(
            f"head {layer}.{index} does not exist: {lm.name} has layers 0..{lm.n_layers - 1} and heads 0..{lm.n_heads - 1}"
        )


# ----------------------------------------------------------------------------------------------------
# Random-matrix baseline
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RandomBaseline:
    """Score statistics of random Gaussian factored matrices of the heads' shapes and ranks."""

    mean: float
    std: float
    mean_square: float  # E[score²]; 1/d_model in theory (rotation invariance)
    component_mean: float
    component_std: float
    d_model: int
    writer_rank: int
    reader_rank: int
    samples: int


@lru_cache(maxsize=16)
def random_baseline(d_model: int, writer_rank: int, reader_rank: int, *, samples: int = 100,
                    seed: int = 0) -> RandomBaseline:
    """Mean/std composition score of ``(G1 G2)`` with ``(G3 G4)``, Gaussian ``d×r`` and ``r×d`` factors.

    Computed in ``r × r`` space (``‖G1 G2 G3 G4‖² = tr(M₂₃ᵀ G1ᵀG1 M₂₃ G4G4ᵀ)``). The per-component
    baseline is ``‖u R‖ / ‖R‖_F`` for a random unit write direction ``u`` (a Gaussian writer's singular
    directions are uniformly distributed). Gaussians are drawn in float32, sums taken in float64;
    results are cached per argument set (the modes of one model share it).

    Examples:
        >>> b = random_baseline(64, 16, 16, samples=200)
        >>> abs(b.mean_square * 64 - 1) < 0.1     # E[score²] = 1/d_model
        True
    """
    if samples < 2:
        raise OptionError(f"baseline samples must be at least 2, got {samples}")
    generator = torch.Generator().manual_seed(seed)
    scores, components = [], []
    chunk = max(1, min(samples, (1 << 24) // max(1, d_model * max(writer_rank, reader_rank))))
    done = 0
    while done < samples:
        n = min(chunk, samples - done)
        done += n
        g1 = torch.randn(n, d_model, writer_rank, generator=generator).double()
        g2 = torch.randn(n, writer_rank, d_model, generator=generator).double()
        g3 = torch.randn(n, d_model, reader_rank, generator=generator).double()
        g4 = torch.randn(n, reader_rank, d_model, generator=generator).double()
        gram1, gram4 = g1.mT @ g1, g4 @ g4.mT
        writer_sq = (gram1 * (g2 @ g2.mT)).sum(dim=(-2, -1))
        reader_sq = ((g3.mT @ g3) * gram4).sum(dim=(-2, -1))
        middle = g2 @ g3
        product_sq = ((middle.mT @ gram1 @ middle) * gram4).sum(dim=(-2, -1))
        scores.extend((product_sq / (writer_sq * reader_sq)).sqrt().tolist())
        direction = torch.randn(n, 8, d_model, generator=generator).double()
        direction = direction / direction.norm(dim=-1, keepdim=True)
        components.extend(((direction @ g3 @ g4).norm(dim=-1) / reader_sq.sqrt()[:, None]).flatten().tolist())
    values, comps = np.asarray(scores), np.asarray(components)
    return RandomBaseline(mean=float(values.mean()), std=float(values.std(ddof=1)),
                          mean_square=float((values**2).mean()), component_mean=float(comps.mean()),
                          component_std=float(comps.std(ddof=1)), d_model=d_model, writer_rank=writer_rank,
                          reader_rank=reader_rank, samples=samples)


# ----------------------------------------------------------------------------------------------------
# Composition scores
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompositionScores:
    """Q-, K- or V-composition of every writer head with every reader head in a later layer.

    Tensors are zero where ``layer(writer) >= layer(reader)`` (TransformerLens's masking); ``z`` is NaN
    there. ``component_scores[lw, hw, i, lr, hr]`` is ``CS_i`` of the writer's i-th OV component.
    """

    mode: str
    scores: Float[Tensor, "wlayer whead rlayer rhead"]
    component_scores: Float[Tensor, "wlayer whead component rlayer rhead"]
    writer_singular_values: Float[Tensor, "wlayer whead component"]
    baseline: RandomBaseline
    effective: bool
    params: dict = field(default_factory=dict)

    @property
    def valid(self) -> Tensor:
        """Boolean ``[L,H,L,H]`` mask of pairs with the writer in an earlier layer."""
        n_layers, n_heads = self.scores.shape[:2]
        layers = torch.arange(n_layers)
        mask = layers[:, None] < layers[None, :]
        return mask[:, None, :, None].expand(n_layers, n_heads, n_layers, n_heads)

    @property
    def z(self) -> Float[Tensor, "wlayer whead rlayer rhead"]:
        z = (self.scores - self.baseline.mean) / self.baseline.std
        return torch.where(self.valid, z, torch.full_like(z, float("nan")))

    @property
    def component_z(self) -> Float[Tensor, "wlayer whead component rlayer rhead"]:
        return (self.component_scores - self.baseline.component_mean) / self.baseline.component_std

    def contribution_share(self, writer: Head, reader: Head) -> Float[Tensor, " component"]:
        """``σ_i² CS_i² / Σ_j σ_j² CS_j²``: the share of the writer→reader interaction each component carries."""
        sigma = self.writer_singular_values[writer].double()
        cs = self.component_scores[writer[0], writer[1], :, reader[0], reader[1]].double()
        weight = sigma.pow(2) * cs.pow(2)
        total = weight.sum()
        return (weight / total if total > 0 else torch.zeros_like(weight)).float()

    def top_components(self, writer: Head, reader: Head, k: int = 3, by: str = "score") -> list[int]:
        """Indices of the writer's k top components for ``reader``.

        ``by="score"`` ranks by the component composition score ``CS_i`` (how well the write direction
        aligns with what the reader reads, Merullo et al.); ``by="share"`` by ``σ_i² CS_i²`` (the part of
        the full score the component carries, which also weighs its gain σ_i).
        """
        if by == "score":
            values = self.component_scores[writer[0], writer[1], :, reader[0], reader[1]]
        elif by == "share":
            values = self.contribution_share(writer, reader)
        else:
            raise OptionError(f"unknown component ranking {by!r}: use 'score' or 'share'")
        return values.argsort(descending=True)[:k].tolist()

    def top_pairs(self, k: int = 10) -> list[tuple[Head, Head, float]]:
        """The k highest-scoring (writer, reader, score) pairs."""
        flat = torch.where(self.valid, self.scores, torch.full_like(self.scores, -1.0)).flatten()
        values, index = flat.topk(min(k, int(self.valid.sum())))
        shape = self.scores.shape
        out = []
        for value, flat_index in zip(values.tolist(), index.tolist(), strict=True):
            lw, rest = divmod(flat_index, shape[1] * shape[2] * shape[3])
            hw, rest = divmod(rest, shape[2] * shape[3])
            lr, hr = divmod(rest, shape[3])
            out.append(((lw, hw), (lr, hr), value))
        return out

    def to_frame(self, components_per_pair: int = 8) -> pd.DataFrame:
        """Tidy rows: per valid pair ``composition_score``, ``composition_baseline``, ``composition_z``, and
        the ``components_per_pair`` components with the largest shares (``component_composition``,
        ``component_share``). ``layer, head`` are the writer; ``reader_layer, reader_head, mode`` extras."""
        valid = self.valid
        lw, hw, lr, hr = (t.numpy() for t in torch.nonzero(valid, as_tuple=True))
        scores = self.scores[valid].numpy()
        base = dict(layer=lw, head=hw, reader_layer=lr, reader_head=hr, mode=self.mode)
        frames = [
            pd.DataFrame(dict(base, metric="composition_score", value=scores)),
            pd.DataFrame(dict(base, metric="composition_baseline", value=np.full(len(scores), self.baseline.mean))),
            pd.DataFrame(dict(base, metric="composition_z", value=self.z[valid].numpy())),
        ]
        if components_per_pair > 0:
            cs = self.component_scores.permute(0, 1, 3, 4, 2)[valid].double()  # [pairs, component]
            sigma = self.writer_singular_values[torch.as_tensor(lw), torch.as_tensor(hw)].double()
            weight = sigma.pow(2) * cs.pow(2)
            share = weight / weight.sum(dim=-1, keepdim=True).clamp(min=1e-300)
            k = min(components_per_pair, cs.shape[-1])
            top = share.topk(k, dim=-1).indices
            rows = np.repeat(np.arange(len(scores)), k)
            comp = top.numpy().ravel()
            comp_base = dict(layer=lw[rows], head=hw[rows], reader_layer=lr[rows], reader_head=hr[rows], mode=self.mode,
                             component=comp)
            frames.append(pd.DataFrame(dict(comp_base, metric="component_composition",
                                            value=cs.gather(-1, top).numpy().ravel())))
            frames.append(pd.DataFrame(dict(comp_base, metric="component_share",
                                            value=share.gather(-1, top).numpy().ravel())))
        frame = pd.concat(frames, ignore_index=True)
        tidy = tidy_frame(frame, extra_columns=("reader_layer", "reader_head", "mode", "component"))
        for column in ("reader_layer", "reader_head", "component"):
            if column in tidy:
                tidy[column] = tidy[column].astype("Int64")
        return tidy


def _reader_directions(mode: str, ov: HeadSVD, qk: HeadSVD | None) -> Float[Tensor, "layer head d_model rank"]:
    """``P_B Σ_B`` of each reader matrix ``R_B`` (left singular vectors scaled by singular values)."""
    if mode == "V":
        return ov.U * ov.S[..., None, :]
    assert qk is not None
    if mode == "Q":
        return qk.U * qk.S[..., None, :]
    return qk.Vh.transpose(-2, -1) * qk.S[..., None, :]  # QKᵀ = Vhᵀ S Uᵀ


def composition_scores(
    lm: LoadedModel,
    mode: str = "K",
    *,
    effective: bool = True,
    baseline_samples: int = 100,
    seed: int = 0,
    ov: HeadSVD | None = None,
    qk: HeadSVD | None = None,
    dtype: torch.dtype = torch.float32,
) -> CompositionScores:
    """Q-, K- or V-composition scores of all writer/reader pairs, per OV component too, with a baseline.

    Args:
        lm: a decoder model.
        mode: ``"Q"``, ``"K"`` or ``"V"`` (TransformerLens's meaning: the writer's output feeds the reader's
            queries, keys or values).
        effective: fold post-attention and q/k norm weights into the matrices (see the module notes).
        baseline_samples: random pairs for the baseline (≥ 2).
        ov, qk: precomputed :func:`head_svd` results to reuse across modes.
        dtype: dtype of the big writer × reader product (float32; float64 for extra precision).

    Examples:
        >>> import interp
        >>> lm = interp.load_model("tiny-gpt2")
        >>> scores = composition_scores(lm, "Q", effective=False, baseline_samples=10).scores
        >>> tuple(scores.shape)   # [writer layer, writer head, reader layer, reader head]
        (2, 4, 2, 4)
    """
    if mode not in COMPOSITION_MODES:
        raise OptionError(f"unknown composition mode {mode!r}: use one of Q, K, V")
    if ov is None:
        ov = head_svd(lm, "OV", effective=effective)
    if mode in ("Q", "K") and qk is None:
        qk = head_svd(lm, "QK", effective=effective)
    n_layers, n_heads, rank = ov.S.shape
    d_model = ov.Vh.shape[-1]
    reader = _reader_directions(mode, ov, qk)  # [L, H, d, r_reader]
    reader_rank = reader.shape[-1]
    reader_norm = reader.double().pow(2).sum(dim=(-2, -1)).sqrt()  # ‖R_B‖_F [L, H]
    # [d, L*H*r] once: columns grouped by (reader layer, reader head, reader component).
    reader_flat = reader.to(dtype).permute(2, 0, 1, 3).reshape(d_model, n_layers * n_heads * reader_rank)
    writer_sigma = ov.S.double()
    writer_norm = writer_sigma.pow(2).sum(dim=-1).sqrt()  # [L, H]
    # G[lw, hw, i, lr, hr] = ‖Vh_A[i] P_B Σ_B‖² for readers in later layers.
    read_sq = torch.zeros(n_layers, n_heads, rank, n_layers, n_heads, dtype=torch.float64)
    columns_per_layer = n_heads * reader_rank
    with torch.no_grad():
        for layer in range(n_layers - 1):
            writes = ov.Vh[layer].to(dtype).reshape(n_heads * rank, d_model)
            product = writes @ reader_flat[:, (layer + 1) * columns_per_layer:]
            later = n_layers - layer - 1
            squared = product.pow_(2).reshape(n_heads, rank, later, n_heads, reader_rank).sum(dim=-1)
            read_sq[layer, :, :, layer + 1:] = squared.double()
            del product
    safe_reader = reader_norm.clamp(min=1e-300)
    component = read_sq.sqrt() / safe_reader[None, None, None]
    component = torch.where(reader_norm[None, None, None] > 0, component, torch.zeros_like(component))
    numerator = (writer_sigma.pow(2)[..., None, None] * read_sq).sum(dim=2).sqrt()
    denominator = writer_norm[:, :, None, None] * reader_norm[None, None]
    full = torch.where(denominator > 0, numerator / denominator.clamp(min=1e-300), torch.zeros_like(numerator))
    baseline = random_baseline(d_model, rank, reader_rank, samples=baseline_samples, seed=seed)
    params = dict(mode=mode, effective=effective, baseline_samples=baseline_samples, seed=seed,
                  product_dtype=str(dtype).replace("torch.", ""))
    return CompositionScores(mode=mode, scores=full.float(), component_scores=component.float(),
                             writer_singular_values=ov.S, baseline=baseline, effective=effective, params=params)


# ----------------------------------------------------------------------------------------------------
# Everything at once
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelAnalysis:
    """Head SVDs plus composition scores for each requested mode."""

    ov: HeadSVD
    qk: HeadSVD
    composition: dict[str, CompositionScores]

    def to_frame(self, components_per_pair: int = 8) -> pd.DataFrame:
        frames = [self.ov.to_frame(), self.qk.to_frame()]
        frames += [scores.to_frame(components_per_pair) for scores in self.composition.values()]
        frame = pd.concat(frames, ignore_index=True)
        return tidy_frame(frame, extra_columns=("reader_layer", "reader_head", "mode", "component"))


def svd_channels(lm: LoadedModel, modes: Sequence[str] = COMPOSITION_MODES, *, effective: bool = True,
                 baseline_samples: int = 100, seed: int = 0) -> ChannelAnalysis:
    """Head SVDs (OV and QK) and composition scores for ``modes``, sharing the SVDs across modes.

    Examples:
        >>> import interp
        >>> channels = svd_channels(interp.load_model("tiny-gpt2"), baseline_samples=10)
        >>> sorted(channels.composition)
        ['K', 'Q', 'V']
    """
    unknown = [m for m in modes if m not in COMPOSITION_MODES]
    if unknown or not modes:
        raise OptionError(f"unknown composition mode(s) {unknown or list(modes)}: use a subset of Q, K, V")
    ov = head_svd(lm, "OV", effective=effective)
    qk = head_svd(lm, "QK", effective=effective)
    composition = {
        mode: composition_scores(lm, mode, effective=effective, baseline_samples=baseline_samples, seed=seed,
                                 ov=ov, qk=qk)
        for mode in modes
    }
    return ChannelAnalysis(ov=ov, qk=qk, composition=composition)
