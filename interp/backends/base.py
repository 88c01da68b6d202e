"""The backend protocol: everything the suite's methods need from a model, and nothing more.

Every probe, intervention, generation loop and attribution method talks to a :class:`Backend` and to
TransformerLens hook names (``blocks.3.attn.hook_z``, ``blocks.5.hook_resid_pre`` …), never to a
TransformerLens, Hugging Face or accelerate class. Two backends implement it:

* ``hooked`` (:mod:`interp.backends.hooked`): TransformerLens's ``HookedTransformer`` / ``HookedEncoder``
  (transformer-lens 3.x; removed in 4.0);
* ``bridge`` (:mod:`interp.backends.bridge`): TransformerLens's ``TransformerBridge``, which puts hook
  points on the Hugging Face modules themselves (50+ architectures, accelerate's ``device_map``).

What the protocol offers (counted from what the methods call):

1. tokens — :meth:`Backend.encode`, :meth:`Backend.tokenize`, :meth:`Backend.pad`,
   :meth:`Backend.token_strings`, BOS and padding facts, and :class:`ArchFacts` (shape, GQA groups,
   post-attention norms, q/k norms, soft-caps, sliding-window layers);
2. hooks — :meth:`Backend.hooks` (a context that installs hooks by TransformerLens name, validates the
   names, switches per-head ``hook_result`` on only while it is needed, and removes exactly what it added,
   on exceptions too) and :meth:`Backend.capture`;
3. running — :meth:`Backend.forward` with ``stop_at_layer`` and ``start_at_layer`` (resume from a cached
   residual; the fast exact scans depend on it);
4. residual → logits — :meth:`Backend.final_norm`, :meth:`Backend.unembed`, :meth:`Backend.logits_for`
   (a slice of token ids), :meth:`Backend.resid_to_logits`, with the logit soft-cap applied once, here;
5. weights — :meth:`Backend.head_weights` (``W_Q W_K W_V W_O b_O`` per query head, with the q/k-norm and
   post-attention norm gains the methods fold), ``W_U``/``b_U``/``W_E``, and the norms as :class:`NormSpec`;
6. generation — :meth:`Backend.new_kv_cache` and :meth:`Backend.decode_step` (KV-cached, last position).

Examples:
    >>> import interp
    >>> lm = interp.load_model("tiny-llama")
    >>> lm.facts.gqa_group, lm.backend      # the default backend
    (2, 'bridge')
    >>> seen = lm.capture(lm.tokenize(["Hello"]), ["blocks.1.attn.hook_pattern"])
    >>> tuple(seen["blocks.1.attn.hook_pattern"].shape)   # [batch, head, query, key]
    (1, 4, 6, 6)
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import OptionError, PromptError

#: A hook is named by its TransformerLens name, or by a filter over names (expanded when installed).
HookName = str | Callable[[str], bool]
HookFn = Callable[..., Any]
HookPair = tuple[HookName, HookFn]
ReturnType = Literal["logits"] | None


# ----------------------------------------------------------------------------------------------------
# Plain data
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelInfo:
    """How a model was loaded; recorded in every Result's metadata."""

    name: str
    source: str  # bundled | test | local | hub | object
    origin: str  # package, folder or hub id the weights came from
    architecture: str
    dtype: str
    device: str
    processing: dict[str, bool]
    prepend_bos: bool
    n_params: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    n_ctx: int
    is_encoder: bool
    backend: str = "hooked"
    placement: dict[str, str] = field(default_factory=dict)  # accelerate's device map, when one was used
    load_seconds: float = 0.0
    notes: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TokenBatch:
    """Right-padded token ids with a 1/0 mask of real tokens and each row's length."""

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    lengths: Int[Tensor, " batch"]
    prompt_index: tuple[int, ...] = ()

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


@dataclass(frozen=True)
class ArchFacts:
    """Architecture facts the methods branch on (the same on every backend for the same checkpoint).

    Attributes:
        positional: ``"rotary"``, ``"learned"`` (absolute position embeddings) or ``"none"``.
        normalization: ``"layernorm"``, ``"rmsnorm"`` or None (no final norm).
        post_attn_norm: a norm sits between the attention output and the residual (Gemma 2/3, OLMo 2).
        qk_norm: queries and keys are normalised per head before the scores (Gemma 3, Qwen 3).
        logit_softcap / attn_softcap: ``cap · tanh(x / cap)`` on the logits / scores, or None.
        sliding_window: window of the local-attention layers (``sliding_layers``), or None.
    """

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_vocab: int
    n_ctx: int
    is_encoder: bool
    positional: str
    normalization: str | None
    post_attn_norm: bool
    qk_norm: bool
    logit_softcap: float | None = None
    attn_softcap: float | None = None
    sliding_window: int | None = None
    sliding_layers: tuple[int, ...] = ()

    @property
    def gqa_group(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        return self.n_heads // self.n_kv_heads


@dataclass(frozen=True)
class NormSpec:
    """A normalisation layer as the methods need it: ``y = gain ⊙ (x − mean·[layernorm]) / scale + bias``.

    ``gain`` is the effective multiplicative weight (Gemma's ``1 + w`` already added), None when it was
    folded into the next matrix (TransformerLens's ``fold_ln``).
    """

    kind: Literal["layernorm", "rmsnorm"]
    gain: Tensor | None = None
    bias: Tensor | None = None

    def linear(self, x: Tensor, scale: Tensor) -> Tensor:
        """The linear part with the scale frozen (``scale`` is the norm's ``hook_scale`` activation)."""
        if self.kind == "layernorm":
            x = x - x.mean(-1, keepdim=True)
        out = x / scale
        return out * self.gain.to(out) if self.gain is not None else out

    def bias_or_zero(self, like: Tensor) -> Tensor:
        size = like.shape[-1]
        return self.bias.to(like) if self.bias is not None else torch.zeros(size, dtype=like.dtype, device=like.device)


@dataclass(frozen=True)
class HeadWeights:
    """One layer's attention weights per query head (grouped key/value heads expanded).

    ``q_gain``/``k_gain`` are q/k-norm gains over ``d_head`` (None without q/k norms); ``post_gain`` is the
    post-attention norm's effective gain over ``d_model`` (None without one).
    """

    W_Q: Float[Tensor, "head d_model d_head"]
    W_K: Float[Tensor, "head d_model d_head"]
    W_V: Float[Tensor, "head d_model d_head"]
    W_O: Float[Tensor, "head d_head d_model"]
    b_O: Float[Tensor, " d_model"]
    q_gain: Float[Tensor, " d_head"] | None = None
    k_gain: Float[Tensor, " d_head"] | None = None
    post_gain: Float[Tensor, " d_model"] | None = None


class HookRef:
    """What a hook function receives as ``hook``: the name it was installed under (``.name``).

    TransformerLens passes its own hook point, whose ``name`` can be the canonical name rather than the
    alias the hook was asked for (on the Bridge ``blocks.0.hook_resid_pre`` is ``blocks.0.hook_in``,
    TransformerLens issue #1317). Methods parse the layer from ``hook.name``, so every backend hands
    them the requested name; other attributes are read from the underlying hook point.
    """

    __slots__ = ("name", "_point")

    def __init__(self, name: str, point: Any) -> None:
        self.name = name
        self._point = point

    def __getattr__(self, item: str) -> Any:
        return getattr(self._point, item)

    def layer(self) -> int | None:
        parts = self.name.split(".")
        return int(parts[1]) if len(parts) > 1 and parts[0] == "blocks" and parts[1].isdigit() else None


class _StopForward(Exception):
    """Raised by a hook to end a forward pass early, carrying the residual it saw."""

    def __init__(self, value: Tensor) -> None:
        super().__init__("stop")
        self.value = value


def softcap(x: Tensor, cap: float | None) -> Tensor:
    """``cap · tanh(x / cap)`` (Gemma 2's logit soft-cap); identity without a cap."""
    if cap is None or cap <= 0:
        return x
    return cap * torch.tanh(x / cap)


# ----------------------------------------------------------------------------------------------------
# The protocol
# ----------------------------------------------------------------------------------------------------
class Backend(abc.ABC):
    """A loaded model behind the suite's protocol (see the module docstring).

    Attributes:
        tokenizer: a Hugging Face tokenizer.
        info: :class:`ModelInfo` provenance (recorded in every Result).
        facts: :class:`ArchFacts`.
        backend: the backend's name (``"hooked"`` or ``"bridge"``).
    """

    backend: str = "?"

    def __init__(self, model: Any, tokenizer: Any, info: ModelInfo, facts: ArchFacts) -> None:
        self._model = model
        self.tokenizer = tokenizer
        self.info = info
        self.facts = facts
        self._hook_names: frozenset[str] | None = None
        #: hook-name suffix → why this backend cannot offer it for this model (checked at load time)
        self._unavailable: dict[str, str] = {}

    # -- shape shortcuts ---------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return self.facts.n_layers

    @property
    def n_heads(self) -> int:
        return self.facts.n_heads

    @property
    def n_kv_heads(self) -> int:
        return self.facts.n_kv_heads

    @property
    def d_model(self) -> int:
        return self.facts.d_model

    @property
    def d_head(self) -> int:
        return self.facts.d_head

    @property
    def d_vocab(self) -> int:
        return self.facts.d_vocab

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def is_encoder(self) -> bool:
        return self.facts.is_encoder

    @property
    def device(self) -> torch.device:
        """Where inputs go (the first parameter's device; ``cpu`` for a disk-offloaded model)."""
        for parameter in self._model.parameters():
            if parameter.device.type != "meta":
                return parameter.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for parameter in self._model.parameters():
            if parameter.is_floating_point():
                return parameter.dtype
        return torch.float32

    def __repr__(self) -> str:
        i = self.info
        return (
            f"LoadedModel({i.name!r}, backend={self.backend}, source={i.source}, {i.n_layers} layers x "
            f"{i.n_heads} heads, d_model={i.d_model}, dtype={i.dtype})"
        )

    # -- tokens ------------------------------------------------------------------------------------
    @property
    def bos_token_id(self) -> int | None:
        if self.is_encoder:
            return self.tokenizer.cls_token_id
        return self.tokenizer.bos_token_id

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, 0):
            if candidate is not None:
                return int(candidate)
        return 0

    def encode(self, text: str, *, prepend_bos: bool | None = None) -> list[int]:
        """Token ids of one prompt; decoders get BOS prepended (TransformerLens's default).

        Examples:
            >>> import interp
            >>> interp.load_model("tiny-gpt2").encode("hi")
            [0, 74, 75]
        """
        if self.is_encoder:
            return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        use_bos = self.info.prepend_bos if prepend_bos is None else prepend_bos
        if use_bos and self.bos_token_id is not None:
            ids = [int(self.bos_token_id)] + ids
        return ids

    def tokenize(
        self, prompts: Sequence[str], *, max_tokens: int | None = None, prepend_bos: bool | None = None
    ) -> TokenBatch:
        """Tokenize and right-pad a list of prompts.

        ``max_tokens`` truncates each prompt (BOS included); without it a prompt longer than the model's
        context raises :class:`~interp.errors.PromptError` naming the limit.
        """
        if len(prompts) == 0:
            raise PromptError("the prompt set is empty: give at least one non-empty prompt")
        rows = [self.encode(p, prepend_bos=prepend_bos) for p in prompts]
        return self.pad([r[:max_tokens] if max_tokens else r for r in rows])

    def pad(self, rows: Sequence[Sequence[int]], prompt_index: Sequence[int] | None = None) -> TokenBatch:
        """Right-pad token id lists into a :class:`TokenBatch` (checks the context window)."""
        n_ctx = self.info.n_ctx
        for index, row in enumerate(rows):
            if len(row) == 0:
                raise PromptError(f"prompt {index} is empty after tokenization: give non-empty text")
            if len(row) > n_ctx:
                raise PromptError(
                    f"prompt {index} has {len(row)} tokens but {self.name} accepts at most {n_ctx}: "
                    "shorten it or pass --max-tokens"
                )
        width = max(len(r) for r in rows)
        tokens = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            tokens[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
            mask[i, : len(row)] = 1
        index = tuple(prompt_index) if prompt_index is not None else tuple(range(len(rows)))
        return TokenBatch(tokens=tokens, attention_mask=mask, lengths=mask.sum(dim=1), prompt_index=index)

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """Readable text of each token id (for tables and labels)."""
        return [self.tokenizer.decode([int(i)]) for i in ids]

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """Text of a token id sequence."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    # -- hooks -------------------------------------------------------------------------------------
    def hook_names(self) -> frozenset[str]:
        """Every TransformerLens hook name this model offers."""
        if self._hook_names is None:
            self._hook_names = frozenset(n for n in self._native_hook_names() if not n.endswith(tuple(self._unavailable)))
        return self._hook_names

    @property
    def embedding_hook(self) -> str:
        """The hook whose output is the token embeddings alone (before positions, token types and norms).

        Token attributions replace this activation with the tensor they differentiate or perturb
        (:mod:`interp.attribution.token_attribution`). ``hook_embed`` on decoders; overridden where the
        architecture names it otherwise.

        Examples:
            >>> import interp
            >>> interp.load_model("tiny-gpt2").embedding_hook
            'embed.hook_out'
        """
        return "hook_embed"

    def check_hook_names(self, names: Sequence[str]) -> None:
        """Raise :class:`~interp.errors.OptionError` naming the first unknown hook names."""
        unknown = sorted(set(names) - self.hook_names())
        for name in unknown:
            for suffix, reason in self._unavailable.items():
                if name.endswith(suffix):
                    raise OptionError(f"{name} is not available for {self.name} on the {self.backend} backend: {reason}")
        if unknown:
            raise OptionError(
                f"unknown hook name(s) {unknown[:3]} for {self.name} ({self.backend} backend): use "
                "TransformerLens names such as blocks.0.attn.hook_pattern"
            )

    def _expand(self, hooks: Sequence[HookPair]) -> list[tuple[str, HookFn]]:
        expanded: list[tuple[str, HookFn]] = []
        for name, fn in hooks:
            if isinstance(name, str):
                self.check_hook_names([name])
                expanded.append((name, fn))
            else:
                expanded += [(n, fn) for n in sorted(self.hook_names()) if name(n)]
        return expanded

    @staticmethod
    def _named(name: str, fn: HookFn) -> HookFn:
        def hook(activation: Tensor, hook: Any) -> Any:
            return fn(activation, hook=HookRef(name, hook))

        return hook

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Sequence[HookPair] = (), bwd_hooks: Sequence[HookPair] = ()) -> Iterator[Backend]:
        """Install hooks by TransformerLens name for the duration of the block; remove exactly those.

        Names are checked (unknown names raise :class:`~interp.errors.OptionError`), filters are expanded,
        and every hook receives ``hook.name`` equal to the name it was installed under. Per-head
        ``hook_result`` is switched on only while a hook listens to it. Contexts nest.

        Examples:
            >>> import interp
            >>> lm = interp.load_model("tiny-gpt2")
            >>> with lm.hooks([("blocks.0.attn.hook_z", lambda z, hook: z * 0)]):
            ...     _ = lm.forward(lm.tokenize(["hi"]))
        """
        forward = [(n, self._named(n, fn)) for n, fn in self._expand(fwd_hooks)]
        backward = [(n, self._named(n, fn)) for n, fn in self._expand(bwd_hooks)]
        needs_result = any(n.endswith("attn.hook_result") for n, _ in forward + backward)
        with contextlib.ExitStack() as stack:
            if needs_result:
                stack.enter_context(self._attn_result_enabled())
            stack.enter_context(self._install(forward, backward))
            yield self

    def capture(
        self, batch: TokenBatch, names: Sequence[str], *, stop_at_layer: int | None = None, detach: bool = True
    ) -> dict[str, Tensor]:
        """Run ``batch`` once and return the activations at ``names`` (the pass stops after the last one
        needed unless ``stop_at_layer`` says otherwise).

        Examples:
            >>> import interp
            >>> lm = interp.load_model("tiny-gpt2")
            >>> acts = lm.capture(lm.tokenize(["hi"]), ["blocks.1.hook_resid_pre"])
            >>> tuple(acts["blocks.1.hook_resid_pre"].shape)
            (1, 3, 64)
        """
        self.check_hook_names(names)
        store: dict[str, Tensor] = {}

        def keep(activation: Tensor, hook: Any) -> None:
            store[hook.name] = activation.detach() if detach else activation

        layers = [layer_of(n) for n in names]
        after_blocks = any(layer is None and not n.startswith(("hook_embed", "hook_pos_embed", "embed"))
                           for n, layer in zip(names, layers, strict=True))
        if stop_at_layer is None and layers and not after_blocks and not self.is_encoder:
            # embeddings only (``hook_embed``): the first block is enough
            stop_at_layer = min(self.n_layers, max((int(layer) for layer in layers if layer is not None), default=0) + 1)
        with torch.inference_mode() if detach else contextlib.nullcontext():
            # The final norm and unembedding hooks fire only when the logits are computed.
            self.forward(batch, fwd_hooks=[(n, keep) for n in names], stop_at_layer=stop_at_layer,
                         return_type="logits" if after_blocks and stop_at_layer is None else None)
        return store

    # -- running -----------------------------------------------------------------------------------
    def forward(
        self,
        batch: TokenBatch | None = None,
        *,
        fwd_hooks: Sequence[HookPair] = (),
        return_type: ReturnType = "logits",
        stop_at_layer: int | None = None,
        start_at_layer: int | None = None,
        residual: Float[Tensor, "batch pos d_model"] | None = None,
        attention_mask: Int[Tensor, "batch pos"] | None = None,
    ) -> Any:
        """Run the model with temporary hooks (always removed).

        * ``batch``: right-padded tokens; padded keys are masked, padded query rows are computed but
          ignored by every caller.
        * ``stop_at_layer=l``: return the residual stream entering block ``l`` (``n_layers``: the final
          residual, before the final norm).
        * ``start_at_layer=l`` with ``residual``: resume from the residual entering block ``l``
          (``attention_mask`` or ``batch.attention_mask`` masks it).
        * ``return_type``: ``"logits"`` (soft-capped) or None (run for the hooks only).

        Examples:
            >>> import interp
            >>> lm = interp.load_model("tiny-gpt2")
            >>> batch = lm.tokenize(["The cat"])
            >>> middle = lm.forward(batch, stop_at_layer=1)
            >>> full = lm.forward(batch)
            >>> resumed = lm.forward(batch, start_at_layer=1, residual=middle)
            >>> bool((full - resumed).abs().max() < 1e-4)
            True
        """
        mask = attention_mask if attention_mask is not None else (batch.attention_mask if batch is not None else None)
        if start_at_layer is not None:
            if residual is None:
                raise OptionError("start_at_layer needs the residual entering that layer (residual=...)")
            if not 0 <= start_at_layer < self.n_layers:
                raise OptionError(f"start_at_layer must be in 0..{self.n_layers - 1}, got {start_at_layer}")
            if mask is None:
                mask = torch.ones(residual.shape[:2], dtype=torch.long)
        elif batch is None:
            raise OptionError("forward needs a token batch (or start_at_layer with a residual)")
        if stop_at_layer is not None and not 0 < stop_at_layer <= self.n_layers:
            raise OptionError(f"stop_at_layer must be in 1..{self.n_layers}, got {stop_at_layer}")
        if start_at_layer is not None and stop_at_layer is not None and stop_at_layer <= start_at_layer:
            raise OptionError("stop_at_layer must come after start_at_layer")
        assert mask is not None
        mask = mask.to(self.device)
        with self.hooks(fwd_hooks):
            if start_at_layer is not None:
                assert residual is not None
                return self._resume(residual, mask, start_at_layer, stop_at_layer, return_type)
            assert batch is not None
            return self._run(batch.tokens.to(self.device), mask, stop_at_layer, return_type)

    # -- residual → logits -------------------------------------------------------------------------
    def softcap(self, logits: Tensor) -> Tensor:
        """The model's logit soft-cap (identity for models without one)."""
        return softcap(logits, self.facts.logit_softcap)

    def resid_to_logits(
        self, resid: Float[Tensor, "... d_model"], token_ids: Tensor | None = None
    ) -> Float[Tensor, "... vocab"]:
        """Final norm, unembedding and soft-cap of residual vectors (all tokens, or ``token_ids``).

        Examples:
            >>> import interp
            >>> lm = interp.load_model("tiny-gpt2")
            >>> batch = lm.tokenize(["The cat"])
            >>> final = lm.forward(batch, stop_at_layer=lm.n_layers)
            >>> bool((lm.resid_to_logits(final) - lm.forward(batch)).abs().max() < 1e-4)
            True
        """
        normed = self.final_norm(resid)
        return self.unembed(normed) if token_ids is None else self.logits_for(normed, token_ids)

    def logits_for(self, normed: Float[Tensor, "n d_model"], token_ids: Int[Tensor, " n"]) -> Float[Tensor, " n"]:
        """``logit[token_ids[i]]`` of each final-norm vector ``normed[i]`` (one column of ``W_U`` each)."""
        tokens = token_ids.to(normed.device)
        logits = (normed * self.W_U[:, tokens].T.to(normed)).sum(-1) + self.b_U[tokens].to(normed)
        return self.softcap(logits)

    def unembed(self, normed: Float[Tensor, "... d_model"]) -> Float[Tensor, "... vocab"]:
        """Logits (soft-capped) of final-norm outputs, over the whole vocabulary."""
        return self.softcap(normed @ self.W_U.to(normed) + self.b_U.to(normed))

    # -- backend-specific --------------------------------------------------------------------------
    @abc.abstractmethod
    def _native_hook_names(self) -> Sequence[str]:
        """Every hook name the wrapped model offers."""

    @abc.abstractmethod
    def _install(self, fwd: list[tuple[str, HookFn]], bwd: list[tuple[str, HookFn]]) -> contextlib.AbstractContextManager:
        """A context that adds exactly these hooks and removes exactly them on exit."""

    @abc.abstractmethod
    def _attn_result_enabled(self) -> contextlib.AbstractContextManager:
        """A context during which ``blocks.*.attn.hook_result`` fires."""

    @abc.abstractmethod
    def _run(self, tokens: Tensor, mask: Tensor, stop_at_layer: int | None, return_type: ReturnType) -> Any:
        """Forward from tokens (hooks already installed)."""

    @abc.abstractmethod
    def _resume(self, residual: Tensor, mask: Tensor, start: int, stop: int | None, return_type: ReturnType) -> Any:
        """Forward from the residual entering block ``start`` (hooks already installed)."""

    @abc.abstractmethod
    def final_norm(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """The final norm (identity for a model without one)."""

    @abc.abstractmethod
    def final_norm_spec(self) -> NormSpec | None:
        """The final norm as a :class:`NormSpec` (None without a final norm)."""

    @abc.abstractmethod
    def post_attn_norm_spec(self, layer: int) -> NormSpec | None:
        """The post-attention norm of ``layer`` (None for pre-norm-only architectures)."""

    @abc.abstractmethod
    def head_weights(self, layer: int) -> HeadWeights:
        """``layer``'s attention weights per query head (see :class:`HeadWeights`)."""

    @property
    @abc.abstractmethod
    def W_U(self) -> Float[Tensor, "d_model vocab"]:
        """The unembedding."""

    @property
    @abc.abstractmethod
    def b_U(self) -> Float[Tensor, " vocab"]:
        """The unembedding bias (zeros when the model has none)."""

    @property
    @abc.abstractmethod
    def W_E(self) -> Float[Tensor, "vocab d_model"]:
        """The token embedding (as the residual stream receives it, e.g. Gemma's √d scale included)."""

    @abc.abstractmethod
    def new_kv_cache(self, batch_size: int) -> Any:
        """An empty KV cache for :meth:`decode_step`."""

    @abc.abstractmethod
    def decode_step(
        self, tokens: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"], cache: Any
    ) -> Float[Tensor, "batch vocab"]:
        """Run new tokens against ``cache`` (which grows) and return the last position's logits.

        ``attention_mask`` covers the new tokens only; left padding is allowed in the first call (each row's
        positions start at its first real token). Hooks installed by :meth:`hooks` fire as usual; hooks on
        the final norm and unembedding see the last position only.
        """

    def generation_context(self) -> contextlib.AbstractContextManager:
        """A context that makes repeated decoding fast (no-op unless a backend needs one)."""
        return contextlib.nullcontext()

    def release_memory(self) -> None:  # noqa: B027 - optional for backends
        """Free caches the backend keeps between calls (re-laid weight copies)."""

    def weights_context(self, module: Any = None) -> contextlib.AbstractContextManager:
        """A context during which weights can be read directly (loads disk-offloaded layers; no-op otherwise).

        The protocol's weight accessors use it themselves; callers need it only to read parameters of
        the native model of a disk-offloaded bridge model.
        """
        return contextlib.nullcontext()

    def active_hook_count(self) -> int:
        """Hook functions installed right now (0 outside every :meth:`hooks` context).

        Examples:
            >>> import interp
            >>> lm = interp.load_model("tiny-gpt2")
            >>> with lm.hooks([("blocks.0.hook_resid_pre", lambda x, hook: x)]):
            ...     inside = lm.active_hook_count()
            >>> inside, lm.active_hook_count()
            (1, 0)
        """
        total, seen = 0, set()
        for point in self._model.hook_dict.values():
            if id(point) in seen:  # the Bridge lists one hook point under its name and its aliases
                continue
            seen.add(id(point))
            for handle in [*getattr(point, "fwd_hooks", ()), *getattr(point, "bwd_hooks", ())]:
                total += not getattr(handle, "is_permanent", False)  # the library's own permanent hooks
        return total

    @property
    def remote(self) -> Any:
        """The NDIF connection (:class:`~interp.backends.ndif.Remote`) of a model whose passes run remotely, else None."""
        return None

    def native_model(self) -> Any:
        """The wrapped TransformerLens model, for peer libraries that take one (sae-lens's training runner).

        The suite's own methods never use it: they speak this protocol.
        """
        return self._model


def layer_of(hook_name: str) -> int | None:
    """Layer index in ``blocks.{l}.…`` names, else None (embeddings, final norm).

    Examples:
        >>> layer_of("blocks.3.attn.hook_z"), layer_of("ln_final.hook_scale")
        (3, None)
    """
    parts = hook_name.split(".")
    if len(parts) > 1 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    return None


def expand_kv(weight: Tensor, n_heads: int) -> Tensor:
    """Repeat grouped key/value heads along axis 0 so there is one per query head."""
    if weight.shape[0] == n_heads:
        return weight
    return weight.repeat_interleave(n_heads // weight.shape[0], dim=0)
