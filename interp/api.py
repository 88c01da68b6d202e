"""The Python entry point: ``interp.run(analysis, model, prompts=None, **options) -> Result``.

It resolves the model and prompts, seeds every generator, times the work and stamps the Result with its
provenance (model, source, dtype, processing flags, BOS, prompts, seed, suite version, time taken).

Examples:
    >>> import interp
    >>> result = interp.run("attention-sinks", "tiny-gpt2", prompts=["The cat sat.", "A dog ran."], progress=False)
    >>> result.metadata["model"]["source"]
    'test'
"""

from __future__ import annotations

import dataclasses
import platform
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from interp.errors import OptionError, PromptError
from interp.models import DEFAULT_MODEL, LoadedModel, load_model
from interp.registry import get_analysis
from interp.results import Result


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_prompts(analysis_name: str, prompts: str | Path | Sequence[str] | None, max_prompts: int | None) -> list[str]:
    from interp.data import load_prompts

    analysis = get_analysis(analysis_name)
    if prompts is None:
        if analysis.default_prompts is None:
            resolved: list[str] = []
        else:
            resolved = list(analysis.default_prompts())
    elif isinstance(prompts, str | Path):
        resolved = load_prompts(prompts)
    else:
        resolved = [str(p) for p in prompts]
        if not resolved:
            raise PromptError("the prompt set is empty: give at least one non-empty prompt")
    if max_prompts is not None:
        if max_prompts < 1:
            raise OptionError(f"max_prompts must be at least 1, got {max_prompts}")
        resolved = resolved[:max_prompts]
    return resolved


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("interp", "torch", "transformer-lens", "transformers", "sae-lens"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def run(
    analysis: str,
    model: str | LoadedModel = DEFAULT_MODEL,
    prompts: str | Path | Sequence[str] | None = None,
    *,
    batch_size: int = 8,
    max_prompts: int | None = None,
    seed: int = 0,
    dtype: str = "float32",
    device: str = "auto",
    backend: str | None = None,
    device_map: str | dict[str, Any] | None = None,
    max_memory: str | dict[Any, Any] | None = None,
    offload_folder: str | Path | None = None,
    progress: bool | None = None,
    remote: bool = False,
    **options: Any,
) -> Result:
    """Run a registered analysis and return its :class:`~interp.results.Result`.

    Args:
        analysis: a name from ``interp list`` (e.g. ``"attention-sinks"``).
        model: a model name (see :func:`interp.load_model`) or an already loaded model.
        prompts: None for the analysis's shipped set, a file path (lines or JSONL with ``text``), or texts.
        batch_size: prompts per forward pass.
        max_prompts: use only the first N prompts.
        seed: seeds Python, NumPy and torch before the analysis runs.
        dtype, device, backend, device_map, max_memory, offload_folder: how a named model is loaded
            (:func:`interp.load_model`); ignored for an already loaded model, whose own provenance is recorded.
        remote: run every pass on NDIF (``backend="nnsight"``; see :mod:`interp.backends.ndif`).
        options: analysis-specific options (``interp list`` shows them).
    """
    spec = get_analysis(analysis)
    unknown = set(options) - set(spec.options)
    if unknown:
        accepted = ", ".join(sorted(spec.options)) or "none"
        raise OptionError(f"unknown option(s) {sorted(unknown)} for {analysis}: accepted {accepted}")
    if batch_size < 1:
        raise OptionError(f"batch size must be at least 1, got {batch_size}")
    if remote or (isinstance(model, LoadedModel) and model.remote is not None):
        from interp.backends.ndif import check_remote_analysis

        check_remote_analysis(analysis)  # before the load: one line saying why not
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    lm = model if isinstance(model, LoadedModel) else load_model(
        model, dtype=dtype, device=device, backend=backend, device_map=device_map, max_memory=max_memory,
        offload_folder=offload_folder, remote=remote)
    traffic_before = lm.remote.snapshot() if lm.remote is not None else None
    if lm.is_encoder and not spec.encoder_ok:
        raise OptionError(f"{analysis} needs a decoder (causal) model; {lm.name} is an encoder")
    prompt_list = resolve_prompts(analysis, prompts, max_prompts)
    seed_everything(seed)
    result = spec.run(lm, prompt_list, batch_size=batch_size, progress=progress, seed=seed, **options)
    elapsed = time.perf_counter() - started
    metadata = {
        "analysis": analysis,
        "model": lm.info.as_dict(),
        "prompts": {"count": len(prompt_list), "source": _prompt_source(prompts), "texts": prompt_list},
        "seed": seed,
        "batch_size": batch_size,
        "options": options,
        "versions": library_versions(),
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(elapsed, 3),
        **dict(result.metadata),
    }
    if lm.remote is not None:
        metadata["remote"] = lm.remote.provenance(traffic_before)
    return dataclasses.replace(result, metadata=metadata)


def atlas(
    model: str | LoadedModel = DEFAULT_MODEL,
    prompts: str | Path | Sequence[str] | None = None,
    **options: Any,
) -> Result:
    """The head atlas of ``model`` (``interp run head-atlas``): every head's detector scores against their
    nulls, its roles, importance, Ships and composition partners; ``result.to_html(path)`` writes the page.

    ``options`` are :func:`run`'s keywords (``batch_size``, ``max_prompts``, ``seed``, ``backend`` …) and the
    analysis options (``interp list``: ``thresholds``, ``roles``, ``include_bos`` …).

    Examples:
        >>> import interp
        >>> result = interp.atlas("tiny-gpt2", prompts=["The cat sat on the mat."], importance_sequences=0,
        ...                       progress=False)
        >>> sorted(result.metadata["atlas"])[:3]
        ['confidence', 'examples', 'importance']
    """
    return run("head-atlas", model, prompts, **options)


def explain(
    model: str | LoadedModel,
    prompt: str | Sequence[str],
    target: Any = None,
    methods: Sequence[str] | str | None = None,
    **options: Any,
) -> Any:
    """Token attributions of ``model``'s prediction on ``prompt`` by attention and by gradients.

    Args:
        model: a loaded model or a model name (loaded with the defaults).
        prompt: one prompt or a list (decoders: the next token is explained; encoders: the one ``[MASK]``).
        target: None (the model's top prediction), a token string such as ``" Paris"``, or a pair
            ``(" Paris", " Rome")`` for the logit difference; a list gives one per prompt.
        methods: names from :data:`interp.attribution.token_attribution.METHODS` (default all):
            ``attention_last``, ``attention_mean``, ``rollout``, ``flow``, ``top_head``, ``saliency``,
            ``gradient_x_input``, ``integrated_gradients``, ``occlusion``, ``kernel_shap``.
        options: :func:`~interp.attribution.token_attribution.token_attributions`'s keywords (``steps``,
            ``samples``, ``top_head``, ``max_rows``, ``seed``).

    Returns a :class:`~interp.attribution.token_attribution.TokenAttributions`: ``.frame`` has one row per
    (prompt, token, method), ``.convergence_delta`` integrated gradients' delta per prompt.

    Examples:
        >>> import interp
        >>> explained = interp.explain("tiny-llama", "The cat", target="s", methods=["saliency", "rollout"])
        >>> sorted(explained.frame["method"].unique()), explained.target_text
        (['rollout', 'saliency'], ('s',))
    """
    from interp.attribution.token_attribution import token_attributions
    from interp.models import load_model

    lm = load_model(model) if isinstance(model, str) else model
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    return token_attributions(lm, prompts, target, methods=methods, **options)


def _prompt_source(prompts: object) -> str:
    if prompts is None:
        return "shipped default set"
    if isinstance(prompts, str | Path):
        return f"file {prompts}"
    return "given in Python"
