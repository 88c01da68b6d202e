"""Choose a steering setting by its effect: scores → screen → confirmation → :class:`SteeringChoice`.

1. **Scores** (SAE methods). For every SAE feature: the *input* scores of the suite's discovery (``Δ_f``, the
   target-minus-English mean activation over the tokens of matched sentences, and the monolinguality ratio,
   Deng et al. 2025) and the logit-lens share of the language's tokens among the 50 tokens the feature's
   decoder row promotes; then, for the candidates (the best by each of these), the *output* score (Arad et al.
   2025): the shift of the next-token probability mass on the target language's tokens when the feature is
   amplified, ``x ← x + s·r̄·d̂_f`` at every position, in one batched forward pass over English prompts
   (:func:`interp.steering.effects.output_scores`). Candidates are ranked by the output score (the input
   score, monolinguality, breaks ties): rule ``"output score"``.
2. **Screen.** The best ``candidates`` single features, their equal-weight sum (``sae-features``) and the
   SAE-reconstructed mean difference (``sae-mean-diff``) — or, for ``method="mean-diff"``, the dense direction —
   each at every strength (fractions of the residual norm ``r̄``), generated on the screening prompts and
   scored by coherent success (:mod:`interp.steering.evaluate`).
3. **Confirmation.** The best ``finalists`` settings of the screen again on the confirmation prompts; the
   choice is the best by coherent success over both prompt sets (then fluent success, then the smaller
   strength).

The screening and confirmation prompts default to the shipped tuning prompts, which are disjoint from the
held-out and blind-test prompts every reported number uses.

Examples:
    >>> # skipped: trains or loads an SAE and generates hundreds of continuations (minutes on a CPU)
    >>> import interp
    >>> from interp.steering import select_steering
    >>> lm = interp.load_model("gemma-3-270m")                         # doctest: +SKIP
    >>> choice = select_steering(lm, "fr")                               # doctest: +SKIP
    >>> choice.describe(), choice.scores["coherent_success"]            # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from interp.attribution.language_steering import Embedder, LanguageIdentifier, token_mean_features
from interp.errors import OptionError
from interp.models import LoadedModel
from interp.steering.choice import SteeringChoice
from interp.steering.coherence import CoherenceJudge, coherence_judge
from interp.steering.directions import direction_spec, feature_direction, sae_mean_diff_direction, unit
from interp.steering.effects import language_token_sets, logit_lens_scores, output_scores, residual_norm
from interp.steering.evaluate import baseline, evaluate_edits, summarise

#: Languages whose text the token sets and input scores compare (the shipped matched sentences).
LANGUAGES = ("en", "fr", "es", "de")
#: Strengths screened, as fractions of the residual norm r̄ at the edited layer.
DEFAULT_STRENGTHS = (0.06, 0.08, 0.1, 0.13, 0.16)
#: Held-out prose paragraphs the coherence judge is calibrated on (two windows each).
JUDGE_TEXTS = 300
#: Strength of the one-pass output score (a fraction of r̄).
PROBE_STRENGTH = 0.1


#: The method in words (the language-steering report's notes).
METHOD_NOTES = (
    "What is steered: x ← x + s·r̄·û at blocks.L.hook_resid_post, every position, where û is a unit direction and r̄ "
    "the layer's mean residual norm over ordinary text (so strengths s compare across features, layers and "
    "methods). Directions: one SAE feature's decoder row; the normalised sum of the best three; the SAE-"
    "reconstructed mean difference (Σ Δ_f·W_dec[f] over the features more active on the language than on English); "
    "the dense difference of mean last-token residuals of matched sentences.",
    "How features are chosen: by their effect (Arad et al. 2025). Each candidate (the best by logit-lens share of "
    "the language's tokens, by Δ_f and by monolinguality) is amplified in one batched forward pass over English "
    "prompts and ranked by the shift of next-token probability mass onto the language's tokens (tokens at least 4× "
    "more frequent in the language's corpus text than in any other's); monolinguality breaks ties. The best three, "
    "their sum and the SAE mean difference are screened at every strength on 12 tuning prompts, the best three "
    "settings confirmed on 24 more, and the best by coherent success over all 36 is chosen.",
    "How it is scored: success = fastText lid.176 (offline) labels the continuation as the target; fluent = success, "
    "confidence ≥ 0.5 and at least half the words distinct; coherent = fluent and the unsteered model's loss on the "
    "continuation alone no higher than the 95th percentile of its loss on held-out natural text of the language "
    "(parallel prose windows) of the same length. Targets use coherent success. Fidelity: multilingual-e5 cosine "
    "of steered and unsteered continuations, against the cosine of unrelated continuations.",
    "Prompts: selection uses only the shipped tuning prompts; the headline is on the 28 held-out prompts "
    "(steering_prompts_en.txt after the first 12) and on 40 blind-test prompts; no prompt was used to find features.",
)

#: The papers the method follows.
REFERENCES = (
    "Chou et al., Causal Language Control in Multilingual Transformers via Sparse Feature Steering, "
    "ACL SRW 2025, arXiv 2507.13410.",
    "Arad, Mueller & Belinkov, SAEs Are Good for Steering — If You Select the Right Features, EMNLP 2025, "
    "arXiv 2505.20063.",
    "Deng et al., Unveiling Language-Specific Features in LLMs via Sparse Autoencoders, ACL 2025.",
    "Gao et al., Scaling and evaluating sparse autoencoders (TopK SAEs), 2024.",
)


class Stages:
    """Times each selection stage and prints it once when it ends (unless quiet)."""

    def __init__(self, quiet: bool) -> None:
        self.seconds: dict[str, float] = {}
        self.quiet = quiet

    def run(self, name: str) -> _Stage:
        return _Stage(self, name)


class _Stage:
    def __init__(self, stages: Stages, name: str) -> None:
        self.stages, self.name = stages, name

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        took = time.perf_counter() - self.started
        self.stages.seconds[self.name] = round(took, 1)
        if not self.stages.quiet and exc[0] is None:
            print(f"[interp] steering selection: {self.name} took {took:.0f} s", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class FeatureScores:
    """Input and output scores of an SAE's candidate features for one language.

    Attributes:
        frame: one row per candidate: ``feature, output_shift, output_mass, output_top1, logit_lens_share,
            delta, monolinguality, target_active_share, rank`` (rank 0: the best by the output score).
        delta: ``Δ_f`` of every feature ``[d_sae]`` (the SAE-reconstructed mean difference uses it).
        norm: the residual norm the output scores were sized with.
        rule: the ranking rule, in words.
    """

    frame: pd.DataFrame
    delta: Float[Tensor, " d_sae"] = field(repr=False)
    norm: float
    rule: str = "output score (shift of next-token mass on target-language tokens), monolinguality breaks ties"

    def best(self, n: int) -> list[int]:
        return [int(f) for f in self.frame.sort_values("rank")["feature"].head(n)]


def _texts_by_language(languages: Sequence[str], tokenizer: Any, tokens_per_language: int = 20_000) -> dict[str, list[str]]:
    from interp.corpus import build_corpus

    corpus = build_corpus(tuple(languages), tokens_per_language=tokens_per_language, tokenizer=tokenizer, seed=0)
    out: dict[str, list[str]] = {lang: [] for lang in languages}
    for text, lang in zip(corpus.texts, corpus.languages, strict=True):
        out[lang].append(text)
    return out


def feature_scores(
    lm: LoadedModel, trained: Any, target: str, token_set: Tensor, probe_prompts: Sequence[str], *, norm: float,
    probe_strength: float = PROBE_STRENGTH, sentences: dict[str, list[str]] | None = None, pool: int = 48,
) -> FeatureScores:
    """Input scores of every feature, and the output score of the best ``pool`` by the logit lens plus the
    best ``pool // 2`` by ``Δ`` and by monolinguality (see the module docstring)."""
    from interp.corpus import parallel_sentences

    sentences = sentences if sentences is not None else parallel_sentences("discovery")
    if target not in sentences or "en" not in sentences:
        raise OptionError(f"no matched sentences for {target!r}: available {sorted(sentences)}")
    sae = trained.sae
    z = {lang: token_mean_features(lm, trained, texts) for lang, texts in sentences.items()}
    target_mean = z[target].mean(0)
    delta = target_mean - z["en"].mean(0)
    others = torch.stack([z[lang].mean(0) for lang in z if lang != target]).max(0).values
    ratio = target_mean / (others + 1e-6 * float(target_mean.max()) + 1e-12)
    active = (z[target] > 0).float().mean(0)
    mono = torch.where((delta > 0) & (active >= 0.5), ratio, torch.zeros_like(ratio))
    directions = sae.W_dec.detach().float().cpu()
    lens = logit_lens_scores(lm, directions, token_set)
    picked: list[int] = []
    for order in (torch.argsort(lens, descending=True)[:pool], torch.argsort(delta, descending=True)[:pool // 2],
                  torch.argsort(mono, descending=True)[:pool // 2]):
        picked += [int(f) for f in order if int(f) not in picked]
    out = output_scores(lm, int(trained.layer), directions[picked], token_set, probe_prompts,
                        strength=probe_strength, norm=norm)
    frame = pd.DataFrame({
        "feature": picked, "output_shift": out.shift.numpy(), "output_mass": out.mass.numpy(),
        "output_top1": out.top1.numpy(), "logit_lens_share": lens[picked].numpy(),
        "delta": delta[picked].numpy(), "monolinguality": mono[picked].numpy(),
        "target_active_share": active[picked].numpy(),
    })
    frame = frame.sort_values(["output_shift", "monolinguality"], ascending=False).reset_index(drop=True)
    frame["rank"] = range(len(frame))
    frame["base_mass"] = out.base_mass
    return FeatureScores(frame=frame, delta=delta, norm=norm)


def select_steering(
    lm: LoadedModel,
    target: str,
    *,
    method: str = "sae",
    sae: Any = None,
    layer: int | None = None,
    screen_prompts: Sequence[str] | None = None,
    confirm_prompts: Sequence[str] | None = None,
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
    candidates: int = 3,
    finalists: int = 3,
    probe_strength: float = PROBE_STRENGTH,
    max_new_tokens: int = 24,
    batch_size: int = 32,
    judge: CoherenceJudge | None = None,
    identifier: LanguageIdentifier | None = None,
    embedder: Embedder | None = None,
    progress: bool | None = None,
    seed: int = 0,
) -> SteeringChoice:
    """Choose a steering setting for ``target`` on ``lm`` by what it does (see the module docstring).

    Args:
        method: ``sae`` (one feature, several features, or the SAE-reconstructed mean difference: whichever
            the screen and confirmation find best) or ``mean-diff`` (the dense direction).
        sae: a :class:`~interp.sae.TrainedSAE`, an SAE folder, or None for the suite's cached SAE at ``layer``
            (trained on first use). Ignored for ``mean-diff``.
        layer: the edited block (default: the SAE's layer, else the suite's default layer for the model).
        screen_prompts, confirm_prompts: English prompts (defaults: the shipped tuning prompts, 12 and 24).
        strengths: edit sizes screened, as fractions of the residual norm.
        candidates: single features screened (the best by the output score).
        finalists: settings carried from the screen to the confirmation.
        judge: the coherence judge (default: calibrated on held-out text of the target language).
        progress: progress bars and one line per stage (None: only when stderr is a terminal; the stage lines
            are printed unless ``progress=False``).

    Returns:
        The :class:`SteeringChoice`, with the candidates' input and output scores, the screen and the
        confirmation in ``scores``, and the time of each stage in ``seconds``.
    """
    from interp import __version__
    from interp.attribution.language_steering import _resolve_sae, default_layer, mean_difference_directions
    from interp.corpus import parallel_sentences, steering_tuning_prompts

    if method not in ("sae", "mean-diff"):
        raise OptionError(f"method must be 'sae' or 'mean-diff'; got {method!r}")
    check_target(target)
    if not strengths or any(not (0 < s <= 4) or not math.isfinite(s) for s in strengths):
        raise OptionError(f"strengths are fractions of the residual norm in (0, 4]; got {list(strengths)}")
    if candidates < 1 or finalists < 1:
        raise OptionError("candidates and finalists must be at least 1")
    tuning = steering_tuning_prompts()
    screen = list(screen_prompts) if screen_prompts is not None else tuning[:12]
    confirm = list(confirm_prompts) if confirm_prompts is not None else tuning[12:36]
    if not screen:
        raise OptionError("give at least one screening prompt")
    stages = Stages(quiet=progress is False)
    trained = None
    if method == "sae":
        with stages.run("SAE (train or load)"):
            trained = _resolve_sae(lm, sae, layer)
        if layer is not None and layer != trained.layer:
            raise OptionError(f"the SAE reads layer {trained.layer} but layer={layer} was asked for")
        layer = int(trained.layer)
    layer = default_layer(lm) if layer is None else int(layer)
    if not 0 <= layer < lm.n_layers:
        raise OptionError(f"layer must be in 0..{lm.n_layers - 1} for {lm.name}; got {layer}")
    sentences = parallel_sentences("discovery")
    with stages.run("reference text (token sets, residual norm, coherence judge)"):
        texts = _texts_by_language(LANGUAGES if target in LANGUAGES else (*LANGUAGES, target), lm.tokenizer)
        token_sets = language_token_sets(lm, texts)
        norm = residual_norm(lm, layer, [s for lang in sentences for s in sentences[lang]])
        if judge is None:
            judge = default_judge(lm, [target], max_tokens=max_new_tokens)
    edits: dict[str, Any] = {}
    meta: dict[str, dict[str, Any]] = {}
    scores = None
    dense_cosine = float("nan")
    if method == "sae":
        assert trained is not None
        with stages.run("feature scores (input and output)"):
            scores = feature_scores(lm, trained, target, token_sets[target], screen[:8], norm=norm,
                                    probe_strength=probe_strength, sentences=sentences)
        top = scores.best(candidates)
        directions: dict[str, tuple[str, tuple[int, ...], Tensor]] = {
            f"sae f{f}": ("sae", (f,), feature_direction(trained.sae, [f])) for f in top}
        if len(top) > 1:
            directions["sae-features " + "+".join(map(str, top))] = ("sae-features", tuple(top),
                                                                     feature_direction(trained.sae, top))
        positive = tuple(int(f) for f in torch.nonzero(scores.delta > 0).flatten())
        if positive:
            directions["sae-mean-diff"] = ("sae-mean-diff", positive, sae_mean_diff_direction(trained.sae, scores.delta))
            dense = unit(mean_difference_directions(lm, [layer], [target], sentences=sentences)[(target, layer)])
            # how close the SAE's reconstruction of the mean difference comes to the dense direction itself
            dense_cosine = float(directions["sae-mean-diff"][2] @ dense)
    else:
        dense = mean_difference_directions(lm, [layer], [target], sentences=sentences)[(target, layer)]
        directions = {"mean-diff": ("mean-diff", (), unit(dense))}
    for name, (kind, feats, direction) in directions.items():
        for s in strengths:
            label = f"{name} s={s:g}"
            edits[label] = direction_spec(layer, direction, s, norm, label=label)
            meta[label] = {"method": kind, "features": feats, "strength": float(s), "direction": name, "mode": "add",
                           "positions": "all"}

    with stages.run(f"screen ({len(edits)} settings × {len(screen)} prompts)"):
        frame, _ = evaluate_edits(lm, edits, screen, target, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                  judge=judge, identifier=identifier, progress=progress)
        screened = _ranked(summarise(frame), meta)
    best_labels = list(screened["label"].head(finalists))
    # Variants of the screen's best setting: the edit at new positions only, clamped instead of added, and the
    # strength 15% either side (the screen's grid is coarse where success switches on); each is run on the
    # screening prompts too, so every finalist is judged on the same 36 prompts.
    top = meta[best_labels[0]]
    top_direction = directions[top["direction"]][2]
    single = top["method"] == "sae"
    variants = {"new positions": {"positions": "new"}, "clamp": {"mode": "clamp"},
                "weaker": {"strength": round(top["strength"] * 0.85, 4)},
                "stronger": {"strength": round(top["strength"] * 1.15, 4)}}
    extra: dict[str, Any] = {}
    for name, change in variants.items():
        settings = {"mode": "add", "positions": "all", "strength": top["strength"], **change}
        label = f"{best_labels[0]} ({name})"
        extra[label] = direction_spec(layer, top_direction, settings["strength"], norm, mode=settings["mode"],
                                      positions=settings["positions"], sae=trained.sae if single and trained else None,
                                      feature=top["features"][0] if single else None, label=label)
        meta[label] = {**top, **settings}
    edits.update(extra)
    finalists_all = best_labels + list(extra)
    with stages.run(f"confirmation ({len(finalists_all)} settings × {len(confirm)} prompts, variants on the screen)"):
        parts = [frame[frame["label"].isin(best_labels)]]
        variant_frame, _ = evaluate_edits(lm, extra, screen, target, max_new_tokens=max_new_tokens,
                                          batch_size=batch_size, judge=judge, identifier=identifier, progress=progress)
        parts.append(variant_frame)
        if confirm:
            confirm_frame, _ = evaluate_edits(lm, {lab: edits[lab] for lab in finalists_all}, confirm, target,
                                              max_new_tokens=max_new_tokens, batch_size=batch_size, judge=judge,
                                              identifier=identifier, progress=progress)
            parts.append(confirm_frame)
        confirmed = _ranked(summarise(pd.concat(parts, ignore_index=True)), meta)
    chosen = confirmed.iloc[0]
    label = str(chosen["label"])
    info = meta[label]
    fidelity_scores: dict[str, float] = {}
    with stages.run("fidelity of the chosen setting"):  # on the confirmation prompts, against the unsteered text
        prompts_for_fidelity = confirm or screen
        base = baseline(lm, prompts_for_fidelity, max_new_tokens=max_new_tokens, batch_size=batch_size,
                        embedder=embedder)
        fid_frame, _ = evaluate_edits(lm, {label: edits[label]}, prompts_for_fidelity, target,
                                      max_new_tokens=max_new_tokens, batch_size=batch_size, judge=None,
                                      identifier=identifier, embedder=embedder, base=base, with_fidelity=True)
        fidelity_scores = {"fidelity": float(fid_frame["fidelity"].mean()),
                           "unrelated_similarity": base.unrelated_similarity}
    rule = ("output score (shift of next-token probability mass on target-language tokens), monolinguality breaks "
            "ties; then coherent success on the screen and the confirmation") if method == "sae" else \
        "dense mean difference; strength by coherent success on the screen and the confirmation"
    digest = _sae_digest(trained) if trained is not None else ""
    return SteeringChoice(
        method=info["method"], model=lm.name, backend=lm.backend, target=target, layer=layer,
        strength=info["strength"], mode=info["mode"], positions=info["positions"], features=info["features"],
        sae_path=str(trained.path) if trained is not None and trained.path else "",
        sae_hook=trained.hook_name if trained is not None else "", sae_digest=digest, residual_norm=norm, rule=rule,
        scores={
            "coherent_success": float(chosen["coherent_success"]), "fluent_success": float(chosen["fluent_success"]),
            "success": float(chosen["success"]), "prompts": int(chosen["prompts"]), **fidelity_scores,
            "screen_prompts": len(screen), "confirm_prompts": len(confirm),
            "candidates": scores.frame.head(24).to_dict("records") if scores is not None else [],
            "screen": screened.drop(columns=["direction"], errors="ignore").to_dict("records"),
            "confirmation": confirmed.drop(columns=["direction"], errors="ignore").to_dict("records"),
            "judge_windows": judge.windows.get(target, 0), "token_set_size": int(token_sets[target].numel()),
            "sae_mean_diff_cosine_with_dense": dense_cosine,
        },
        seconds=stages.seconds,
        provenance={"suite_version": __version__, "seed": seed, "max_new_tokens": max_new_tokens,
                    "strengths": list(strengths), "candidates": candidates, "finalists": finalists,
                    "probe_strength": probe_strength, "chosen": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                    "dtype": str(lm.dtype).removeprefix("torch.")},
    )


def _ranked(summary: pd.DataFrame, meta: dict[str, dict[str, Any]]) -> pd.DataFrame:
    summary = summary.copy()
    summary["method"] = [meta[label]["method"] for label in summary["label"]]
    summary["strength"] = [meta[label]["strength"] for label in summary["label"]]
    summary["mode"] = [meta[label]["mode"] for label in summary["label"]]
    summary["positions"] = [meta[label]["positions"] for label in summary["label"]]
    summary["features"] = [list(meta[label]["features"]) for label in summary["label"]]
    keys = ["coherent_success", "fluent_success", "success"] if "coherent_success" in summary else ["fluent_success", "success"]
    summary["_neg_strength"] = -summary["strength"]
    ordered = summary.sort_values([*keys, "_neg_strength"], ascending=False, kind="stable")
    return ordered.drop(columns=["_neg_strength"]).reset_index(drop=True)


def default_judge(lm: LoadedModel, languages: Sequence[str], *, max_tokens: int = 24) -> CoherenceJudge:
    """The coherence judge calibrated on held-out text of each language (see :mod:`interp.steering.coherence`).

    Calibrating reads a few hundred windows through the model (a minute on a CPU for gemma-3-270m), so each
    language's threshold table is cached under the cache directory, keyed by model, backend, dtype, length and
    a digest of the reference text.
    """
    import hashlib
    import json

    import numpy as np

    from interp.cache import model_cache_folder
    from interp.results import atomic_write

    texts = reference_texts(languages)
    thresholds: dict[str, np.ndarray] = {}
    windows: dict[str, int] = {}
    for lang in languages:
        key = hashlib.sha256(json.dumps([lm.name, lm.backend, str(lm.dtype), max_tokens, texts[lang]]).encode())
        path = model_cache_folder("steering", lm.name) / lm.backend / f"judge-{lang}-{key.hexdigest()[:12]}.json"
        try:
            data = json.loads(path.read_text())
            thresholds[lang], windows[lang] = np.asarray(data["thresholds"], dtype=float), int(data["windows"])
            continue
        except (OSError, ValueError, KeyError, TypeError):
            pass  # not cached yet (or damaged): calibrate
        judge = coherence_judge(lm, {lang: texts[lang]}, max_tokens=max_tokens)
        thresholds[lang], windows[lang] = judge.thresholds[lang], judge.windows[lang]
        atomic_write(path, json.dumps({"thresholds": thresholds[lang].tolist(), "windows": windows[lang]}))
    return CoherenceJudge(thresholds=thresholds, quantile=0.95, windows=windows)


def reference_texts(languages: Sequence[str]) -> dict[str, list[str]]:
    """Held-out natural text per language for the coherence judge: the held-out parallel prose when the
    prose corpus is present, else the shipped parallel sentences and the language's catalog messages that
    are not used for SAE training."""
    from interp import corpus

    prose = getattr(corpus, "parallel_prose", None)
    if prose is not None:
        try:
            held = prose("heldout")
            if all(len(held.get(lang, [])) >= 50 for lang in languages):
                return {lang: list(held[lang][:JUDGE_TEXTS]) for lang in languages}
        except corpus.CorpusError:
            pass
    sentences = corpus.parallel_sentences()
    return {lang: list(sentences[lang]) for lang in languages}


def check_target(target: str) -> None:
    if target not in LANGUAGES[1:]:
        raise OptionError(f"target must be one of fr, es, de (the languages with shipped matched sentences and "
                          f"reference text); got {target!r}")


def _sae_digest(trained: Any) -> str:
    from interp.cache import sha256_file

    if trained.path is not None:
        weights = trained.path / "sae_weights.safetensors"
        if weights.is_file():
            return sha256_file(weights)
    import hashlib

    digest = hashlib.sha256()
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        tensor = getattr(trained.sae, name, None)
        if tensor is not None:
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


__all__ = ["DEFAULT_STRENGTHS", "METHOD_NOTES", "REFERENCES", "FeatureScores", "check_target", "default_judge", "feature_scores",
           "reference_texts", "select_steering"]
