"""The ``bridge`` backend: TransformerLens's ``TransformerBridge`` over the Hugging Face model itself.

The Bridge replaces a Hugging Face model's modules in place with components that carry TransformerLens
hook points (``blocks.3.attn.hook_z`` …), so the Hugging Face code runs the model and every architecture
the Bridge maps (50+ families) works without a TransformerLens re-implementation. It exists in
transformer-lens 3.9 and is the only model class of transformer-lens 4; this module runs on both.

What this backend adds to the Bridge:

* **compatibility mode** (``enable_compatibility_mode``): TransformerLens hook names and aliases, and the
  same weight processing as ``HookedTransformer`` (``fold_ln`` …), so frames equal the hooked backend's;
* **resuming from a layer** (``start_at_layer``): the Bridge's own ``forward`` refuses it in 3.9 (and
  in 4.x still runs the skipped blocks). Here the skipped blocks are swapped, for one call, for a stand-in
  that hands the cached residual to the next block, and the Hugging Face forward does the rest — so its
  own position embeddings (rotary, local and global on Gemma 3) and masks (causal, sliding-window,
  padding) are the ones used, and blocks before the start cost nothing. A hook on the next block's input
  (or on the final norm's) ends the pass early for ``stop_at_layer``;
* **KV-cached decoding** through the Hugging Face model with a ``DynamicCache`` (the Bridge's hooks sit
  on its modules, so they fire), position ids from the attention mask (left padding), and only the last
  position unembedded (``logits_to_keep=1``);
* **models larger than one device**: the Hugging Face model is loaded by ``from_pretrained`` with
  accelerate's ``device_map`` / ``max_memory`` / ``offload_folder``. The Bridge (3.9) refuses disk
  targets in a model's device map because its weight *processing* cannot read offloaded tensors; a
  disk-offloaded model is therefore booted without processing (raw Hugging Face coordinates, recorded
  in the provenance), accelerate's hooks load each offloaded layer as it runs, and weight reads go through
  :meth:`BridgeBackend.weights_context`. The offload test checks the frames against the in-memory model.

Examples:
    >>> import interp
    >>> lm = interp.load_model("tiny-llama", backend="bridge")
    >>> lm.backend, lm.facts.gqa_group
    ('bridge', 2)
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from interp.backends.base import (
    ArchFacts,
    Backend,
    HeadWeights,
    HookFn,
    ModelInfo,
    NormSpec,
    ReturnType,
    _StopForward,
    expand_kv,
)
from interp.backends.bridge_weights import process_weights_by_block
from interp.backends.hf import (
    Resume,
    arch_facts,
    decode_inputs,
    effective_gain,
    input_device,
    input_replacer,
    new_kv_cache,
    norm_spec,
)
from interp.errors import UnknownModelError

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class BridgeBackend(Backend):
    """A ``TransformerBridge`` (in compatibility mode) behind the protocol."""

    backend = "bridge"

    def __init__(self, model: Any, tokenizer: Any, info: ModelInfo, facts: ArchFacts, *, aliases: dict[str, str],
                 offloaded: bool) -> None:
        super().__init__(model, tokenizer, info, facts)
        self._aliases = aliases  # TransformerLens name → the Bridge's name for the same activation
        self._offloaded = offloaded
        self._loaded_ids: set[int] = set()  # modules whose offloaded weights a weights_context holds
        self._layers, self._first_block = _block_list(model)
        for block in model.blocks:
            block.attn.register_forward_pre_hook(_cache_kwarg_alias, with_kwargs=True)

    @property
    def _hf(self) -> PreTrainedModel:
        return self._model.original_model

    @property
    def device(self) -> torch.device:
        if self._offloaded:
            return torch.device(input_device(self._hf))
        return super().device

    # -- hooks -------------------------------------------------------------------------------------
    @property
    def embedding_hook(self) -> str:
        # the embedding module's own output; the Bridge's ``hook_embed`` alias is the summed, normed
        # embedding on BERT (5.3 away from HookedEncoder's ``embed.hook_embed`` on minilm-l6)
        return "embed.hook_out"

    def _native_hook_names(self) -> Sequence[str]:
        return [*self._model.hook_dict, *self._aliases]

    def _install(self, fwd: list[tuple[str, HookFn]], bwd: list[tuple[str, HookFn]]) -> contextlib.AbstractContextManager:
        translate = self._aliases.get
        return self._model.hooks(fwd_hooks=[(translate(n, n), f) for n, f in fwd],
                                 bwd_hooks=[(translate(n, n), f) for n, f in bwd])

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
    def _stop_hook(self, stop: int | None) -> list[tuple[str, HookFn]]:
        if stop is None:
            return []
        name = f"blocks.{stop}.hook_resid_pre" if stop < self.n_layers else "ln_final.hook_in"

        def stop_here(resid: Tensor, hook: Any) -> None:
            raise _StopForward(resid)

        return [(self._aliases.get(name, name), stop_here)]

    def _call(self, tokens: Tensor, mask: Tensor, stop: int | None, return_type: ReturnType) -> Any:
        if self.is_encoder and stop is not None and stop >= self.n_layers:
            stop = None
        stops = self._stop_hook(stop)
        skip_unembed = stop is None and return_type is None and not self.is_encoder
        if skip_unembed:
            # The Hugging Face forward always computes the logits; without a use for them the pass ends after
            # the final norm, as HookedTransformer's does (gemma's 262k-token unembedding was 2/3 of a pass).
            def end(resid: Tensor, hook: Any) -> None:
                raise _StopForward(resid)

            stops = [("unembed.hook_in", end)]
        try:
            with self._model.hooks(fwd_hooks=stops):
                out = self._model(tokens, attention_mask=mask, return_type=return_type if stop is None else None)
        except _StopForward as stopped:
            return None if skip_unembed else stopped.value
        return out

    def _run(self, tokens: Tensor, mask: Tensor, stop_at_layer: int | None, return_type: ReturnType) -> Any:
        return self._call(tokens, mask, stop_at_layer, return_type)

    def _resume(self, residual: Tensor, mask: Tensor, start: int, stop: int | None, return_type: ReturnType) -> Any:
        if self.is_encoder:
            raise UnknownModelError(f"{self.name} is an encoder: resuming from a layer needs a decoder")
        residual = residual.to(self.device)
        stand_in = Resume(residual)
        saved = [self._layers[self._first_block + i] for i in range(start)]
        # Token ids only give the Hugging Face forward the batch and sequence shape; the embeddings they
        # produce are dropped by the stand-in (a gather, negligible next to a block).
        dummy = torch.full(residual.shape[:2], self.pad_token_id, dtype=torch.long, device=self.device)
        # With start=0 no block is swapped out: the residual replaces the first block's input instead
        # (otherwise block 0 would read the dummy tokens' embeddings).
        handle = None
        if start == 0:
            handle = self._layers[self._first_block].register_forward_pre_hook(
                input_replacer(residual), with_kwargs=True)
        try:
            for i in range(start):
                self._layers[self._first_block + i] = stand_in
            return self._call(dummy, mask, stop, return_type)
        finally:
            if handle is not None:
                handle.remove()
            for i, block in enumerate(saved):
                self._layers[self._first_block + i] = block

    # -- norms, logits, weights --------------------------------------------------------------------
    def final_norm(self, resid: Tensor) -> Tensor:
        if self.facts.normalization is None:
            return resid
        return self._model.ln_final(resid)  # accelerate's own hook loads an offloaded norm as it runs

    def final_norm_spec(self) -> NormSpec | None:
        if self.facts.normalization is None:
            return None
        module = self._model.ln_final
        if self.info.processing.get("fold_ln"):
            # Folded into W_U: what is left is the normalisation itself (TransformerLens's LNPre/RMSNormPre).
            return NormSpec(kind=self.facts.normalization)  # type: ignore[arg-type]
        with self.weights_context(module):
            return norm_spec(module, self.facts.normalization)

    def post_attn_norm_spec(self, layer: int) -> NormSpec | None:
        block = self._model.blocks[layer]
        if not self.facts.post_attn_norm or not hasattr(block, "ln1_post"):
            return None
        with self.weights_context(block):
            return norm_spec(block.ln1_post, "rmsnorm")

    def head_weights(self, layer: int) -> HeadWeights:
        block = self._model.blocks[layer]
        attn = block.attn
        n = self.n_heads
        with self.weights_context(block), torch.no_grad():
            b_o = getattr(attn, "b_O", None)
            q_gain = k_gain = None
            if self.facts.qk_norm and hasattr(attn, "q_norm"):
                q_gain = effective_gain(attn.q_norm)
                k_gain = effective_gain(attn.k_norm)
            post = self.post_attn_norm_spec(layer)
            return HeadWeights(
                W_Q=attn.W_Q.detach().clone(), W_K=expand_kv(attn.W_K.detach(), n).clone(),
                W_V=expand_kv(attn.W_V.detach(), n).clone(), W_O=attn.W_O.detach().clone(),
                b_O=(b_o.detach().clone() if b_o is not None else torch.zeros(self.d_model, dtype=self.dtype)),
                q_gain=q_gain, k_gain=k_gain, post_gain=None if post is None else post.gain,
            )

    @property
    def W_U(self) -> Tensor:
        with self.weights_context(self._hf.get_output_embeddings()):
            return self._model.W_U

    @property
    def b_U(self) -> Tensor:
        head = self._hf.get_output_embeddings()
        if getattr(head, "bias", None) is None:
            return torch.zeros(self.d_vocab, dtype=self.dtype, device=self.device)
        with self.weights_context(head):
            return self._model.b_U.detach().clone()  # a copy: an offloaded module's tensors go back to meta

    @property
    def W_E(self) -> Tensor:
        embed = self._hf.get_input_embeddings()
        with self.weights_context(embed), torch.no_grad():
            weight = embed.weight
            assert isinstance(weight, Tensor)  # the embedding's parameter (nn.Module's getattr is untyped)
            weight = weight.detach()
            scale = getattr(embed, "embed_scale", None)  # Gemma scales embeddings by √d_model
            return weight * scale.to(weight) if isinstance(scale, Tensor) else weight

    def unembed(self, normed: Tensor) -> Tensor:
        return self.softcap(self._model.unembed(normed))

    @contextlib.contextmanager
    def weights_context(self, module: nn.Module | None = None) -> Iterator[None]:
        """Load the disk-offloaded weights under ``module`` (default: the whole model) for the block.

        Re-entrant: a nested context leaves what an outer one loaded in place.
        """
        if not self._offloaded:
            yield
            return
        with _onloaded(self._hf if module is None else module, self._loaded_ids):
            yield

    # -- generation --------------------------------------------------------------------------------
    def new_kv_cache(self, batch_size: int) -> dict[str, Any]:
        return new_kv_cache(self._hf)

    def decode_step(self, tokens: Tensor, attention_mask: Tensor, cache: dict[str, Any]) -> Tensor:
        out = self._hf(**decode_inputs(self._hf, tokens, attention_mask, cache, self.device))
        # The Hugging Face head already applied the model's final soft-cap.
        return out.logits[:, -1, :]


def _cache_kwarg_alias(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """transformers 5.2x passes the KV cache to attention as ``cache``; the Bridge's attention (3.9 and 4.x)
    reads ``past_key_values``, so without this alias a cached decode step attends to itself alone."""
    if kwargs.get("cache") is not None and kwargs.get("past_key_values") is None:
        kwargs = {**kwargs, "past_key_values": kwargs["cache"]}
    return args, kwargs


def _block_list(bridge: Any) -> tuple[nn.ModuleList, int]:
    """The Hugging Face ``ModuleList`` whose entries are the Bridge's blocks, and the first block's index."""
    first = bridge.blocks[0]
    for module in bridge.original_model.modules():
        if isinstance(module, nn.ModuleList):
            for index, entry in enumerate(module):
                if entry is first:
                    return module, index
    raise UnknownModelError("the bridge backend could not find the model's list of blocks")


def _offload_added_biases(hf: nn.Module) -> None:
    """Give accelerate the zero biases the Bridge adds to disk-offloaded modules.

    The Bridge registers a bias where the checkpoint has none (the unembedding's ``b_U``); on a module whose
    weights live on disk it is a meta tensor that is not in accelerate's offload index, so loading the module
    (for a pass through ``lm_head``, or to read ``W_U``) failed with ``KeyError: 'lm_head.bias'``. The missing
    biases are added to the index's in-memory part as the zeros they are."""
    from accelerate.utils import named_module_tensors

    for module in hf.modules():
        hook: Any = getattr(module, "_hf_hook", None)
        weights = getattr(hook, "weights_map", None)
        if hook is None or not getattr(hook, "offload", False) or weights is None or not hasattr(weights, "dataset"):
            continue
        loader = weights.dataset
        for name, tensor in named_module_tensors(module, include_buffers=hook.offload_buffers,
                                                 recurse=hook.place_submodules, remove_non_persistent=True):
            key = f"{weights.prefix}{name}"
            if name.rpartition(".")[2] == "bias" and key not in loader.state_dict and key not in loader.index:
                loader.state_dict[key] = torch.zeros(tensor.shape, dtype=tensor.dtype)
                loader.all_keys.append(key)


@contextlib.contextmanager
def _onloaded(root: nn.Module, active: set[int]) -> Iterator[None]:
    """Load the weights of every disk-offloaded module under ``root`` not already loaded (``active``) with
    accelerate's own hooks, and free exactly those again on exit."""
    hooked = [m for m in root.modules()
              if getattr(getattr(m, "_hf_hook", None), "offload", False) and id(m) not in active]
    loaded = []
    try:
        for module in hooked:
            hf_hook: Any = module._hf_hook  # accelerate's AlignDevicesHook, attached at run time
            hf_hook.pre_forward(module)
            active.add(id(module))
            loaded.append(module)
        yield
    finally:
        for module in reversed(loaded):
            hf_hook = module._hf_hook
            hf_hook.post_forward(module, None)
            active.discard(id(module))


# ----------------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------------
def _facts(bridge: Any, hf: PreTrainedModel, *, is_encoder: bool, n_ctx: int | None) -> ArchFacts:
    return arch_facts(hf, n_layers=len(bridge.blocks), final_norm=getattr(bridge, "ln_final", None),
                      post_attn_norm=hasattr(bridge.blocks[0], "ln1_post"), qk_norm=hasattr(bridge.blocks[0].attn, "q_norm"),
                      is_encoder=is_encoder, n_ctx=n_ctx)


def _encoder_aliases(n_layers: int) -> dict[str, str]:
    """Post-LN encoders (BERT): TransformerLens's ``hook_resid_post`` is the sum before the block's second
    LayerNorm and ``hook_normalized_resid_post`` the block's output; the Bridge names the output
    ``hook_resid_post`` and the sum ``ln2.hook_in``."""
    aliases: dict[str, str] = {}
    for layer in range(n_layers):
        aliases[f"blocks.{layer}.hook_normalized_resid_post"] = f"blocks.{layer}.hook_out"
        aliases[f"blocks.{layer}.hook_resid_post"] = f"blocks.{layer}.ln2.hook_in"
    return aliases


def build(source: Any, *, dtype: torch.dtype, device: str, processing: dict[str, bool], placement: dict[str, Any],
          started: float) -> BridgeBackend:
    """The bridge backend for a :class:`~interp.models.sources.ModelSource`."""
    import warnings

    from transformer_lens.model_bridge import TransformerBridge

    hf = source.build_hf(dtype, placement)
    # The checkpoint's count, taken before the Bridge adds its split Q/K/V copies and an untied unembedding.
    n_params = int(sum(p.numel() for p in hf.parameters()))
    if hasattr(hf, "set_attn_implementation"):
        hf.set_attn_implementation("eager")  # the Bridge reads scores and patterns from the eager path
    else:  # pragma: no cover - older transformers
        hf.config._attn_implementation = "eager"
    device_map = dict(getattr(hf, "hf_device_map", None) or {})
    offloaded = any(target in ("disk", "meta") for target in device_map.values())
    boot_kwargs: dict[str, Any] = {"hf_model": hf, "tokenizer": source.tokenizer, "dtype": dtype}
    if not device_map:
        boot_kwargs["device"] = device
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if offloaded:
            # The Bridge refuses disk targets because its weight processing cannot read them; this backend
            # boots such a model without processing (below), and accelerate's hooks load layers as they run.
            del hf.hf_device_map
        try:
            bridge = TransformerBridge.boot_transformers(source.tl_name or source.name, **boot_kwargs)
        except Exception as error:  # noqa: BLE001 - the Bridge raises many kinds for unmapped architectures
            raise UnknownModelError(
                f"the bridge backend cannot load {source.architecture}: {str(error).splitlines()[0][:160]}"
            ) from error
        finally:
            if offloaded:
                hf.hf_device_map = device_map
        use = {k: False for k in processing} if (offloaded or source.is_encoder) else dict(processing)
        if any(use.values()):
            # TransformerLens's processing, one block at a time: the Bridge's own copies the whole model
            # twice over at its peak (interp.backends.bridge_weights).
            setattr(bridge, "process_weights", functools.partial(process_weights_by_block, bridge))  # noqa: B010 - an instance override
            try:
                bridge.enable_compatibility_mode(disable_warnings=True, **use)
            finally:
                delattr(bridge, "process_weights")  # noqa: B043
        else:
            bridge.enable_compatibility_mode(disable_warnings=True, no_processing=True)
    bridge.eval()
    if offloaded:
        _offload_added_biases(hf)
    facts = _facts(bridge, hf, is_encoder=source.is_encoder, n_ctx=source.n_ctx)
    aliases = _encoder_aliases(facts.n_layers) if source.is_encoder else {}
    first_device = input_device(hf) if device_map else str(next(hf.parameters()).device)
    notes = source.notes
    if offloaded:
        notes = (notes + "; " if notes else "") + "disk-offloaded layers: weights unprocessed (raw Hugging Face coordinates)"
    info = ModelInfo(
        name=source.name, source=source.kind, origin=source.origin, architecture=source.architecture,
        dtype=str(dtype).replace("torch.", ""), device=first_device, processing=use, prepend_bos=True,
        n_params=n_params, n_layers=facts.n_layers, n_heads=facts.n_heads,
        n_kv_heads=facts.n_kv_heads, d_model=facts.d_model, d_head=facts.d_head, n_ctx=facts.n_ctx,
        is_encoder=facts.is_encoder, backend="bridge",
        # accelerate leaves no map when everything fits on one device: record that as the placement.
        placement={k: str(v) for k, v in device_map.items()} or ({"": first_device} if placement else {}),
        load_seconds=round(time.perf_counter() - started, 3), notes=notes,
    )
    backend = BridgeBackend(bridge, source.tokenizer, info, facts, aliases=aliases, offloaded=offloaded)
    if not _scores_are_pre_softmax(backend):
        backend._unavailable["attn.hook_attn_scores"] = (
            f"the Bridge's generic attention for {source.architecture} fires it with the post-softmax pattern "
            "and ignores edits; use --backend hooked for analyses that read or edit attention scores")
        backend._hook_names = None  # recomputed without the unavailable names
    return backend


def _scores_are_pre_softmax(backend: BridgeBackend) -> bool:
    """Whether ``hook_attn_scores`` carries the scores (softmax of them = the pattern), checked on a probe.

    TransformerLens 3.9's generic ``AttentionBridge`` (BERT, among others) fires it with the pattern itself.
    """
    names = ["blocks.0.attn.hook_attn_scores", "blocks.0.attn.hook_pattern"]
    if not set(names) <= set(backend._native_hook_names()):
        return True
    probe = backend.pad([[backend.bos_token_id or 0, 5, 6, 7]])
    seen = backend.capture(probe, names, stop_at_layer=None if backend.is_encoder else 1)
    scores, pattern = seen[names[0]].float(), seen[names[1]].float()
    return bool(torch.allclose(scores.softmax(-1), pattern, atol=1e-4)) and not torch.allclose(scores, pattern)
