"""What a model name resolves to before a backend wraps it: a :class:`ModelSource`.

A source knows where the weights come from (a converted cache folder, a seeded config, a local folder,
a hub id) and builds the Hugging Face model on request — with accelerate's placement (``device_map``,
``max_memory``, ``offload_folder``) when the checkpoint is a folder or a hub id. Backends turn the
Hugging Face model into what they run (a converted ``HookedTransformer``, or a ``TransformerBridge``
over the model itself), so every name loads on every backend that maps its architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

#: ``build_hf(dtype, placement) -> transformers model``; placement holds from_pretrained's device_map,
#: max_memory and offload_folder (empty: everything in memory on the CPU).
BuildHF = Callable[[torch.dtype, dict[str, Any]], Any]


@dataclass
class ModelSource:
    """A loadable model before a backend wraps it.

    Attributes:
        name: the name it was asked for (shown in reports).
        kind: ``bundled``, ``test``, ``local``, ``hub`` or ``object`` (a model object the user passed).
        origin: package, seed, folder or hub id the weights came from.
        architecture: the Hugging Face class name (``LlamaForCausalLM`` …).
        tokenizer: a Hugging Face tokenizer.
        build_hf: builds the Hugging Face model (see :data:`BuildHF`).
        tl_name: TransformerLens's official name for this checkpoint, when it has one.
        is_encoder: a bidirectional encoder (BERT-style).
        n_ctx: the context length the suite checks prompts against.
        notes: caveats recorded in the provenance.
    """

    name: str
    kind: str
    origin: str
    architecture: str
    tokenizer: Any
    build_hf: BuildHF = field(repr=False)
    tl_name: str | None = None
    is_encoder: bool = False
    n_ctx: int | None = None
    notes: str = ""
    folder: Path | None = None


def hf_from_folder(folder: Path | str, dtype: torch.dtype, placement: dict[str, Any], *,
                   model_class: Any | None = None) -> Any:
    """``from_pretrained`` of a Hugging Face checkpoint (folder or hub id), eager attention, with placement."""
    import warnings

    if model_class is None:
        from transformers import AutoModelForCausalLM as model_class  # noqa: N813 - a class
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model_class.from_pretrained(str(folder), dtype=dtype, attn_implementation="eager", **placement).eval()


def context_length(hf_config: Any, cap: int = 8192) -> int:
    """The context length the suite checks prompts against (capped: longer is never needed on a CPU)."""
    text = getattr(hf_config, "text_config", None) or hf_config
    n = getattr(text, "max_position_embeddings", None) or getattr(text, "n_positions", None) or cap
    return min(int(n), cap)
