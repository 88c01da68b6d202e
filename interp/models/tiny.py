"""Tiny test models: Hugging Face configs with seeded random weights and a shipped byte tokenizer.

They are real Hugging Face models (GPT-2, Llama with grouped-query attention, BERT), so every backend
loads them the way it loads a checkpoint, and a planted mechanism written into their Hugging Face
weights is seen identically by every backend. Weights are drawn by Hugging Face's own initialisation
from ``torch.manual_seed(seed)`` with ``initializer_range = 0.8 / √d_model`` (TransformerLens's scale, so
attention patterns are not all uniform).

Examples:
    >>> from interp.models.tiny import tiny_hf_model
    >>> hf = tiny_hf_model("tiny-llama", seed=0)
    >>> hf.config.num_key_value_heads
    2
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import torch

from interp.models.sources import ModelSource

#: The byte tokenizer's vocabulary: 256 byte symbols plus <bos>, <eos>, <pad>.
BYTE_VOCAB = 259
_SPECIAL = {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2}

#: name → (architecture, config keyword arguments)
TINY_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "tiny-gpt2": ("GPT2LMHeadModel", dict(n_layer=2, n_embd=64, n_head=4, n_inner=256, n_positions=256,
                                          vocab_size=BYTE_VOCAB, activation_function="gelu_new")),
    "tiny-gpt2-12l": ("GPT2LMHeadModel", dict(n_layer=12, n_embd=768, n_head=12, n_inner=3072, n_positions=1024,
                                              vocab_size=50257, activation_function="gelu_new")),
    "tiny-llama": ("LlamaForCausalLM", dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                            num_key_value_heads=2, intermediate_size=128, max_position_embeddings=256,
                                            vocab_size=BYTE_VOCAB, hidden_act="silu", tie_word_embeddings=False,
                                            rope_theta=10000.0)),
    "tiny-bert": ("BertForMaskedLM", dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                          intermediate_size=256, max_position_embeddings=256, vocab_size=BYTE_VOCAB,
                                          hidden_act="gelu")),
}


def build_byte_tokenizer() -> Any:
    """Build the byte-level fast tokenizer (256 byte symbols + <bos>, <eos>, <pad>) from scratch.

    The suite ships the result in ``interp/data/byte_tokenizer``; this function documents how it was made.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<bos>": 0, "<eos>": 1, "<pad>": 2}
    for symbol in sorted(alphabet):
        vocab[symbol] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        cls_token="<bos>", sep_token="<eos>", padding_side="right",
    )


@lru_cache(maxsize=1)
def byte_tokenizer() -> Any:
    """The shipped byte-level tokenizer of the test models (no download)."""
    from transformers import AutoTokenizer

    from interp.data import shipped_path

    return AutoTokenizer.from_pretrained(str(shipped_path("byte_tokenizer")), padding_side="right")


@lru_cache(maxsize=1)
def encoder_byte_tokenizer() -> Any:
    """The byte tokenizer with a post-processor that wraps text as <bos> … <eos> (BERT's [CLS] … [SEP])."""
    import copy

    from tokenizers.processors import TemplateProcessing

    tokenizer = copy.deepcopy(byte_tokenizer())
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="<bos> $A <eos>", pair="<bos> $A <eos> $B <eos>", special_tokens=[("<bos>", 0), ("<eos>", 1)])
    return tokenizer


def tiny_hf_model(name: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
    """A fresh tiny Hugging Face model with seeded weights (eager attention)."""
    import transformers

    architecture, kwargs = TINY_CONFIGS[name]
    d_model = kwargs.get("hidden_size") or kwargs["n_embd"]
    config_class = {"GPT2LMHeadModel": transformers.GPT2Config, "LlamaForCausalLM": transformers.LlamaConfig,
                    "BertForMaskedLM": transformers.BertConfig}[architecture]
    config = config_class(**kwargs, **_SPECIAL, initializer_range=0.8 / math.sqrt(d_model),
                          attn_implementation="eager")
    config.architectures = [architecture]
    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(config)
    return model.to(dtype).eval()


def tiny_source(name: str, seed: int = 0, *, edit: Any = None) -> ModelSource:
    """The source of a tiny test model; ``edit(hf_model)`` plants a mechanism into its weights first."""
    architecture, kwargs = TINY_CONFIGS[name]
    is_encoder = architecture.startswith("Bert")
    tokenizer = encoder_byte_tokenizer() if is_encoder else byte_tokenizer()

    def build(dtype: torch.dtype, placement: dict[str, Any]) -> Any:
        hf = tiny_hf_model(name, seed, torch.float32)
        if edit is not None:
            with torch.no_grad():
                edit(hf)
        return hf.to(dtype)

    n_ctx = kwargs.get("max_position_embeddings") or kwargs.get("n_positions")
    return ModelSource(
        name=name, kind="test", origin=f"random init, seed {seed}" + (" (planted)" if edit is not None else ""),
        architecture=architecture, tokenizer=tokenizer, build_hf=build, is_encoder=is_encoder, n_ctx=n_ctx,
    )
