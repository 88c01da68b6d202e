"""``interp.steer_language``: generate with the language steered, out of the box.

With nothing but a model, prompts and a target language, :func:`steer_language` uses the cached
:class:`~interp.steering.SteeringChoice` for (model, backend, method, SAE, language); when there is none it
trains (or loads) the suite's SAE, selects a setting with :func:`~interp.steering.select_steering` (one line
per stage with its time), caches the choice under ``interp.cache.cache_dir()/steering`` and uses it. A choice
given with ``choice=`` is used as it is, after checking that it was made for this model and this SAE.

Examples:
    >>> import interp
    >>> from interp.steering import SteeringChoice
    >>> lm = interp.load_model("tiny-gpt2")        # random weights: the text is noise, the plumbing is real
    >>> choice = SteeringChoice(method="mean-diff", model=lm.name, backend=lm.backend, target="fr", layer=1,
    ...                         strength=0.5, residual_norm=8.0)
    >>> out = interp.steer_language(lm, "The weather today is", "fr", choice=choice, max_new_tokens=4,
    ...                             evaluate=False)
    >>> len(out.texts), out.fluent_success_rate         # evaluate=False: no scores, the rates are NaN
    (1, nan)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from interp.attribution.language_steering import (
    Embedder,
    LanguageIdentifier,
    SteeringResult,
    continuation_loss,
    fidelity,
    score_language,
    steering_hooks,
    unrelated_similarity,
)
from interp.errors import OptionError
from interp.generation import GenerationState, generate
from interp.models import LoadedModel
from interp.steering.choice import (
    CHOICE_FORMAT,
    METHODS,
    MODES,
    POSITIONS,
    SteeringChoice,
    SteeringChoiceError,
)
from interp.steering.directions import choice_spec
from interp.steering.selection import _sae_digest, select_steering


def choice_cache_path(lm: LoadedModel, target: str, method: str, *, sae_digest: str = "", layer: int | None = None,
                      key: dict[str, Any] | None = None) -> Path:
    """Where the selected choice for (model, backend, method, SAE or layer, language) is cached."""
    from interp.cache import model_cache_folder
    from interp.steering.selection import DEFAULT_STRENGTHS, PROBE_STRENGTH

    identity = {"format": CHOICE_FORMAT, "strengths": list(DEFAULT_STRENGTHS), "probe": PROBE_STRENGTH,
                "sae": sae_digest, "layer": layer, **(key or {})}
    tag = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return model_cache_folder("steering", lm.name) / lm.backend / f"{method}-{target}-{tag}.json"


def cached_choices(lm: LoadedModel, target: str | None = None, method: str | None = None) -> list[Path]:
    """The choices cached for this model and backend (newest first), optionally for one language and method;
    nothing is selected or trained."""
    from interp.cache import model_cache_folder

    folder = model_cache_folder("steering", lm.name) / lm.backend
    pattern = f"{method or '*'}-{target or '*'}-*.json"
    found = [p for p in folder.glob(pattern) if not p.name.startswith(".")] if folder.is_dir() else []
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def _load_sae_for(lm: LoadedModel, choice: SteeringChoice, sae: Any) -> Any:
    """The SAE a choice steers with: the one given, else the choice's folder; its digest must match."""
    from interp.attribution.language_steering import _resolve_sae

    if sae is None:
        if not choice.sae_path or not Path(choice.sae_path).is_dir():
            raise SteeringChoiceError(f"the SAE this choice was made with is not at {choice.sae_path or '(none)'}: "
                                      "pass sae= (the same SAE) or select a new choice")
        sae = choice.sae_path
    trained = _resolve_sae(lm, sae, choice.layer)
    if int(trained.layer) != choice.layer:
        raise SteeringChoiceError(f"the SAE reads layer {trained.layer} but the choice edits layer {choice.layer}")
    if choice.sae_digest and _sae_digest(trained) != choice.sae_digest:
        raise SteeringChoiceError("this steering choice was made for another SAE (its weights' sha256 differ): "
                                  "select a choice for this SAE (interp.steering.select_steering)")
    return trained


def feature_delta(lm: LoadedModel, trained: Any, target: str) -> Any:
    """``Δ_f`` of every SAE feature: token-mean activation on the target's matched sentences minus English's."""
    from interp.attribution.language_steering import token_mean_features
    from interp.corpus import parallel_sentences

    sentences = parallel_sentences("discovery")
    return (token_mean_features(lm, trained, sentences[target]).mean(0)
            - token_mean_features(lm, trained, sentences["en"]).mean(0))


def cached_or_selected_choice(lm: LoadedModel, target: str, *, method: str = "sae", sae: Any = None,
                              layer: int | None = None, progress: bool | None = None,
                              identifier: LanguageIdentifier | None = None, embedder: Embedder | None = None) -> SteeringChoice:
    """The cached choice for this model, SAE (or layer) and language, selected and cached first if absent."""
    from interp.attribution.language_steering import _resolve_sae, default_layer

    trained = None
    if method == "sae":
        trained = _resolve_sae(lm, sae, layer)
        path = choice_cache_path(lm, target, method, sae_digest=_sae_digest(trained))
    else:
        path = choice_cache_path(lm, target, method, layer=default_layer(lm) if layer is None else layer)
    if path.is_file():
        try:
            return SteeringChoice.load(path)
        except SteeringChoiceError:
            pass  # a damaged cache entry is selected again below
    choice = select_steering(lm, target, method=method, sae=trained, layer=layer, progress=progress,
                             identifier=identifier, embedder=embedder)
    choice.save(path)
    return choice


def steer_language(
    model: LoadedModel | str,
    prompt: str | Sequence[str],
    target: str = "fr",
    *,
    choice: SteeringChoice | str | os.PathLike[str] | None = None,
    method: str = "sae",
    sae: Any = None,
    layer: int | None = None,
    features: Sequence[int] | int | None = None,
    strength: float | None = None,
    mode: str | None = None,
    positions: str | None = None,
    max_new_tokens: int = 24,
    batch_size: int = 16,
    evaluate: bool = True,
    progress: bool | None = None,
    identifier: LanguageIdentifier | None = None,
    embedder: Embedder | None = None,
) -> SteeringResult:
    """Generate from ``prompt`` with the language steered towards ``target``, and score the result.

    Args:
        model: a loaded model or a model name.
        prompt: one prompt or a list (generated as one batch).
        target: ``fr``, ``es`` or ``de``.
        choice: a :class:`~interp.steering.SteeringChoice` (or the path of one saved with ``save``). None: the
            cached choice for this model, method, SAE and language, selected on first use (minutes; the
            SAE is trained too when it is not cached: see :func:`interp.steering.select_steering`).
        method: without ``choice``: ``sae`` (SAE features, the default) or ``mean-diff`` (the dense direction).
        sae: the SAE to steer with (a :class:`~interp.sae.TrainedSAE`, a folder, an sae-lens SAE with
            ``layer``); default: the suite's SAE for ``layer`` (the model's default layer).
        layer: the edited block (default: the SAE's, else the model's default steering layer).
        features, strength, mode, positions: override those fields of the (cached or given) choice:
            ``features`` one SAE feature or several (their equal-weight sum), ``strength`` the edit size as a
            fraction of the layer's mean residual norm, ``mode`` ``add`` or ``clamp``, ``positions`` ``all`` or
            ``new``.
        evaluate: score language, coherence, fluency and fidelity (loads the scorers); False returns texts
            only, with every score "not measured".
        identifier, embedder: injectable scorers (defaults: fastText lid.176 lite, multilingual-e5-small).

    The model is unchanged afterwards: the steering hook is removed when generation ends.

    Raises:
        OptionError: an unknown language, method, mode or positions, or a strength or layer out of range.
        SteeringChoiceError: a choice file that is missing, malformed, or made for another model or SAE.

    Examples:
        >>> import interp
        >>> # skipped: the first call per language trains an SAE and selects a setting (minutes on a CPU)
        >>> out = interp.steer_language("gemma-3-270m", ["The weather today is"], "fr")   # doctest: +SKIP
        >>> out.texts[0], out.coherent_success_rate                                       # doctest: +SKIP
    """
    from interp.models import load_model
    from interp.steering.selection import check_target, default_judge

    lm = load_model(model) if isinstance(model, str) else model
    if lm.is_encoder:
        raise OptionError(f"{lm.name} is an encoder and cannot generate: steer a decoder model")
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise OptionError("give at least one prompt")
    check_target(target)
    if method not in ("sae", "mean-diff"):
        raise OptionError(f"method must be 'sae' or 'mean-diff' (or pass choice=); got {method!r}")
    if mode is not None and mode not in MODES:
        raise OptionError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if positions is not None and positions not in POSITIONS:
        raise OptionError(f"positions must be one of {', '.join(POSITIONS)}; got {positions!r}")
    if strength is not None and not (math.isfinite(strength) and 0 < strength <= 4):
        raise OptionError(f"strength is a fraction of the residual norm in (0, 4]; got {strength}")
    if layer is not None and not 0 <= layer < lm.n_layers:
        raise OptionError(f"layer must be in 0..{lm.n_layers - 1} for {lm.name}; got {layer}")
    if isinstance(choice, str | os.PathLike):
        choice = SteeringChoice.load(choice)
    if choice is None:
        choice = cached_or_selected_choice(lm, target, method=method, sae=sae, layer=layer, progress=progress,
                                           identifier=identifier, embedder=embedder)
    elif not isinstance(choice, SteeringChoice):
        raise OptionError("choice must be a SteeringChoice, the path of a saved one, or None")
    choice.check_model(lm.name, lm.backend)
    if choice.target != target:
        raise SteeringChoiceError(f"this steering choice steers towards {choice.target!r}, not {target!r}")
    if layer is not None and layer != choice.layer:
        raise OptionError(f"the choice edits layer {choice.layer} but layer={layer} was asked for")
    overrides: dict[str, Any] = {}
    if features is not None:
        feats = (features,) if isinstance(features, int) else tuple(int(f) for f in features)
        overrides.update(features=feats, method="sae" if len(feats) == 1 else "sae-features")
    if strength is not None:
        overrides["strength"] = float(strength)
    if mode is not None:
        overrides["mode"] = mode
    if positions is not None:
        overrides["positions"] = positions
    if overrides:
        choice = replace(choice, **overrides, rule=f"{choice.rule}; overridden by the caller: {sorted(overrides)}")
    trained, delta = None, None
    if choice.uses_sae:
        trained = _load_sae_for(lm, choice, sae)
        if choice.method == "sae-mean-diff":
            delta = feature_delta(lm, trained, target)
    if not math.isfinite(choice.residual_norm):
        from interp.corpus import parallel_sentences
        from interp.steering.effects import residual_norm

        sentences = parallel_sentences("discovery")
        choice = replace(choice, residual_norm=residual_norm(lm, choice.layer, [s for v in sentences.values() for s in v]))
    spec = choice_spec(lm, choice, trained.sae if trained is not None else None, delta)
    settings = {"target": target, "choice": choice.to_dict(), "method": choice.method, "layer": choice.layer,
                "features": list(choice.features), "strength": choice.strength, "mode": choice.mode,
                "positions": choice.positions, "residual_norm": choice.residual_norm,
                "edit_norm": choice.strength * choice.residual_norm}
    state = GenerationState()
    out = generate(lm, prompts, max_new_tokens, fwd_hooks=steering_hooks([spec] * len(prompts), state),
                   state=state, batch_size=batch_size, progress=progress)
    n = len(prompts)
    if not evaluate:
        nan = [float("nan")] * n
        return SteeringResult(prompts, out.texts, [None] * n, [None] * n, nan, [None] * n, [None] * n, nan, nan,
                              float("nan"), settings, out.seconds, evaluated=False, coherent=[None] * n)
    base = generate(lm, prompts, max_new_tokens, batch_size=batch_size)
    scores = score_language(out.texts, target, identifier)
    judge = default_judge(lm, [target], max_tokens=max_new_tokens)
    verdicts, _ = judge.judge(lm, out.token_ids, [target] * n)
    coherent: list[bool | None] = [bool(f and v) for f, v in zip(scores.fluent, verdicts, strict=True)]
    fid = fidelity(out.texts, base.texts, embedder)
    losses = continuation_loss(lm, out.prompt_ids, out.token_ids)
    return SteeringResult(
        prompts=prompts, texts=out.texts, baseline_texts=list(base.texts), languages=list(scores.languages),
        confidences=list(scores.confidences), success=list(scores.success), fluent=list(scores.fluent),
        fidelity=fid, fluency_loss=[float(x) for x in np.asarray(losses)],
        unrelated_similarity=unrelated_similarity(base.texts, embedder), settings=settings, seconds=out.seconds,
        coherent=coherent,
    )


__all__ = ["METHODS", "add_steer_arguments", "cached_choices", "cli_steer", "feature_delta", "cached_or_selected_choice", "choice_cache_path", "steer_language"]


def add_steer_arguments(parser: Any) -> None:
    """Arguments of ``interp steer``."""
    parser.add_argument("--model", default="gemma-3-270m", help="model name or local folder (default gemma-3-270m)")
    parser.add_argument("--target", required=True, help="target language: fr, es or de")
    parser.add_argument("--prompt", action="append", default=None, help="an English prompt (repeatable)")
    parser.add_argument("--prompts", default=None, help="prompt file, one per line (default: 4 shipped held-out prompts)")
    parser.add_argument("--method", default="sae", choices=["sae", "mean-diff"])
    parser.add_argument("--choice", default=None, help="a SteeringChoice JSON file (default: the cached one, selected "
                        "on first use)")
    parser.add_argument("--save-choice", default=None, help="write the choice used to this JSON file")
    parser.add_argument("--layer", type=int, default=None)
    parser.add_argument("--strength", type=float, default=None, help="fraction of the layer's residual norm")
    parser.add_argument("--mode", default=None, choices=list(MODES))
    parser.add_argument("--positions", default=None, choices=list(POSITIONS))
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--no-eval", action="store_true", help="generate only (no scorer is loaded)")
    parser.add_argument("--backend", default=None, choices=["hooked", "bridge"])


def cli_steer(args: Any) -> int:
    """``interp steer``: steered continuations on stdout (one per line, escaped), the rates and the choice."""
    from interp.corpus import steering_prompts
    from interp.data import read_lines
    from interp.models import load_model
    from interp.steering.selection import check_target

    check_target(args.target)  # before loading anything
    if args.choice is not None:
        SteeringChoice.load(args.choice)
    if args.prompt:
        prompts = list(args.prompt)
    elif args.prompts:
        if not Path(args.prompts).is_file():
            raise OptionError(f"--prompts {args.prompts!r} is not a file: give a text file with one prompt per line")
        prompts = [line for line in read_lines(Path(args.prompts)) if line.strip()]
    else:
        prompts = steering_prompts()[12:16]
    lm = load_model(args.model, **({"backend": args.backend} if args.backend else {}))
    out = steer_language(lm, prompts, args.target, choice=args.choice, method=args.method, layer=args.layer,
                         strength=args.strength, mode=args.mode, positions=args.positions,
                         max_new_tokens=args.max_new_tokens, evaluate=not args.no_eval)
    choice = SteeringChoice.from_dict(out.settings["choice"])
    for prompt, text in zip(out.prompts, out.texts, strict=True):
        print(json.dumps({"prompt": prompt, "steered": text}, ensure_ascii=False))
    print(f"# {choice.describe()} | rule: {choice.rule}")
    if out.evaluated:
        print(f"# success {out.success_rate:.3f}, fluent {out.fluent_success_rate:.3f}, "
              f"coherent {out.coherent_success_rate:.3f} on {len(prompts)} prompts")
    if args.save_choice:
        print(f"# choice written to {choice.save(args.save_choice)}")
    return 0
