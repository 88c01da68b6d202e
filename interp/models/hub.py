"""Local Hugging Face folders and hub names (the real hub code; one clear line when it is unreachable)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from interp.errors import HubUnavailableError, UnknownModelError
from interp.models.sources import ModelSource, context_length, hf_from_folder

_ENCODER_PREFIXES = ("Bert", "Roberta", "DistilBert", "Electra", "XLMRoberta")


def local_source(path: Path) -> ModelSource:
    """A Hugging Face checkpoint folder (``config.json`` + weights + tokenizer)."""
    config_path = path / "config.json"
    if not config_path.is_file():
        raise UnknownModelError(f"{path} is a folder but has no config.json: give a Hugging Face checkpoint folder")
    from transformers import AutoConfig, AutoTokenizer

    architecture = (json.loads(config_path.read_text()).get("architectures") or ["?"])[0]
    config = AutoConfig.from_pretrained(str(path))
    is_encoder = architecture.startswith(_ENCODER_PREFIXES)
    model_class = None
    if is_encoder:
        from transformers import AutoModelForMaskedLM as model_class  # noqa: N813 - a class

    def build(dtype: torch.dtype, placement: dict[str, Any]) -> Any:
        return hf_from_folder(path, dtype, placement, model_class=model_class)

    return ModelSource(
        name=path.name, kind="local", origin=str(path), architecture=architecture,
        tokenizer=AutoTokenizer.from_pretrained(str(path)), build_hf=build, is_encoder=is_encoder,
        n_ctx=context_length(config), folder=path,
        tl_name=getattr(config, "_name_or_path", None) if architecture not in ("LlamaForCausalLM", "GPT2LMHeadModel") else None,
    )


def looks_offline(text: str) -> bool:
    markers = (
        "offline", "HF_HUB_OFFLINE", "ConnectionError", "Max retries", "Name or service not known",
        "Temporary failure in name resolution", "couldn't connect", "Could not connect", "LocalEntryNotFound",
        "Network is unreachable", "timed out", "We couldn't connect", "OfflineModeIsEnabled",
    )
    return any(marker.lower() in text.lower() for marker in markers)


def hub_source(name: str, offline_names: list[str]) -> ModelSource:
    """A hub id (``gpt2``, ``EleutherAI/pythia-70m``, ``google/gemma-2-2b`` …), downloaded by transformers."""
    from interp.backends import official_hub_name

    official = official_hub_name(name)
    try:
        from transformers import AutoConfig, AutoTokenizer

        config = AutoConfig.from_pretrained(official)
        tokenizer = AutoTokenizer.from_pretrained(official)
    except Exception as error:  # noqa: BLE001 - network errors surface as many exception types
        text = f"{type(error).__name__}: {error}"
        if looks_offline(text):
            raise HubUnavailableError(
                f"model {name!r} is not a bundled or test name or a local folder, and as a hub id it would be "
                f"downloaded from the Hugging Face hub, which is unreachable (offline); available offline: "
                f"{', '.join(offline_names)}"
            ) from error
        raise UnknownModelError(
            f"unknown model {name!r}: give a bundled or test name ({', '.join(offline_names)}), a local Hugging "
            "Face folder, or a hub id such as gpt2 or EleutherAI/pythia-70m"
        ) from error
    architecture = (getattr(config, "architectures", None) or ["?"])[0]
    is_encoder = architecture.startswith(_ENCODER_PREFIXES)
    model_class = None
    if is_encoder:
        from transformers import AutoModelForMaskedLM as model_class  # noqa: N813 - a class

    def build(dtype: torch.dtype, placement: dict[str, Any]) -> Any:
        return hf_from_folder(official, dtype, placement, model_class=model_class)

    return ModelSource(
        name=name, kind="hub", origin=f"huggingface hub: {official}", architecture=architecture, tokenizer=tokenizer,
        build_hf=build, tl_name=official, is_encoder=is_encoder, n_ctx=context_length(config),
    )
