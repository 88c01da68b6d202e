"""Sparse autoencoders through sae-lens: load a pretrained release, load a folder, or train one locally.

* :func:`load_sae` loads a pretrained SAE by sae-lens release and id (e.g. Gemma Scope, which needs the
  Hugging Face hub: without a network the error is one line) or an SAE folder saved by sae-lens.
* :func:`train_sae` trains a TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders")
  on a model's residual stream (``blocks.{layer}.hook_resid_post``) with sae-lens's
  ``LanguageModelSAETrainingRunner``, on the multilingual corpus of :mod:`interp.corpus`, and caches it
  under ``interp.models.cache_dir()/saes/<model>/<hook>-<settings>-<corpus fingerprint>``. BOS positions
  are left out of training (``exclude_special_tokens``): Gemma's first-token residual is orders of
  magnitude larger than the rest and would dominate the reconstruction loss.
* :func:`sae_quality` measures, independently of sae-lens's own evaluator, on texts not used for
  training: the fraction of variance explained ``1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²``, the mean number of active
  latents (L0), and the next-token cross-entropy of the model with and without the SAE's reconstruction
  spliced into the residual stream (non-BOS positions) — plus, for scale, with that residual zeroed.

Examples:
    >>> import interp
    >>> from interp.sae import train_sae
    >>> lm = interp.load_model("tiny-gpt2")
    >>> # skipped: trains through sae-lens's runner (tens of seconds even on a tiny model)
    >>> trained = train_sae(lm, layer=0, d_sae=128, k=8, training_tokens=20_000, progress=False)  # doctest: +SKIP
    >>> trained.quality.fve  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from interp.errors import HubUnavailableError, InterpUserError, OptionError
from interp.models import LoadedModel, TokenBatch, build_checked_cache

SAE_FORMAT_VERSION = 1

#: The default recipe of :func:`train_sae` / ``interp sae train`` (and the ``language-steering`` report).
DEFAULT_SAE: dict[str, Any] = {"d_sae": 2048, "k": 32, "training_tokens": 150_000, "epochs": 4,
                               "batch_size_tokens": 256, "lr": 2e-3, "context_size": 64, "aux_coefficient": 1.0}
#: torch threads of every SAE build (activations and training): another count changes the summation order
#: and so the trained weights, which is why the recipe fixes it (the refusal tune does the same). Two is the
#: core count of the machines the documented SAEs were built on; more cores are simply not used.
SAE_BUILD_THREADS = 2
#: Version of the build itself, part of the cache key. 2: sae-lens's runner is run under torch's global
#: generator seeded with the SAE seed. Version-1 builds took whatever state the process's generator was in
#: (the runner draws its initialisation and its buffer shuffles from it without seeding it), so the same
#: recipe gave different weights after another SAE had been trained, or a cached one loaded, in the process.
SAE_BUILD_VERSION = 2


@dataclass(frozen=True)
class SAEQuality:
    """Reconstruction quality of an SAE on held-out text (non-BOS tokens).

    Attributes:
        fve: fraction of variance explained.
        l0: mean number of active latents per token.
        ce_clean: the model's mean next-token loss.
        ce_spliced: the loss with the SAE's reconstruction in place of the residual stream.
        ce_zero: the loss with that residual stream zeroed (a scale for ``delta_ce``).
        delta_ce: ``ce_spliced − ce_clean``.
        dead_fraction: share of latents that never fired on the evaluation text.
        tokens: evaluation tokens.
    """

    fve: float
    l0: float
    ce_clean: float
    ce_spliced: float
    ce_zero: float
    delta_ce: float
    dead_fraction: float
    tokens: int

    @property
    def loss_recovered(self) -> float:
        """``(ce_zero − ce_spliced) / (ce_zero − ce_clean)``: 1 when splicing costs nothing."""
        span = self.ce_zero - self.ce_clean
        return float((self.ce_zero - self.ce_spliced) / span) if span > 0 else float("nan")

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "loss_recovered": self.loss_recovered}


@dataclass(frozen=True)
class TrainedSAE:
    """An SAE with where it came from.

    Attributes:
        sae: the sae-lens ``SAE`` (inference form: ``encode``, ``decode``, ``W_dec [d_sae, d_in]``).
        hook_name: the TransformerLens hook it reads, e.g. ``blocks.9.hook_resid_post``.
        layer: the block index of that hook.
        path: the folder it was loaded from or saved to.
        info: training settings, corpus statistics and timings (from ``interp_sae.json``).
        quality: reconstruction quality measured after training (None for loaded pretrained SAEs until
            :func:`sae_quality` is run).
    """

    sae: Any
    hook_name: str
    layer: int
    path: Path | None
    info: dict[str, Any]
    quality: SAEQuality | None = None


# ----------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------


def _layer_of(hook_name: str) -> int:
    parts = hook_name.split(".")
    if len(parts) >= 2 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    raise OptionError(f"SAE hook {hook_name!r} is not a per-block hook: language steering needs blocks.L.hook_*")


def load_sae(source: str | os.PathLike[str], sae_id: str | None = None, *, device: str = "cpu") -> TrainedSAE:
    """Load an SAE: a folder saved by sae-lens (or :func:`train_sae`), or a pretrained release + id.

    Args:
        source: a folder holding ``cfg.json`` + ``sae_weights.safetensors``, or an sae-lens release name
            such as ``"gemma-scope-2b-pt-res-canonical"``.
        sae_id: the SAE id inside the release, e.g. ``"layer_20/width_16k/canonical"`` (releases only).

    Examples:
        >>> # skipped: downloads from the Hugging Face hub (needs the network)
        >>> load_sae("gemma-scope-2b-pt-res-canonical", "layer_20/width_16k/canonical")  # doctest: +SKIP
    """
    from sae_lens import SAE

    folder = Path(source).expanduser()
    if folder.is_dir():
        if not (folder / "cfg.json").is_file():
            raise OptionError(f"SAE folder {str(folder)!r} has no cfg.json: give a folder saved by sae-lens")
        with _quiet():
            sae = SAE.load_from_disk(str(folder), device=device)
        info_path = folder / "interp_sae.json"
        info: dict[str, Any] = json.loads(info_path.read_text()) if info_path.is_file() else {"source": str(folder)}
        hook_name = sae.cfg.metadata.hook_name or info.get("hook_name", "")
        quality = SAEQuality(**info["quality"]) if isinstance(info.get("quality"), dict) else None
        return TrainedSAE(sae.eval(), hook_name, _layer_of(hook_name), folder, info, quality)
    if str(source).startswith((".", "/", "~")):
        raise OptionError(f"SAE folder {str(source)!r} does not exist: give a folder saved by sae-lens or a release name")
    if sae_id is None:
        raise OptionError(f"{source!r} is not a folder; for a pretrained release also give sae_id (e.g. layer_20/width_16k/canonical)")
    try:
        with _quiet():
            sae = SAE.from_pretrained(str(source), sae_id, device=device)
    except ValueError as error:
        if "not found" in str(error).lower() or "release" in str(error).lower():
            raise OptionError(f"unknown SAE release or id {source!r}/{sae_id!r}: {str(error).splitlines()[0]}") from error
        raise
    except Exception as error:  # noqa: BLE001 - the hub raises many kinds of network errors
        raise HubUnavailableError(
            f"SAE {source}/{sae_id} must be downloaded from the Hugging Face hub, which is unreachable "
            f"({type(error).__name__}); train one locally with 'interp sae train --model M --layer L'"
        ) from error
    hook_name = sae.cfg.metadata.hook_name
    return TrainedSAE(sae.eval(), hook_name, _layer_of(hook_name), None, {"source": f"{source}/{sae_id}"})


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence sae-lens's and transformers's informational logging and warnings."""
    import warnings

    loggers = [logging.getLogger(name) for name in ("sae_lens", "transformers", "datasets")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


# ----------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------


def sae_root(lm: LoadedModel) -> Path:
    """The folder holding every cached SAE of this model."""
    from interp.cache import model_cache_folder

    return model_cache_folder("saes", lm.name)


def sae_cache_folder(lm: LoadedModel, hook_name: str, settings: dict[str, Any]) -> Path:
    """Where a trained SAE with these settings is cached."""
    tag = (f"{hook_name}-topk{settings['k']}-w{settings['d_sae']}-t{settings['training_tokens']}"
           f"-c{settings['context_size']}-s{settings['seed']}")
    if int(settings.get("epochs", 1)) != 1:  # older single-pass SAEs keep their folder names
        tag += f"-e{settings['epochs']}-b{settings['batch_size_tokens']}-lr{settings['lr']:g}"
    if float(settings.get("aux_coefficient", 1.0)) != 1.0:  # sae-lens's default keeps the older names
        tag += f"-aux{settings['aux_coefficient']:g}"
    if "threads" in settings:  # the build's thread count and backend change the weights' last bits
        tag += f"-th{settings['threads']}-{settings['backend']}"
    if int(settings.get("build", 1)) != 1:
        tag += f"-r{settings['build']}"
    tag += f"-{settings['corpus_fingerprint'][:10]}"
    return sae_root(lm) / tag


def _tokenized_dataset(lm: LoadedModel, texts: Sequence[str], context_size: int) -> Any:
    """Pack BOS-prefixed documents into rows of exactly ``context_size`` tokens, each starting with BOS
    (a row that began mid-document would make its first token the attention sink)."""
    from datasets import Dataset

    rows: list[list[int]] = []
    current: list[int] = []
    for text in texts:
        ids = lm.encode(text)
        current.extend(ids[: context_size - len(current)])  # the tail of a cut document is dropped
        if len(current) == context_size:
            rows.append(current)
            current = []
    return Dataset.from_dict({"tokens": [r for r in rows if len(r) == context_size]})


def train_sae(
    lm: LoadedModel,
    layer: int,
    *,
    d_sae: int = DEFAULT_SAE["d_sae"],
    k: int = DEFAULT_SAE["k"],
    training_tokens: int = DEFAULT_SAE["training_tokens"],
    context_size: int = DEFAULT_SAE["context_size"],
    batch_size_tokens: int = DEFAULT_SAE["batch_size_tokens"],
    lr: float = DEFAULT_SAE["lr"],
    epochs: int = DEFAULT_SAE["epochs"],
    aux_coefficient: float = DEFAULT_SAE["aux_coefficient"],
    languages: Sequence[str] = ("en", "fr", "es", "de"),
    tokens_per_language: int | None = None,
    seed: int = 0,
    force: bool = False,
    progress: bool | None = None,
    evaluate: bool = True,
    threads: int = SAE_BUILD_THREADS,
) -> TrainedSAE:
    """Train (or load from the cache) a TopK SAE on ``blocks.{layer}.hook_resid_post`` with sae-lens.

    Args:
        lm: a loaded decoder (the SAE reads its residual stream in the suite's processed basis).
        layer: block index.
        d_sae: number of latents.
        k: active latents per token (TopK).
        training_tokens: activation vectors seen in training (the corpus cycles if smaller).
        context_size: tokens per training sequence (short documents are concatenated, BOS-separated).
        batch_size_tokens: activations per optimiser step.
        lr: Adam learning rate.
        epochs: passes over the training activations. With ``epochs > 1`` the residuals of
            ``training_tokens`` (non-BOS) tokens are computed once, shuffled and stored as an sae-lens
            cached-activation dataset in a temporary folder, and sae-lens's runner trains on them
            ``epochs`` times (``use_cached_activations``): more optimiser steps per language-model
            forward pass, which is what dominates training time on a CPU.
        aux_coefficient: weight of TopK's AuxK loss (dead latents fit the live ones' residual); sae-lens's
            default is 1, Gao et al. (2024) use 1/32.
        languages: corpus languages (see :func:`interp.corpus.build_corpus`).
        tokens_per_language: cap per language (default: ``training_tokens`` split evenly, at least 20k).
        seed: seeds the corpus order, the activation shuffle and sae-lens's initialisation.
        force: retrain even when a cached SAE exists.
        evaluate: measure :func:`sae_quality` on held-out text and store it with the SAE.
        threads: torch threads of the build (default :data:`SAE_BUILD_THREADS`; part of the cache key).

    Examples:
        >>> # skipped: about 10 minutes on a CPU the first time (cached afterwards)
        >>> trained = train_sae(interp.load_model("gemma-3-270m"), layer=9)   # doctest: +SKIP
    """
    if lm.is_encoder:
        raise OptionError(f"{lm.name} is an encoder: SAE training here reads a decoder's residual stream")
    if not 0 <= layer < lm.n_layers:
        raise OptionError(f"layer must be in 0..{lm.n_layers - 1} for {lm.name}, got {layer}")
    for name, value, low in (("d_sae", d_sae, 8), ("k", k, 1), ("training_tokens", training_tokens, 1000),
                             ("context_size", context_size, 8), ("batch_size_tokens", batch_size_tokens, 16),
                             ("epochs", epochs, 1)):
        if value < low:
            raise OptionError(f"{name} must be at least {low}, got {value}")
    if not 0 <= aux_coefficient <= 10:
        raise OptionError(f"aux_coefficient must be in 0..10, got {aux_coefficient}")
    if k > d_sae:
        raise OptionError(f"k ({k}) cannot exceed d_sae ({d_sae})")
    if threads < 1:
        raise OptionError(f"threads must be at least 1, got {threads}")
    from interp.corpus import build_corpus

    per_language = tokens_per_language or max(20_000, training_tokens // max(len(languages), 1))
    corpus = build_corpus(languages, tokens_per_language=per_language, tokenizer=lm.tokenizer, seed=seed)
    hook_name = f"blocks.{layer}.hook_resid_post"
    settings = {"d_sae": d_sae, "k": k, "training_tokens": training_tokens, "context_size": context_size,
                "batch_size_tokens": batch_size_tokens, "lr": lr, "epochs": epochs, "seed": seed,
                "aux_coefficient": aux_coefficient, "languages": list(languages), "threads": threads, "backend": lm.backend, "build": SAE_BUILD_VERSION,
                "tokens_per_language": per_language, "corpus_fingerprint": corpus.fingerprint}
    folder = sae_cache_folder(lm, hook_name, settings)
    if not force and (folder / "interp_sae.json").is_file() and (folder / "cfg.json").is_file():
        try:
            return load_sae(folder)
        except Exception:  # noqa: BLE001 - a damaged cache entry is rebuilt below
            pass
    started = time.perf_counter()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        sae = _run_sae_lens(lm, hook_name, corpus, settings, progress)
    finally:
        torch.set_num_threads(previous_threads)
    train_seconds = time.perf_counter() - started
    quality = sae_quality(lm, sae, hook_name) if evaluate else None
    info = {
        "format": SAE_FORMAT_VERSION, "model": lm.name, "hook_name": hook_name, "layer": layer,
        "architecture": "topk", "settings": settings, "corpus": corpus.stats,
        "train_seconds": round(train_seconds, 1), "trained_with": "sae_lens.LanguageModelSAETrainingRunner",
        "quality": quality.as_dict() if quality else None,
    }
    if quality is not None:
        info["quality"].pop("loss_recovered", None)

    def save(tmp: Path) -> dict[str, Any]:
        sae.save_model(str(tmp))
        (tmp / "interp_sae.json").write_text(json.dumps(info, indent=2, default=str))
        return {}

    build_checked_cache(folder, save)  # written to a temporary folder, then renamed into place
    loaded = load_sae(folder)
    return TrainedSAE(loaded.sae, hook_name, layer, folder, info, quality)


def _run_sae_lens(lm: LoadedModel, hook_name: str, corpus: Any, settings: dict[str, Any], progress: bool | None) -> Any:
    from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAEConfig

    batch = settings["batch_size_tokens"]
    epochs = int(settings.get("epochs", 1))
    device = str(lm.device)
    with tempfile.TemporaryDirectory(prefix="interp-sae-") as scratch:
        dataset = _tokenized_dataset(lm, corpus.texts, settings["context_size"])
        cached_path: str | None = None
        activation_tokens = settings["training_tokens"]
        if epochs > 1:
            cached_path = str(Path(scratch) / "activations")
            activation_tokens = _cache_activations(lm, hook_name, dataset, settings["training_tokens"],
                                                   settings["context_size"], cached_path, settings["seed"], progress)
        steps = max(1, activation_tokens * epochs // batch)
        cfg = LanguageModelSAERunnerConfig(
            sae=TopKTrainingSAEConfig(
                d_in=lm.d_model, d_sae=settings["d_sae"], k=settings["k"], dtype="float32", device=device,
                normalize_activations="expected_average_only_in", apply_b_dec_to_input=True,
                aux_loss_coefficient=settings["aux_coefficient"],
            ),
            model_name=lm.name,
            hook_name=hook_name,
            dataset_path="interp.corpus (override_dataset)",
            is_dataset_tokenized=True,
            streaming=False,
            context_size=settings["context_size"],
            prepend_bos=False,  # every document already starts with BOS; they are BOS-separated when packed
            # cached activations have no BOS rows left (dropped when they were computed)
            exclude_special_tokens=cached_path is None,
            use_cached_activations=cached_path is not None,
            cached_activations_path=cached_path,
            training_tokens=steps * batch,
            train_batch_size_tokens=batch,
            store_batch_size_prompts=16,
            # sae-lens's mixing buffer holds n_batches_in_buffer × context_size activations
            n_batches_in_buffer=max(8, -(-4 * batch // settings["context_size"])),
            n_batches_for_norm_estimate=4,
            lr=settings["lr"],
            lr_warm_up_steps=max(1, steps // 20),
            lr_decay_steps=max(1, steps // 5),
            # a latent silent for ~25k activations counts as dead and gets AuxK's revival gradient
            dead_feature_window=max(50, min(steps // 4, 25_000 // batch)),
            feature_sampling_window=max(100, steps // 2),
            n_eval_batches=1,
            eval_batch_size_prompts=4,
            device=device,
            seed=settings["seed"],
            dtype="float32",
            logger=LoggingConfig(log_to_wandb=False),
            checkpoint_path=str(Path(scratch) / "checkpoints"),
            output_path=None,
            n_checkpoints=0,
            verbose=progress is not False,
        )
        sink = io.StringIO()
        with _quiet(), contextlib.redirect_stdout(sink) if progress is False else contextlib.nullcontext(), \
                torch.random.fork_rng():
            # sae-lens's runner draws the initialisation and the mixing-buffer shuffles from torch's global
            # generator and never seeds it: seeded here, the weights depend on the recipe alone, not on what
            # this process drew before (the caller's generator is given back untouched).
            torch.manual_seed(settings["seed"])
            runner = LanguageModelSAETrainingRunner(cfg, override_dataset=dataset,
                                                    override_model=lm.native_model())
            trained = runner.run()
    trained = trained.eval()
    # The inference SAE: same weights, without the training-only parts.
    from sae_lens import SAE

    with tempfile.TemporaryDirectory(prefix="interp-sae-save-") as scratch, _quiet():
        trained.save_inference_model(scratch)
        return SAE.load_from_disk(scratch, device=device).eval()


@torch.inference_mode()
def _cache_activations(lm: LoadedModel, hook_name: str, dataset: Any, n_tokens: int, context_size: int,
                       folder: str, seed: int, progress: bool | None) -> int:
    """Compute ``hook_name`` residuals of the packed training rows once, drop BOS and other special
    tokens, shuffle them (seeded) and save them as an sae-lens cached-activation dataset (rows of
    ``context_size`` activations, column ``hook_name``). Returns the number of activations stored."""
    from datasets import Array2D, Dataset, Features, concatenate_datasets
    from tqdm.auto import tqdm

    layer = _layer_of(hook_name)
    special = torch.tensor(sorted(set(lm.tokenizer.all_special_ids)), dtype=torch.long)
    rows = torch.tensor(dataset["tokens"], dtype=torch.long)
    parts: list[torch.Tensor] = []
    have = 0
    bar = tqdm(total=n_tokens, desc=f"caching {hook_name} activations", unit="tok", disable=progress is False)
    for start in range(0, len(rows), 16):
        tokens = rows[start:start + 16]
        batch = TokenBatch(tokens, torch.ones_like(tokens), torch.full((len(tokens),), tokens.shape[1]))
        acts = lm.capture(batch, [hook_name], stop_at_layer=layer + 1)[hook_name].float().cpu()
        acts = acts[~torch.isin(tokens, special)]
        parts.append(acts)
        have += acts.shape[0]
        bar.update(acts.shape[0])
        if have >= n_tokens:
            break
    bar.close()
    if have < n_tokens:  # the corpus is smaller than asked for: cycle it (sae-lens does the same)
        reps = -(-n_tokens // max(have, 1))
        parts = parts * reps
    flat = torch.cat(parts)[:n_tokens]
    generator = torch.Generator().manual_seed(seed)
    flat = flat[torch.randperm(flat.shape[0], generator=generator)]
    n_rows = flat.shape[0] // context_size
    grid = flat[: n_rows * context_size].reshape(n_rows, context_size, -1).numpy()
    features = Features({hook_name: Array2D(shape=(context_size, grid.shape[-1]), dtype="float32")})
    chunks = [Dataset.from_dict({hook_name: grid[i:i + 256]}, features=features) for i in range(0, n_rows, 256)]
    concatenate_datasets(chunks).save_to_disk(folder)
    return n_rows * context_size


# ----------------------------------------------------------------------------------------------------
# Quality
# ----------------------------------------------------------------------------------------------------


def default_eval_texts() -> list[str]:
    """Held-out evaluation text: the held-out parallel sentences (4 languages) and the steering prompts."""
    from interp.corpus import parallel_sentences, steering_prompts

    held = parallel_sentences("heldout")
    return [s for lang in held for s in held[lang]] + steering_prompts()


@torch.inference_mode()
def sae_quality(lm: LoadedModel, sae: Any, hook_name: str, texts: Sequence[str] | None = None,
                *, batch_size: int = 16, loss: bool = True) -> SAEQuality:
    """Fraction of variance explained, L0 and next-token loss with the reconstruction spliced in.

    Only non-BOS, non-padding positions count. The spliced run replaces the residual stream at
    ``hook_name`` by ``decode(encode(x))`` at those positions. With ``loss=False`` only FVE, L0 and the
    dead share are measured (the forward pass stops after the SAE's block; the loss fields are NaN) —
    the three full passes with a 262k-token unembedding dominate the cost on large-vocabulary models.

    Examples:
        >>> # skipped: needs a trained SAE (see train_sae)
        >>> q = sae_quality(lm, trained.sae, trained.hook_name)   # doctest: +SKIP
    """
    texts = list(texts) if texts is not None else default_eval_texts()
    if not texts:
        raise InterpUserError("sae_quality needs at least one evaluation text")
    sum_sq_err = 0.0
    sum_x = torch.zeros(lm.d_model, dtype=torch.float64)
    sum_x2 = torch.zeros((), dtype=torch.float64)
    l0_total = 0.0
    n_tokens = 0
    fired = torch.zeros(int(sae.cfg.d_sae), dtype=torch.bool)
    ce = {"clean": [0.0, 0], "spliced": [0.0, 0], "zero": [0.0, 0]}
    for start in range(0, len(texts), batch_size):
        batch = lm.tokenize(texts[start:start + batch_size])
        mask = batch.attention_mask.bool().clone().to(lm.device)
        mask[:, 0] = False  # BOS
        captured: dict[str, torch.Tensor] = {}

        def capture(act: torch.Tensor, hook: Any, captured: dict[str, torch.Tensor] = captured) -> torch.Tensor:
            captured["x"] = act.detach().clone()
            return act

        if not loss:
            lm.forward(batch, fwd_hooks=[(hook_name, capture)], return_type=None, stop_at_layer=_layer_of(hook_name) + 1)
        else:
            clean_logits = lm.forward(batch, fwd_hooks=[(hook_name, capture)])
        x = captured["x"][mask].to(sae.W_dec.device, sae.W_dec.dtype)
        feats = sae.encode(x)
        recon = sae.decode(feats)
        sum_sq_err += float(((x - recon) ** 2).sum())
        x64 = x.double()
        sum_x += x64.sum(0).cpu()
        sum_x2 += (x64 ** 2).sum().cpu()
        l0_total += float((feats > 0).sum())
        fired |= (feats > 0).any(0).cpu()
        n_tokens += x.shape[0]
        if not loss:
            continue

        def splice(act: torch.Tensor, hook: Any, mask: torch.Tensor = mask) -> torch.Tensor:
            out = act.clone()
            out[mask] = sae.decode(sae.encode(act[mask].to(sae.W_dec.device, sae.W_dec.dtype))).to(act.device, act.dtype)
            return out

        def zero(act: torch.Tensor, hook: Any, mask: torch.Tensor = mask) -> torch.Tensor:
            out = act.clone()
            out[mask] = 0.0
            return out

        spliced_logits = lm.forward(batch, fwd_hooks=[(hook_name, splice)])
        zero_logits = lm.forward(batch, fwd_hooks=[(hook_name, zero)])
        for key, logits in (("clean", clean_logits), ("spliced", spliced_logits), ("zero", zero_logits)):
            batch_loss, count = _next_token_loss(logits, batch.tokens, batch.attention_mask)
            ce[key][0] += batch_loss
            ce[key][1] += count
    variance = float(sum_x2 - (sum_x ** 2).sum() / max(n_tokens, 1))
    fve = 1.0 - sum_sq_err / variance if variance > 0 else float("nan")
    means = {key: value[0] / value[1] if value[1] else float("nan") for key, value in ce.items()}
    return SAEQuality(
        fve=round(fve, 5), l0=round(l0_total / max(n_tokens, 1), 3), ce_clean=round(means["clean"], 5),
        ce_spliced=round(means["spliced"], 5), ce_zero=round(means["zero"], 5),
        delta_ce=round(means["spliced"] - means["clean"], 5),
        dead_fraction=round(1.0 - float(fired.float().mean()), 4), tokens=n_tokens,
    )


def _next_token_loss(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[float, int]:
    """Summed next-token cross-entropy over real positions whose target is real, and their count."""
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    targets = tokens[:, 1:].to(logits.device)
    valid = mask[:, 1:].bool().to(logits.device)
    picked = log_probs.gather(-1, targets[..., None]).squeeze(-1)
    return float(-(picked[valid]).sum()), int(valid.sum())


# ----------------------------------------------------------------------------------------------------
# Command line: interp sae train --model M --layer L
# ----------------------------------------------------------------------------------------------------


def add_train_arguments(parser: Any) -> None:
    """Arguments of ``interp sae train``."""
    parser.add_argument("--model", default="gemma-3-270m", help="model name (default gemma-3-270m)")
    parser.add_argument("--layer", type=int, required=True, help="block whose hook_resid_post the SAE reads")
    d = DEFAULT_SAE
    parser.add_argument("--width", type=int, default=d["d_sae"], help=f"number of latents (default {d['d_sae']})")
    parser.add_argument("--k", type=int, default=d["k"], help=f"TopK active latents (default {d['k']})")
    parser.add_argument("--tokens", type=int, default=d["training_tokens"],
                        help=f"training tokens, i.e. distinct activations (default {d['training_tokens']})")
    parser.add_argument("--epochs", type=int, default=d["epochs"],
                        help=f"passes over the cached activations (default {d['epochs']}; 1 streams them once)")
    parser.add_argument("--context-size", type=int, default=d["context_size"])
    parser.add_argument("--batch-tokens", type=int, default=d["batch_size_tokens"])
    parser.add_argument("--lr", type=float, default=d["lr"])
    parser.add_argument("--aux-coefficient", type=float, default=d["aux_coefficient"],
                        help=f"weight of TopK's AuxK dead-latent loss (default {d['aux_coefficient']:g})")
    parser.add_argument("--languages", default="en,fr,es,de", help="corpus languages (default en,fr,es,de)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="retrain even if a cached SAE exists")
    parser.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def cli_sae(args: Any) -> int:
    """Run ``interp sae train``; prints where the SAE is cached and its reconstruction quality."""
    from interp.models import load_model

    if getattr(args, "sae_command", None) != "train":
        raise OptionError("usage: interp sae train --model M --layer L [--width N --k K --tokens T]")
    lm = load_model(args.model, device=args.device)
    languages = [lang.strip() for lang in args.languages.split(",") if lang.strip()]
    started = time.perf_counter()
    trained = train_sae(lm, args.layer, d_sae=args.width, k=args.k, training_tokens=args.tokens,
                        context_size=args.context_size, batch_size_tokens=args.batch_tokens, lr=args.lr, epochs=args.epochs,
                        aux_coefficient=args.aux_coefficient, languages=languages, seed=args.seed, force=args.force,
                        progress=False if args.no_progress else None)
    print(f"sae:     {trained.path}")
    print(f"hook:    {trained.hook_name} ({trained.sae.cfg.d_sae} latents, TopK k={args.k})")
    if trained.quality is not None:
        q = trained.quality
        print(f"quality: FVE {q.fve:.3f}, L0 {q.l0:.1f}, next-token loss {q.ce_clean:.3f} -> {q.ce_spliced:.3f} "
              f"spliced (delta {q.delta_ce:+.3f}; zeroed {q.ce_zero:.3f}), dead {q.dead_fraction:.1%}, "
              f"{q.tokens} held-out tokens")
    print(f"took {time.perf_counter() - started:.1f} s (training {trained.info.get('train_seconds', 0)} s when trained)")
    return 0
