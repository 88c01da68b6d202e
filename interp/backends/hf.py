"""What the backends that run a Hugging Face model itself (``bridge`` and ``nnsight``) share: architecture
facts from its config and module names, norm gains as the methods need them, the device its inputs go to under
accelerate's placement, and the stand-in and pre-hook that resume a pass from a cached residual.

Examples:
    >>> import torch
    >>> from interp.backends.hf import effective_gain
    >>> from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm
    >>> effective_gain(Gemma3RMSNorm(4)).tolist()   # Gemma computes x · (1 + w)
    [1.0, 1.0, 1.0, 1.0]
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from interp.backends.base import ArchFacts, NormSpec


def effective_gain(module: Any) -> Tensor:
    """A norm's multiplicative gain; Gemma-style RMSNorms compute ``x · (1 + w)``."""
    inner = getattr(module, "original_component", module)
    weight = inner.weight.detach().clone()
    return weight + 1.0 if type(inner).__name__.startswith("Gemma") else weight


def norm_spec(module: Any, kind: str) -> NormSpec:
    """A norm module (Hugging Face's, or the Bridge's wrapper of one) as a :class:`NormSpec`."""
    inner = getattr(module, "original_component", module)
    bias = getattr(inner, "bias", None)
    return NormSpec(kind="layernorm" if kind == "layernorm" else "rmsnorm",
                    gain=effective_gain(module) if getattr(inner, "weight", None) is not None else None,
                    bias=None if bias is None else bias.detach().clone())


def norm_kind(module: Any) -> str:
    """``layernorm`` for a LayerNorm module, ``rmsnorm`` otherwise."""
    inner = type(getattr(module, "original_component", module)).__name__
    return "layernorm" if "LayerNorm" in inner and "RMS" not in inner else "rmsnorm"


def input_device(hf: nn.Module) -> str:
    """Where inputs go under accelerate's placement (the first device that is not disk or meta)."""
    placement = getattr(hf, "hf_device_map", None) or {}
    for device in placement.values():
        if device not in ("disk", "meta"):
            return "cpu" if device == "cpu" else (f"cuda:{device}" if isinstance(device, int) else str(device))
    return "cpu"


def arch_facts(hf: Any, *, n_layers: int, final_norm: Any, post_attn_norm: bool, qk_norm: bool, is_encoder: bool,
               n_ctx: int | None) -> ArchFacts:
    """:class:`ArchFacts` from the Hugging Face config and module names, with the block structure the
    backend found (``n_layers``, the final norm module or None, post-attention and q/k norms)."""
    config = hf.config
    text = getattr(config, "text_config", None) or config
    n_heads = int(text.num_attention_heads)
    d_model = int(text.hidden_size)
    names = {name for name, _ in hf.named_modules()}
    positional = "rotary" if any(n.endswith("rotary_emb") for n in names) else (
        "learned" if any(n.endswith(("wpe", "position_embeddings", "embed_positions")) for n in names) else "none")
    final_kind = None if final_norm is None else norm_kind(final_norm)
    if is_encoder:
        final_kind = "layernorm"
    layer_types = list(getattr(text, "layer_types", None) or [])
    sliding = tuple(i for i, kind in enumerate(layer_types) if kind == "sliding_attention")
    soft = getattr(text, "final_logit_softcapping", None)
    attn_soft = getattr(text, "attn_logit_softcapping", None)
    max_pos = getattr(text, "max_position_embeddings", None) or getattr(text, "n_positions", None) or 2048
    return ArchFacts(
        n_layers=n_layers, n_heads=n_heads,
        n_kv_heads=int(getattr(text, "num_key_value_heads", None) or n_heads), d_model=d_model,
        d_head=int(getattr(text, "head_dim", None) or d_model // n_heads), d_vocab=int(text.vocab_size),
        n_ctx=int(n_ctx or max_pos), is_encoder=is_encoder, positional=positional, normalization=final_kind,
        post_attn_norm=post_attn_norm, qk_norm=qk_norm,
        logit_softcap=float(soft) if soft else None, attn_softcap=float(attn_soft) if attn_soft else None,
        sliding_window=int(text.sliding_window) if sliding and getattr(text, "sliding_window", None) else None,
        sliding_layers=sliding,
    )


class Resume(nn.Module):
    """Stands in for the blocks before ``start_at_layer``: returns the cached residual, whatever it is given."""

    def __init__(self, residual: Tensor) -> None:
        super().__init__()
        self.residual = residual

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        return self.residual


def input_replacer(residual: Tensor) -> Any:
    """A forward pre-hook that hands a block ``residual`` as its hidden states (positional or keyword)."""

    def replace(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        if args:
            return (residual, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": residual}

    return replace


def new_kv_cache(hf: nn.Module) -> dict[str, Any]:
    """An empty Hugging Face ``DynamicCache`` and the attention mask seen so far (for :func:`decode_inputs`)."""
    from transformers import DynamicCache

    config: Any = hf.config
    return {"cache": DynamicCache(config=config), "mask": None}


def decode_inputs(hf: nn.Module, tokens: Tensor, attention_mask: Tensor, cache: dict[str, Any],
                  device: Any) -> dict[str, Any]:
    """The Hugging Face forward's keyword arguments for one KV-cached decoding step (the cache's mask grows).

    Positions count real tokens only, so a left-padded row starts at 0 (as Hugging Face's ``generate`` and
    TransformerLens's padding-aware forward compute them); only the last position is unembedded.
    """
    import inspect

    import torch

    new_mask = attention_mask.to(device)
    full = new_mask if cache["mask"] is None else torch.cat([cache["mask"], new_mask], dim=1)
    cache["mask"] = full
    positions = (full.cumsum(dim=1) - 1).clamp(min=0)[:, -tokens.shape[1]:]
    # transformers 5.2x renamed the forward's past_key_values to cache (the old name warns until 5.40).
    name = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"
    return {"input_ids": tokens.to(device), "attention_mask": full, "position_ids": positions, "use_cache": True,
            "logits_to_keep": 1, name: cache["cache"]}
