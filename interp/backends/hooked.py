"""The ``hooked`` backend: TransformerLens's ``HookedTransformer`` and ``HookedEncoder``.

Weights are converted from a Hugging Face model by TransformerLens's own conversion functions and
processed by its ``load_and_process_state_dict`` (``fold_ln``, ``center_writing_weights``, …, as
``from_pretrained``). These classes exist in transformer-lens 3.x only (4.0 removed them); this module
is imported only when the ``hooked`` backend is asked for.

Generation: TransformerLens re-lays weights out on every call (``W_U.T.contiguous()`` copies gemma's
262144 × 640 unembedding — about 670 MB — at every decode step, the gated MLP its three matrices, the
attention ``rearrange`` views of ``W_Q/W_K/W_V/W_O``). :func:`fast_weight_layout` stores those parameters
in the layout the forward pass reads for the duration of a generation (the same values, so every hook
sees the same activations), which made decoding about 10× faster on a 2-core CPU.

Examples:
    >>> import interp
    >>> lm = interp.load_model("tiny-gpt2", backend="hooked")
    >>> type(lm).__name__, lm.backend
    ('HookedBackend', 'hooked')
"""

from __future__ import annotations

import contextlib
import dataclasses
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from interp.backends.base import (
    ArchFacts,
    Backend,
    HeadWeights,
    HookFn,
    ModelInfo,
    NormSpec,
    ReturnType,
)
from interp.errors import UnknownModelError

#: TransformerLens's ``from_pretrained`` processing defaults.
TL_DEFAULT_PROCESSING: dict[str, bool] = {
    "fold_ln": True,
    "center_writing_weights": True,
    "center_unembed": True,
    "fold_value_biases": True,
    "refactor_factored_attn_matrices": False,
}


class HookedBackend(Backend):
    """A ``HookedTransformer`` (decoders) or ``HookedEncoder`` (BERT-style encoders) behind the protocol."""

    backend = "hooked"

    # -- hooks -------------------------------------------------------------------------------------
    @property
    def embedding_hook(self) -> str:
        # HookedEncoder nests its embeddings: ``hook_embed`` sits under ``embed``
        return "embed.hook_embed" if self.is_encoder else "hook_embed"

    def _native_hook_names(self) -> Sequence[str]:
        return list(self._model.hook_dict)

    def _install(self, fwd: list[tuple[str, HookFn]], bwd: list[tuple[str, HookFn]]) -> contextlib.AbstractContextManager:
        # HookedRootModule.hooks removes the hooks of its own context level only, so contexts nest.
        return self._model.hooks(fwd_hooks=fwd, bwd_hooks=bwd)

    @contextlib.contextmanager
    def _attn_result_enabled(self) -> Iterator[None]:
        previous = bool(getattr(self._model.cfg, "use_attn_result", False))
        try:
            if not previous:
                self._model.set_use_attn_result(True)
            yield
        finally:
            if not previous:
                self._model.set_use_attn_result(False)

    # -- running -----------------------------------------------------------------------------------
    def _run(self, tokens: Tensor, mask: Tensor, stop_at_layer: int | None, return_type: ReturnType) -> Any:
        if self.is_encoder:
            out = self._model(tokens, return_type=return_type, one_zero_attention_mask=mask)
            return out
        kwargs: dict[str, Any] = {"attention_mask": mask, "return_type": return_type}
        if stop_at_layer is not None:
            kwargs["stop_at_layer"] = stop_at_layer
        return self._model(tokens, **kwargs)

    def _resume(self, residual: Tensor, mask: Tensor, start: int, stop: int | None, return_type: ReturnType) -> Any:
        if self.is_encoder:
            raise UnknownModelError(f"{self.name} is an encoder: resuming from a layer needs a decoder")
        kwargs: dict[str, Any] = {"attention_mask": mask, "return_type": return_type, "start_at_layer": start}
        if stop is not None:
            kwargs["stop_at_layer"] = stop
        return self._model(residual.to(self.device), **kwargs)

    # -- norms, logits, weights --------------------------------------------------------------------
    def final_norm(self, resid: Tensor) -> Tensor:
        if self.facts.normalization is None or not hasattr(self._model, "ln_final"):
            return resid
        return self._model.ln_final(resid)

    def final_norm_spec(self) -> NormSpec | None:
        module = getattr(self._model, "ln_final", None)
        return None if module is None or self.facts.normalization is None else _norm_spec(module)

    def post_attn_norm_spec(self, layer: int) -> NormSpec | None:
        if not self.facts.post_attn_norm:
            return None
        module = getattr(self._model.blocks[layer], "ln1_post", None)
        return None if module is None else _norm_spec(module)

    def head_weights(self, layer: int) -> HeadWeights:
        block = self._model.blocks[layer]
        attn = block.attn
        q_gain = k_gain = None
        if self.facts.qk_norm and getattr(attn, "q_norm", None) is not None:
            q_gain, k_gain = attn.q_norm.w.detach(), attn.k_norm.w.detach()
        post = self.post_attn_norm_spec(layer)
        return HeadWeights(
            W_Q=attn.W_Q.detach(), W_K=attn.W_K.detach(), W_V=attn.W_V.detach(), W_O=attn.W_O.detach(),
            b_O=attn.b_O.detach(), q_gain=q_gain, k_gain=k_gain, post_gain=None if post is None else post.gain,
        )

    @property
    def W_U(self) -> Tensor:
        return self._model.W_U

    @property
    def b_U(self) -> Tensor:
        return self._model.b_U

    @property
    def W_E(self) -> Tensor:
        return self._model.W_E

    def unembed(self, normed: Tensor) -> Tensor:
        return self.softcap(self._model.unembed(normed))

    # -- generation --------------------------------------------------------------------------------
    def new_kv_cache(self, batch_size: int) -> Any:
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

        return TransformerLensKeyValueCache.init_cache(self._model.cfg, self.device, batch_size)

    def decode_step(self, tokens: Tensor, attention_mask: Tensor, cache: Any) -> Tensor:
        residual = self._model(tokens.to(self.device), attention_mask=attention_mask.to(self.device),
                               past_kv_cache=cache, stop_at_layer=self.n_layers)
        # Only the last position is unembedded (gemma's 262k-token unembedding is the large cost).
        return self.unembed(self.final_norm(residual[:, -1:, :]))[:, -1, :]

    def generation_context(self) -> contextlib.AbstractContextManager:
        return fast_weight_layout(self._model)

    def release_memory(self) -> None:
        release_fast_layouts(self._model)


def _norm_spec(module: Any) -> NormSpec:
    name = type(module).__name__
    kind = "layernorm" if name.startswith("LayerNorm") else "rmsnorm"
    gain = getattr(module, "w", None)
    bias = getattr(module, "b", None)
    return NormSpec(kind=kind, gain=None if gain is None else gain.detach(), bias=None if bias is None else bias.detach())


# ----------------------------------------------------------------------------------------------------
# Memory layout of the weights during generation
# ----------------------------------------------------------------------------------------------------
# (module attribute, permutation that gives the storage order the forward pass reads contiguously)
_ATTN_LAYOUTS = {"W_Q": (0, 2, 1), "W_K": (0, 2, 1), "W_V": (0, 2, 1), "_W_K": (0, 2, 1), "_W_V": (0, 2, 1),
                 "W_O": (2, 0, 1)}
_GATED_MLP_LAYOUTS = {"W_in": (1, 0), "W_gate": (1, 0), "W_out": (1, 0)}

_FAST_CACHE: weakref.WeakKeyDictionary[torch.nn.Module, dict[int, tuple[int, int, Tensor]]] = (
    weakref.WeakKeyDictionary()
)


def _fast_targets(model: torch.nn.Module) -> list[tuple[torch.nn.Parameter, tuple[int, ...]]]:
    targets: list[tuple[torch.nn.Parameter, tuple[int, ...]]] = []
    for block in getattr(model, "blocks", []):
        attn = getattr(block, "attn", None)
        if attn is not None:
            for name, perm in _ATTN_LAYOUTS.items():
                param = attn._parameters.get(name)
                if isinstance(param, torch.nn.Parameter) and param.dim() == len(perm):
                    targets.append((param, perm))
        mlp = getattr(block, "mlp", None)
        # Only the gated MLP reads W.T (F.linear); the plain MLP's addmm reads W as stored.
        if mlp is not None and type(mlp).__name__ == "GatedMLP":
            for name, perm in _GATED_MLP_LAYOUTS.items():
                param = mlp._parameters.get(name)
                if isinstance(param, torch.nn.Parameter) and param.dim() == 2:
                    targets.append((param, perm))
    unembed = getattr(model, "unembed", None)
    if unembed is not None and isinstance(unembed._parameters.get("W_U"), torch.nn.Parameter):
        targets.append((unembed._parameters["W_U"], (1, 0)))
    return targets


def _relaid(tensor: Tensor, perm: tuple[int, ...]) -> Tensor:
    inverse = [perm.index(i) for i in range(len(perm))]
    return tensor.permute(*perm).contiguous().permute(*inverse)


@contextlib.contextmanager
def fast_weight_layout(model: torch.nn.Module, *, keep: bool = True) -> Iterator[None]:
    """Store the weights the forward pass re-lays out in the layout it reads, then put them back.

    Values are unchanged (only strides differ), so the forward pass computes with the same numbers and
    every hook sees the same activations; the saving is the per-call weight copies. With ``keep=True``
    the re-laid copies are kept (per model, keyed on each parameter's storage and version counter) until
    :func:`release_fast_layouts`, so a sweep of many generations pays for them once; an in-place edit of
    a weight invalidates its copy.
    """
    cache = _FAST_CACHE.setdefault(model, {}) if keep else {}
    swapped: list[tuple[torch.nn.Parameter, Tensor]] = []
    try:
        for param, perm in _fast_targets(model):
            original = param.data
            key = id(param)
            entry = cache.get(key)
            if entry is None or entry[0] != original.data_ptr() or entry[1] != param._version:
                entry = (original.data_ptr(), param._version, _relaid(original, perm))
                cache[key] = entry
            param.data = entry[2]
            swapped.append((param, original))
        yield
    finally:
        for param, original in reversed(swapped):
            param.data = original


def release_fast_layouts(model: torch.nn.Module | None = None) -> None:
    """Free the re-laid weight copies kept by :func:`fast_weight_layout` (one model, or all)."""
    if model is None:
        _FAST_CACHE.clear()
    else:
        _FAST_CACHE.pop(model, None)


def fast_layout_bytes(model: torch.nn.Module) -> int:
    """Bytes held by the re-laid copies of ``model`` (0 after :func:`release_fast_layouts`)."""
    entries = _FAST_CACHE.get(model, {})
    return int(sum(t.numel() * t.element_size() for _, _, t in entries.values()))


# ----------------------------------------------------------------------------------------------------
# Building from Hugging Face models
# ----------------------------------------------------------------------------------------------------
def llama_config(hf_config: Any, dtype: torch.dtype, device: str) -> Any:
    """A TransformerLens config for a Llama-architecture HF config (as TransformerLens maps official
    Llama names), for checkpoints that are not official TransformerLens names."""
    from transformer_lens import HookedTransformerConfig

    n_kv = hf_config.num_key_value_heads
    rope_theta = getattr(hf_config, "rope_theta", None)
    if rope_theta is None:
        rope_params = getattr(hf_config, "rope_parameters", None) or {}
        rope_theta = rope_params.get("rope_theta", 10000.0)
    d_head = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
    return HookedTransformerConfig(
        d_model=hf_config.hidden_size, d_head=d_head, n_heads=hf_config.num_attention_heads,
        d_mlp=hf_config.intermediate_size, n_layers=hf_config.num_hidden_layers,
        n_ctx=min(int(hf_config.max_position_embeddings), 8192), eps=hf_config.rms_norm_eps,
        d_vocab=hf_config.vocab_size, act_fn=hf_config.hidden_act,
        n_key_value_heads=n_kv if n_kv != hf_config.num_attention_heads else None,
        normalization_type="RMS", positional_embedding_type="rotary", rotary_adjacent_pairs=False,
        rotary_dim=d_head, rotary_base=float(rope_theta), final_rms=True, gated_mlp=True,
        original_architecture="LlamaForCausalLM", tokenizer_prepends_bos=True, default_prepend_bos=True,
        dtype=dtype, device=device,
    )


def gpt2_config(hf_config: Any, dtype: torch.dtype, device: str) -> Any:
    from transformer_lens import HookedTransformerConfig

    c = hf_config
    return HookedTransformerConfig(
        d_model=c.n_embd, d_head=c.n_embd // c.n_head, n_heads=c.n_head, d_mlp=c.n_inner or 4 * c.n_embd,
        n_layers=c.n_layer, n_ctx=c.n_positions, eps=c.layer_norm_epsilon, d_vocab=c.vocab_size,
        act_fn=c.activation_function, normalization_type="LN", positional_embedding_type="standard",
        original_architecture="GPT2LMHeadModel", default_prepend_bos=True, dtype=dtype, device=device,
    )


def bert_config(hf_config: Any, dtype: torch.dtype, device: str) -> Any:
    from transformer_lens import HookedTransformerConfig

    return HookedTransformerConfig(
        d_model=hf_config.hidden_size, d_head=hf_config.hidden_size // hf_config.num_attention_heads,
        n_heads=hf_config.num_attention_heads, d_mlp=hf_config.intermediate_size, d_vocab=hf_config.vocab_size,
        n_layers=hf_config.num_hidden_layers, n_ctx=hf_config.max_position_embeddings,
        eps=hf_config.layer_norm_eps, act_fn="gelu", attention_dir="bidirectional",
        original_architecture="BertForMaskedLM", dtype=dtype, device=device,
    )


def _from_state_dict(cfg: Any, state_dict: dict[str, Tensor], tokenizer: Any, dtype: torch.dtype, device: str,
                     processing: dict[str, bool]) -> Any:
    from transformer_lens import HookedTransformer

    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False, default_padding_side="right")
    model.load_and_process_state_dict(state_dict, **processing)
    return model.to(device).to(dtype)


def hooked_model_from_hf(
    hf: Any, tokenizer: Any, *, architecture: str, tl_name: str | None, dtype: torch.dtype, device: str,
    processing: dict[str, bool],
) -> Any:
    """A ``HookedTransformer`` / ``HookedEncoder`` with ``hf``'s weights (TransformerLens's conversions)."""
    import warnings

    if architecture == "LlamaForCausalLM" and tl_name is None:
        from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights

        cfg = llama_config(hf.config, dtype, device)
        return _from_state_dict(cfg, convert_llama_weights(hf, cfg), tokenizer, dtype, device, processing)
    if architecture == "GPT2LMHeadModel" and tl_name is None:
        from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights

        cfg = gpt2_config(hf.config, dtype, device)
        return _from_state_dict(cfg, convert_gpt2_weights(hf, cfg), tokenizer, dtype, device, processing)
    if architecture.startswith("Bert"):
        from transformer_lens import HookedEncoder
        from transformer_lens.pretrained.weight_conversions.bert import convert_bert_weights

        cfg = bert_config(hf.config, dtype, device)
        if not hasattr(getattr(hf, "cls", None), "seq_relationship"):
            # TransformerLens converts a pre-training model (MLM + next-sentence heads); a masked-LM checkpoint
            # has no pooler or NSP head, which HookedEncoder uses for next-sentence prediction only.
            from transformers import BertForPreTraining

            full = BertForPreTraining(hf.config)
            full.load_state_dict(hf.state_dict(), strict=False)
            hf = full
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = HookedEncoder(cfg, tokenizer=tokenizer, move_to_device=False)
        model.load_state_dict(convert_bert_weights(hf, cfg), strict=False)
        return model.to(device).to(dtype)
    from transformer_lens import HookedTransformer

    try:
        return HookedTransformer.from_pretrained(
            tl_name or getattr(hf.config, "_name_or_path", "") or architecture, hf_model=hf, tokenizer=tokenizer,
            device=device, default_padding_side="right", **processing,
            # TransformerLens leaves dtype unannotated (its default "float32" reads as str); it takes a torch.dtype.
            dtype=dtype,  # pyright: ignore[reportArgumentType]
        )
    except Exception as error:  # noqa: BLE001 - TransformerLens raises many kinds here
        raise UnknownModelError(
            f"the hooked backend cannot load {architecture} ({str(error).splitlines()[0][:120]}): "
            "use --backend bridge, which maps 50+ Hugging Face architectures"
        ) from error


def facts_of(model: Any, *, is_encoder: bool, d_vocab: int | None = None) -> ArchFacts:
    """:class:`ArchFacts` read from a TransformerLens config."""
    cfg = model.cfg
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    attn_types = list(getattr(cfg, "attn_types", None) or [])
    sliding = tuple(i for i, kind in enumerate(attn_types) if kind == "local") if getattr(cfg, "use_local_attn", False) else ()
    soft = getattr(cfg, "output_logits_soft_cap", -1.0)
    attn_soft = getattr(cfg, "attn_scores_soft_cap", -1.0)
    positional = {"rotary": "rotary", "standard": "learned", "shortformer": "learned"}.get(
        str(getattr(cfg, "positional_embedding_type", "standard")), "none")
    norm = {"LN": "layernorm", "LNPre": "layernorm", "RMS": "rmsnorm", "RMSPre": "rmsnorm"}.get(
        str(cfg.normalization_type), None)
    return ArchFacts(
        n_layers=int(cfg.n_layers), n_heads=int(cfg.n_heads), n_kv_heads=int(n_kv), d_model=int(cfg.d_model),
        d_head=int(cfg.d_head), d_vocab=int(d_vocab or cfg.d_vocab), n_ctx=int(cfg.n_ctx), is_encoder=is_encoder,
        positional=positional, normalization=norm,
        post_attn_norm=bool(getattr(cfg, "use_normalization_before_and_after", False)),
        qk_norm=bool(getattr(cfg, "use_qk_norm", False)),
        logit_softcap=float(soft) if soft and soft > 0 else None,
        attn_softcap=float(attn_soft) if attn_soft and attn_soft > 0 else None,
        sliding_window=int(cfg.window_size) if sliding and getattr(cfg, "window_size", None) else None,
        sliding_layers=sliding,
    )


def build(source: Any, *, dtype: torch.dtype, device: str, processing: dict[str, bool], placement: dict[str, Any],
          started: float) -> HookedBackend:
    """The hooked backend for a :class:`~interp.models.sources.ModelSource`."""
    import time

    from interp.errors import OptionError

    if placement:
        raise OptionError("--device-map, --max-memory and --offload-folder need the bridge backend "
                          "(accelerate dispatch via TransformerBridge): add --backend bridge")
    hf = source.build_hf(torch.float32, {})
    # The checkpoint's count (as the bridge reports it), not TransformerLens's copy: that one has an untied
    # unembedding with a bias and no norm weights after fold_ln.
    n_params = int(sum(p.numel() for p in hf.parameters()))
    model = hooked_model_from_hf(hf, source.tokenizer, architecture=source.architecture, tl_name=source.tl_name,
                                 dtype=dtype, device=device, processing=processing if not source.is_encoder else {})
    model.eval()
    del hf
    facts = facts_of(model, is_encoder=source.is_encoder)
    if source.n_ctx:
        facts = dataclasses.replace(facts, n_ctx=int(source.n_ctx))
    used = {k: False for k in TL_DEFAULT_PROCESSING} if source.is_encoder else dict(processing)
    info = ModelInfo(
        name=source.name, source=source.kind, origin=source.origin, architecture=source.architecture,
        dtype=str(dtype).replace("torch.", ""), device=str(next(model.parameters()).device), processing=used,
        prepend_bos=True, n_params=n_params, n_layers=facts.n_layers,
        n_heads=facts.n_heads, n_kv_heads=facts.n_kv_heads, d_model=facts.d_model, d_head=facts.d_head,
        n_ctx=facts.n_ctx, is_encoder=facts.is_encoder, backend="hooked",
        load_seconds=round(time.perf_counter() - started, 3), notes=source.notes,
    )
    return HookedBackend(model, source.tokenizer, info, facts)
