"""The ``nnsight`` backend: the protocol over nnsight's ``LanguageModel`` on the Hugging Face model itself.

nnsight (https://nnsight.net) runs a Hugging Face model unchanged and lets a ``trace`` block read and
replace any module's inputs and outputs, and any operation inside a module's ``forward`` (``.source``), while
the model runs. This backend turns the protocol's hooks, which are named by TransformerLens names, into
such reads and writes, one ``trace`` per pass:

* each TransformerLens name is a *point* on an nnsight *event* (``model.layers.3.self_attn.o_proj``'s input
  for ``blocks.3.attn.hook_z``, the ``softmax`` inside the eager attention function for
  ``hook_attn_scores`` and ``hook_pattern``, …) with a reader that gives TransformerLens's shape and, where
  an edit has a meaning, a writer that puts an edited tensor back;
* nnsight requires a trace to touch events in the order the model runs them, so the installed hooks are
  grouped by event and visited in execution order (the order of :data:`_LAYER_EVENTS`);
* ``hook_result`` (per-head outputs) and the norms' ``hook_scale`` are computed from the event's tensor;
  an edit of ``hook_result`` replaces the output projection's output with the sum of the edited heads,
  and ``hook_scale`` is read-only;
* ``stop_at_layer`` ends the trace (``tracer.stop()``) at the next block's input; ``start_at_layer`` swaps
  the earlier blocks for a stand-in that returns the cached residual, as the bridge backend does.

The model is the raw Hugging Face checkpoint: no TransformerLens weight processing (``fold_ln`` …) is
applied, and the provenance records all processing flags off. Decoder models of the Llama/Gemma/Qwen family
(``model.layers``) and GPT-2 (``transformer.h``) are mapped; encoders are refused with one line.

nnsight is an optional extra (``pip install 'interp[nnsight]'``).

Examples:
    >>> import interp
    >>> lm = interp.load_model("tiny-llama", backend="nnsight")
    >>> lm.backend, lm.facts.gqa_group
    ('nnsight', 2)
    >>> seen = lm.capture(lm.tokenize(["Hello"]), ["blocks.1.attn.hook_pattern"])
    >>> tuple(seen["blocks.1.attn.hook_pattern"].shape)
    (1, 4, 6, 6)
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from interp.backends.base import (
    ArchFacts,
    Backend,
    HeadWeights,
    HookFn,
    HookRef,
    ModelInfo,
    NormSpec,
    ReturnType,
    expand_kv,
)
from interp.backends.hf import (
    Resume,
    arch_facts,
    decode_inputs,
    effective_gain,
    input_device,
    input_replacer,
    new_kv_cache,
    norm_kind,
    norm_spec,
)
from interp.errors import OptionError, UnknownModelError

if TYPE_CHECKING:
    from interp.backends.ndif import Remote

#: (envoy path, what is read): ``input``/``output`` of a module, or ``op:NAME:input|output`` of an operation
#: in the module's source (``op:attn:softmax:…`` inside the attention function).
Event = tuple[str, str]


@dataclass(frozen=True)
class _Layout:
    """Where a decoder family keeps its parts (module paths relative to the ``LanguageModel``)."""

    blocks: str
    attn: str
    q: str | None  # separate projections (Llama family), or None with a fused ``qkv`` (GPT-2's ``c_attn``)
    k: str | None
    v: str | None
    qkv: str | None
    out: str
    ln1: str
    ln2: str  # the norm before the MLP
    post_attn: str | None  # Gemma's norm between attention and the residual
    post_mlp: str | None
    mlp: str
    final_norm: str
    embed: str
    pos_embed: str | None
    unembed: str


_LLAMA = _Layout(blocks="model.layers", attn="self_attn", q="q_proj", k="k_proj", v="v_proj", qkv=None, out="o_proj",
                 ln1="input_layernorm", ln2="post_attention_layernorm", post_attn=None, post_mlp=None, mlp="mlp",
                 final_norm="model.norm", embed="model.embed_tokens", pos_embed=None, unembed="lm_head")
_GEMMA = _Layout(blocks="model.layers", attn="self_attn", q="q_proj", k="k_proj", v="v_proj", qkv=None, out="o_proj",
                 ln1="input_layernorm", ln2="pre_feedforward_layernorm", post_attn="post_attention_layernorm",
                 post_mlp="post_feedforward_layernorm", mlp="mlp", final_norm="model.norm",
                 embed="model.embed_tokens", pos_embed=None, unembed="lm_head")
_GPT2 = _Layout(blocks="transformer.h", attn="attn", q=None, k=None, v=None, qkv="c_attn", out="c_proj", ln1="ln_1",
                ln2="ln_2", post_attn=None, post_mlp=None, mlp="mlp", final_norm="transformer.ln_f",
                embed="transformer.wte", pos_embed="transformer.wpe", unembed="lm_head")


def _layout(hf: nn.Module) -> _Layout:
    names = {name for name, _ in hf.named_modules()}
    if "transformer.h" in names and "transformer.h.0.attn.c_attn" in names:
        return _GPT2
    if "model.layers.0.self_attn.o_proj" in names and "model.layers.0.self_attn.q_proj" in names:
        return _GEMMA if "model.layers.0.pre_feedforward_layernorm" in names else _LLAMA
    raise UnknownModelError(f"the nnsight backend maps Llama-, Gemma-, Qwen-style and GPT-2 decoders; "
                            f"{type(hf).__name__} is not one of them: use --backend bridge")


@dataclass(frozen=True)
class _Point:
    """One TransformerLens name on an nnsight event: how to read it, and how to write an edit back."""

    event: Event
    read: Callable[[Any], Tensor]
    write: Callable[[Tensor, Any], Any] | None = None  # (edited, raw) → new raw; None: read-only
    defer: Event | None = None  # the write lands on this later event instead (hook_result → o_proj's output)
    bias: Callable[[], Tensor] | None = None  # added to a deferred write (the output projection's bias)


def _heads(x: Tensor, n: int) -> Tensor:
    """``[batch, pos, n·d] → [batch, pos, n, d]``."""
    return x.view(*x.shape[:-1], n, x.shape[-1] // n)


def _flat(x: Tensor) -> Tensor:
    return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])


def _bhpd(x: Tensor) -> Tensor:
    """``[batch, head, pos, d] ↔ [batch, pos, head, d]`` (the Hugging Face and TransformerLens layouts)."""
    return x.transpose(1, 2)


def _masked_scores(scores: Tensor) -> Tensor:
    """Hugging Face masks scores by adding the dtype's minimum; TransformerLens's masked scores are ``−inf``."""
    return scores.masked_fill(scores <= torch.finfo(scores.dtype).min / 2, float("-inf"))


def _unmasked_scores(scores: Tensor) -> Tensor:
    """Back to Hugging Face's convention: a query row whose keys are all masked (a padded row) then gets a
    uniform pattern instead of NaN, as it does without the edit."""
    return scores.masked_fill(scores == float("-inf"), torch.finfo(scores.dtype).min)


def _scale(module: nn.Module) -> Callable[[Any], Tensor]:
    """``hook_scale`` of a norm from its input event: ``√(mean x² + ε)`` (RMS) or ``√(var x + ε)`` (LayerNorm)."""
    eps = float(getattr(module, "eps", None) or getattr(module, "variance_epsilon", None) or 1e-6)
    layernorm = norm_kind(module) == "layernorm"

    def scale(raw: Any) -> Tensor:
        x = _first(raw).float()
        if layernorm:
            x = x - x.mean(-1, keepdim=True)
        return (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()

    return scale


def _first(raw: Any) -> Tensor:
    return raw[0] if isinstance(raw, tuple) else raw


def _replace_first(new: Tensor, raw: Any) -> Any:
    return (new, *raw[1:]) if isinstance(raw, tuple) else new


def _batch_expanded(batch: list[int], raw: Any) -> Tensor:
    """GPT-2's position embeddings (``[1, pos, d_model]``, broadcast when added) at the pass's batch size."""
    return _first(raw).expand(batch[0], -1, -1)


def _out_weight_of(out: nn.Module, n_heads: int, d_head: int, conv1d: bool) -> Tensor:
    """``W_O`` as ``[head, d_head, d_model]`` from the output projection (GPT-2's Conv1D stores ``[in, out]``)."""
    weight: Tensor = out.weight if conv1d else out.weight.T  # type: ignore[assignment]
    return weight.reshape(n_heads, d_head, -1)


def _bias_of(out: nn.Module, d_model: int) -> Tensor:
    bias, weight = getattr(out, "bias", None), getattr(out, "weight")  # noqa: B009 - typed as Any, not Module
    return bias.detach() if isinstance(bias, Tensor) else torch.zeros(d_model, dtype=weight.dtype)


def _per_head(out: nn.Module, n_heads: int, d_head: int, conv1d: bool, raw: Any) -> Tensor:
    """Per-head outputs ``z_h W_O[h]`` (``[batch, pos, head, d_model]``) from the output projection's input."""
    z = _first(raw)
    return torch.einsum("bphd,hdm->bphm", _heads(z, n_heads), _out_weight_of(out, n_heads, d_head, conv1d).to(z))


#: an event, its hooks (name, point, function, backward), and a tensor that replaces the event's value first
Step = tuple[Event, list[tuple[str, _Point, HookFn, bool]], Tensor | None]


def _interleave(root: Any, steps: list[Step], stop_event: Event | None, want_logits: bool, kept: dict[str, Any]) -> None:
    """The body of a pass's trace: at each event (in execution order) run its hooks and write their edits back;
    keep the residual at ``stop_event`` and the logits. Refers to nothing but its arguments and this module's
    functions, so a remote request runs the same code (nnsight ships it by value)."""
    pending: dict[Event, Tensor] = {}
    edited_results: dict[str, Tensor] = {}  # hook_result values edited in this pass: what later hooks see
    for event, hooks, replacement in steps:
        path, what = event
        envoy = _module(root, path)
        if what.startswith("op:"):
            for op in what.split(":")[1:-1]:
                envoy = getattr(envoy.source, op)
        raw = _get(envoy, what)
        edited = False
        if replacement is not None:
            raw, edited = _replace_first(replacement.to(_first(raw)), raw), True
        if event in pending:
            raw, edited = _replace_first(pending.pop(event), raw), True
        for name, point, fn, backward in hooks:
            raw, changed = _apply(name, point, fn, backward, raw, pending, edited_results)
            edited = edited or changed
        if edited:
            _set(envoy, what, raw)
        if event == stop_event:
            kept["stop"] = _first(raw)
    if want_logits:
        kept["logits"] = root.output.logits


def _apply(name: str, point: _Point, fn: HookFn, backward: bool, raw: Any, pending: dict[Event, Tensor],
           edited_results: dict[str, Tensor]) -> tuple[Any, bool]:
    """Run one hook on ``raw`` (the event's tensor); the new raw value, and whether it changed."""
    ref = HookRef(name, None)
    if backward:
        tensor = _first(raw)
        if tensor.requires_grad:
            write = point.write
            assert write is not None

            def on_grad(grad: Tensor) -> Tensor:
                new = fn(point.read(grad), hook=ref)
                return grad if new is None else _first(write(new, grad))

            tensor.register_hook(on_grad)
        return raw, False
    value = edited_results.get(name)
    value = point.read(raw) if value is None else value
    new = fn(value, hook=ref)
    if new is None:
        return raw, False
    if point.defer is not None:  # hook_result: the output projection's output becomes the heads' sum
        assert point.bias is not None
        edited_results[name] = new
        pending[point.defer] = new.sum(-2) + point.bias().to(new)
        return raw, False
    if point.write is None:
        if new is value:
            return raw, False
        raise OptionError(f"{name} can be read but not edited on the nnsight backend (it is computed from the "
                          "model's tensors): edit the tensor it is computed from")
    return point.write(new, raw), True


class NNsightBackend(Backend):
    """An nnsight ``LanguageModel`` behind the protocol (see the module docstring)."""

    backend = "nnsight"

    def __init__(self, lm: Any, hf: nn.Module, tokenizer: Any, info: ModelInfo, facts: ArchFacts,
                 layout: _Layout, remote: Remote | None = None) -> None:
        super().__init__(hf, tokenizer, info, facts)
        self._remote = remote
        self._lm = lm
        self._layout = layout
        self._fwd: list[tuple[str, HookFn]] = []
        self._batch = [1]  # the batch size of the pass being traced (a box: the position reader holds it)
        self._twin: Backend | None = None  # a bridge over the same weights, for peer libraries (native_model)
        self._bwd: list[tuple[str, HookFn]] = []
        self._blocks = _module(hf, layout.blocks)
        assert isinstance(self._blocks, nn.ModuleList)
        self._ops = self._attention_ops()
        for layer in range(len(self._blocks)):
            # nnsight rewrites a forward for ``.source`` the first time it is asked for; asked for mid-pass, the
            # module is already running the old one, so every attention module is rewritten here, once.
            _ = _module(lm, self._block(layer, layout.attn)).source
        self._points = self._build_points()
        self._order = {event: index for index, event in enumerate(self._events())}

    # -- the map from TransformerLens names to nnsight events ---------------------------------------
    def _block(self, layer: int, part: str = "") -> str:
        return f"{self._layout.blocks}.{layer}" + (f".{part}" if part else "")

    def _attention_ops(self) -> tuple[str, str, str | None]:
        """Names nnsight gives the attention call inside ``forward``, the path from it to the softmax (``a:b:…``,
        found in a trace that stops before the model runs), and the rotary call."""
        attn_path = self._block(0, self._layout.attn)
        ops = _op_names(str(_module(self._lm, attn_path).source))
        calls = [op for op in ops if re.fullmatch(r"attention_interface_\d+", op)]
        if not calls:
            raise UnknownModelError(f"the nnsight backend found no attention call in {attn_path}.forward")
        rotary = next((op for op in ops if op.startswith("apply_rotary_pos_emb")), None)
        if self._remote is not None:
            # No weights here to run a probe trace on; the function the pinned eager name stands for is the one
            # the server's eager attention calls, and its softmax is nnsight's ``nn_functional_softmax_0``.
            return calls[-1], _static_softmax_path(self._hf), rotary
        probe = torch.tensor([[self.pad_token_id]])
        found: list[list[str]] = []
        with self._lm.trace({"input_ids": probe, "attention_mask": torch.ones_like(probe)}) as tracer:
            found.append(_softmax_path(getattr(_module(self._lm, attn_path).source, calls[-1]), depth=3))
            tracer.stop()
        if not found[0]:
            raise UnknownModelError(f"the nnsight backend found no softmax in the attention function of {attn_path}")
        return calls[-1], ":".join(found[0]), rotary

    @property
    def _hf(self) -> nn.Module:
        return self._model

    def _events(self) -> list[Event]:
        """Every event, in the order the model runs them."""
        lay = self._layout
        events: list[Event] = [(lay.embed, "output")]
        if lay.pos_embed:
            events.append((lay.pos_embed, "output"))
        call, softmax, rotary = self._ops
        for layer in range(self.n_layers):
            attn = self._block(layer, lay.attn)
            events.append((self._block(layer), "input"))
            events += [(f"{attn}.{p}", "output") for p in (lay.q, lay.k, lay.v, lay.qkv) if p]
            if rotary:
                events.append((attn, f"op:{rotary}:output"))
            events += [(attn, f"op:{call}:{softmax}:input"), (attn, f"op:{call}:{softmax}:output"),
                       (f"{attn}.{lay.out}", "input"), (f"{attn}.{lay.out}", "output"), (attn, "output")]
            if lay.post_attn:
                events += [(self._block(layer, lay.post_attn), "input"), (self._block(layer, lay.post_attn), "output")]
            events += [(self._block(layer, lay.ln2), "input"), (self._block(layer, lay.mlp), "output")]
            if lay.post_mlp:
                events.append((self._block(layer, lay.post_mlp), "output"))
            events.append((self._block(layer), "output"))
        return [*events, (lay.final_norm, "input"), (lay.unembed, "output")]

    def _build_points(self) -> dict[str, _Point]:
        lay, n, n_kv = self._layout, self.n_heads, self.n_kv_heads
        call, softmax, rotary = self._ops
        points: dict[str, _Point] = {"hook_embed": _Point((lay.embed, "output"), _first, _replace_first)}
        if lay.pos_embed:
            # GPT-2's position embeddings are [1, pos, d_model], broadcast over the batch when added
            points["hook_pos_embed"] = _Point((lay.pos_embed, "output"),
                                              functools.partial(_batch_expanded, self._batch), _replace_first)
        d_model = self.d_model
        for layer in range(self.n_layers):
            b, attn = f"blocks.{layer}", self._block(layer, lay.attn)
            p = {
                "hook_resid_pre": _Point((self._block(layer), "input"), _first, _replace_first),
                "ln1.hook_scale": _Point((self._block(layer), "input"), _scale(_module(self._hf, self._block(layer, lay.ln1)))),
                "attn.hook_pattern": _Point((attn, f"op:{call}:{softmax}:output"), _first, _replace_first),
                "attn.hook_attn_scores": _Point((attn, f"op:{call}:{softmax}:input"),
                                                lambda raw: _masked_scores(_first(raw)),
                                                lambda new, raw: _replace_first(_unmasked_scores(new), raw)),
                "attn.hook_z": _Point((f"{attn}.{lay.out}", "input"), lambda raw: _heads(_first(raw), n),
                                      lambda new, raw: _replace_first(_flat(new), raw)),
                "attn.hook_result": _Point((f"{attn}.{lay.out}", "input"),
                                           functools.partial(_per_head, self._out_module(layer), n, self.d_head,
                                                             bool(lay.qkv)),
                                           defer=(f"{attn}.{lay.out}", "output"),
                                           bias=functools.partial(_bias_of, self._out_module(layer), d_model)),
                "hook_resid_mid": _Point((self._block(layer, lay.ln2), "input"), _first),
                "ln2.hook_scale": _Point((self._block(layer, lay.ln2), "input"), _scale(_module(self._hf, self._block(layer, lay.ln2)))),
                "hook_resid_post": _Point((self._block(layer), "output"), _first, _replace_first),
            }
            if lay.post_attn:
                post = self._block(layer, lay.post_attn)
                p["hook_attn_out"] = _Point((post, "output"), _first, _replace_first)
                p["ln1_post.hook_scale"] = _Point((post, "input"), _scale(_module(self._hf, post)))
            else:
                p["hook_attn_out"] = _Point((attn, "output"), _first, _replace_first)
            if lay.post_mlp:
                p["hook_mlp_out"] = _Point((self._block(layer, lay.post_mlp), "output"), _first, _replace_first)
            else:
                p["hook_mlp_out"] = _Point((self._block(layer, lay.mlp), "output"), _first, _replace_first)
            if lay.qkv:  # GPT-2: one fused projection, split in three
                for index, letter in enumerate("qkv"):
                    p[f"attn.hook_{letter}"] = _Point(
                        (f"{attn}.{lay.qkv}", "output"), functools.partial(_qkv_read, index, d_model, n),
                        functools.partial(_qkv_write, index, d_model))
            else:
                for letter, path, heads in (("q", lay.q, n), ("k", lay.k, n_kv), ("v", lay.v, n_kv)):
                    p[f"attn.hook_{letter}"] = _Point((f"{attn}.{path}", "output"),
                                                      functools.partial(_heads_of, heads),
                                                      lambda new, raw: _replace_first(_flat(new), raw))
            if rotary:
                for index, letter in enumerate("qk"):
                    p[f"attn.hook_rot_{letter}"] = _Point((attn, f"op:{rotary}:output"),
                                                          functools.partial(_rot_read, index),
                                                          functools.partial(_rot_write, index))
            points.update({f"{b}.{k}": v for k, v in p.items()})
        final = _module(self._hf, lay.final_norm)
        points["ln_final.hook_in"] = _Point((lay.final_norm, "input"), _first)
        points["ln_final.hook_scale"] = _Point((lay.final_norm, "input"), _scale(final))
        points["unembed.hook_out"] = _Point((lay.unembed, "output"), _first, _replace_first)
        return points

    def _out_module(self, layer: int) -> nn.Module:
        return _module(self._hf, self._block(layer, f"{self._layout.attn}.{self._layout.out}"))

    def _out_weight(self, layer: int) -> Tensor:
        return _out_weight_of(self._out_module(layer), self.n_heads, self.d_head, bool(self._layout.qkv))

    def _out_bias(self, layer: int) -> Tensor:
        return _bias_of(self._out_module(layer), self.d_model)

    # -- hooks -------------------------------------------------------------------------------------
    def _native_hook_names(self) -> Sequence[str]:
        return list(self._points)

    @contextlib.contextmanager
    def _install(self, fwd: list[tuple[str, HookFn]], bwd: list[tuple[str, HookFn]]) -> Iterator[None]:
        added_fwd, added_bwd = list(fwd), list(bwd)
        for name, _ in added_bwd:
            if self._points[name].write is None or self._points[name].defer is not None:
                raise OptionError(f"{name} takes no backward hooks on the nnsight backend (it is computed, not a "
                                  "tensor the model uses): hook the tensor it is computed from")
        self._fwd += added_fwd
        self._bwd += added_bwd
        try:
            yield
        finally:
            for entry in added_fwd:
                self._fwd.remove(entry)
            for entry in added_bwd:
                self._bwd.remove(entry)

    def _attn_result_enabled(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # hook_result is computed from hook_z when a hook asks for it

    def active_hook_count(self) -> int:
        return len(self._fwd) + len(self._bwd)

    # -- running -----------------------------------------------------------------------------------
    def _trace(self, inputs: dict[str, Any], stop: int | None, return_type: ReturnType,
               resume: tuple[int, Tensor] | None = None) -> Any:
        """One nnsight trace: the installed hooks at their events in execution order; the residual entering
        block ``stop`` (or the final norm) when ``stop`` is given, else the logits or None. ``resume`` (layer,
        residual) replaces the residual entering that layer, and the hooks of earlier events do not run."""
        planned: dict[Event, list[tuple[str, _Point, HookFn, bool]]] = {}
        for name, fn in self._fwd:
            planned.setdefault(self._points[name].event, []).append((name, self._points[name], fn, False))
        for name, fn in self._bwd:
            planned.setdefault(self._points[name].event, []).append((name, self._points[name], fn, True))
        for name, _ in self._fwd:
            defer = self._points[name].defer
            if defer is not None:
                planned.setdefault(defer, [])
        stop_event = None
        if stop is not None:
            stop_event = (self._block(stop), "input") if stop < self.n_layers else (self._layout.final_norm, "input")
            planned = {e: hooks for e, hooks in planned.items() if self._order[e] <= self._order[stop_event]}
            planned.setdefault(stop_event, [])
        resume_at = None
        if resume is not None:
            resume_at = (self._block(resume[0]), "input")
            planned = {e: hooks for e, hooks in planned.items() if self._order[e] >= self._order[resume_at]}
            planned.setdefault(resume_at, [])
        # The residual to resume from goes in at its event before the event's own hooks see it.
        replaced = None if resume is None else resume[1]
        steps: list[Step] = [(event, planned[event], replaced if event == resume_at else None)
                             for event in sorted(planned, key=self._order.__getitem__)]
        want_logits = stop is None and return_type == "logits"
        self._batch[0] = int(inputs["input_ids"].shape[0])
        if self._remote is not None:
            kept = self._remote.run(self._lm, inputs, steps, stop_event, want_logits)
        else:
            root, kept = self._lm, {}
            with root.trace(inputs) as tracer:
                _interleave(root, steps, stop_event, want_logits, kept)
                if not want_logits:
                    tracer.stop()  # nothing after the last event is needed (gemma's unembedding is 2/3 of a pass)
        if stop is not None:
            return kept["stop"]
        return kept.get("logits")

    def _run(self, tokens: Tensor, mask: Tensor, stop_at_layer: int | None, return_type: ReturnType) -> Any:
        return self._trace({"input_ids": tokens, "attention_mask": mask}, stop_at_layer, return_type)

    def _resume(self, residual: Tensor, mask: Tensor, start: int, stop: int | None, return_type: ReturnType) -> Any:
        residual = residual.to(self.device)
        if self._remote is not None:  # the server runs the earlier blocks on padding; their output is replaced
            dummy = torch.full(residual.shape[:2], self.pad_token_id, dtype=torch.long, device=self.device)
            return self._trace({"input_ids": dummy, "attention_mask": mask}, stop, return_type, resume=(start, residual))
        stand_in = Resume(residual)
        saved = [self._blocks[i] for i in range(start)]
        # Token ids only give the forward its batch and sequence shape; their embeddings are dropped.
        dummy = torch.full(residual.shape[:2], self.pad_token_id, dtype=torch.long, device=self.device)
        handle = None
        if start == 0:
            handle = self._blocks[0].register_forward_pre_hook(input_replacer(residual), with_kwargs=True)
        try:
            for i in range(start):
                self._blocks[i] = stand_in
            return self._trace({"input_ids": dummy, "attention_mask": mask}, stop, return_type)
        finally:
            if handle is not None:
                handle.remove()
            for i, block in enumerate(saved):
                self._blocks[i] = block

    # -- norms, logits, weights --------------------------------------------------------------------
    def _local_only(self, what: str, why: str) -> None:
        """Refuse, in one line, what a remote model cannot do."""
        if self._remote is not None:
            from interp.backends.ndif import refusal

            raise OptionError(refusal(what, why))

    def _weights_here(self, path: str) -> None:
        """A remote model reads the weights of module ``path`` from the server on first use (one request; the bytes
        count in ``remote.traffic``); its other weights stay on the meta device."""
        if self._remote is not None:
            self._remote.fetch(self._lm, self._hf, path)

    @property
    def remote(self) -> Remote | None:
        """The NDIF connection of a model loaded with ``remote=True`` (its ``traffic`` counts bytes), else None."""
        return self._remote

    def __reduce_ex__(self, protocol: Any) -> Any:
        if self._remote is not None:  # a hook that holds the model would send it (weights, tokenizer) with a pass
            from interp.backends.ndif import refuse_shipping

            return refuse_shipping("a hook that holds the model object")()
        return super().__reduce_ex__(protocol)

    def final_norm(self, resid: Tensor) -> Tensor:
        self._weights_here(self._layout.final_norm)
        return _module(self._hf, self._layout.final_norm)(resid)

    def final_norm_spec(self) -> NormSpec | None:
        self._weights_here(self._layout.final_norm)
        module = _module(self._hf, self._layout.final_norm)
        return norm_spec(module, norm_kind(module))

    def post_attn_norm_spec(self, layer: int) -> NormSpec | None:
        if not self._layout.post_attn:
            return None
        self._weights_here(self._block(layer, self._layout.post_attn))
        return norm_spec(_module(self._hf, self._block(layer, self._layout.post_attn)), "rmsnorm")

    def head_weights(self, layer: int) -> HeadWeights:
        self._weights_here(self._block(layer, self._layout.attn))
        lay, n, n_kv, d, dm = self._layout, self.n_heads, self.n_kv_heads, self.d_head, self.d_model
        attn = _module(self._hf, self._block(layer, lay.attn))
        with torch.no_grad():
            if lay.qkv:  # Conv1D: [d_model, 3·d_model], x @ W
                fused = getattr(attn, lay.qkv).weight.detach()
                w_q, w_k, w_v = (fused[:, i * dm:(i + 1) * dm].reshape(dm, n, d).permute(1, 0, 2) for i in range(3))
            else:  # Linear: [heads·d_head, d_model], x @ W.T
                w_q, w_k, w_v = (getattr(attn, str(p)).weight.detach().reshape(h, d, dm).transpose(1, 2)
                                 for p, h in ((lay.q, n), (lay.k, n_kv), (lay.v, n_kv)))
            q_gain = k_gain = None
            if self.facts.qk_norm:
                q_gain, k_gain = effective_gain(attn.q_norm), effective_gain(attn.k_norm)
            post = self.post_attn_norm_spec(layer)
            return HeadWeights(W_Q=w_q.clone(), W_K=expand_kv(w_k, n).clone(), W_V=expand_kv(w_v, n).clone(),
                               W_O=self._out_weight(layer).detach().clone(), b_O=self._out_bias(layer).clone(),
                               q_gain=q_gain, k_gain=k_gain, post_gain=None if post is None else post.gain)

    @property
    def W_U(self) -> Tensor:
        self._weights_here(self._layout.unembed)
        return _module(self._hf, self._layout.unembed).weight.detach().T

    @property
    def b_U(self) -> Tensor:
        self._weights_here(self._layout.unembed)
        bias = getattr(_module(self._hf, self._layout.unembed), "bias", None)
        return bias.detach() if isinstance(bias, Tensor) else torch.zeros(self.d_vocab, dtype=self.dtype)

    @property
    def W_E(self) -> Tensor:
        self._weights_here(self._layout.embed)
        embed = _module(self._hf, self._layout.embed)
        weight = embed.weight.detach()
        scale = getattr(embed, "embed_scale", None)  # Gemma scales embeddings by √d_model
        return weight * scale.to(weight) if isinstance(scale, Tensor) else weight

    def unembed(self, normed: Tensor) -> Tensor:
        return self.softcap(normed @ self.W_U.to(normed) + self.b_U.to(normed))

    # -- generation --------------------------------------------------------------------------------
    def new_kv_cache(self, batch_size: int) -> dict[str, Any]:
        return new_kv_cache(self._hf)

    def decode_step(self, tokens: Tensor, attention_mask: Tensor, cache: dict[str, Any]) -> Tensor:
        if self._remote is not None:
            # No cache lives on the server between requests: each step runs the whole sequence so far (every
            # position's activations are the cached run's, so position-wise hooks give the same tokens).
            sequence = tokens if cache.get("tokens") is None else torch.cat([cache["tokens"], tokens], dim=1)
            cache["tokens"] = sequence
            inputs = decode_inputs(self._hf, sequence, attention_mask, cache, self.device)
            inputs["input_ids"], inputs["position_ids"] = sequence, (inputs["attention_mask"].cumsum(1) - 1).clamp(min=0)
            inputs["use_cache"] = False
            inputs.pop("cache", None)
            inputs.pop("past_key_values", None)
            return self._trace(inputs, None, "logits")[:, -1, :]
        inputs = decode_inputs(self._hf, tokens, attention_mask, cache, self.device)
        return self._trace(inputs, None, "logits")[:, -1, :]

    def native_model(self) -> Any:
        """A TransformerLens model for peer libraries that take one (sae-lens's training runner, TransformerLens's
        own functions in tests): a ``TransformerBridge`` over a second Hugging Face model that shares this one's
        weight tensors, unprocessed, so its residual stream and patterns are this model's. Built on first use."""
        self._local_only("a TransformerLens model for a peer library (sae-lens)", "the weights stay on the server")
        if self._twin is None:
            from interp.models import from_hf

            with torch.random.fork_rng():  # building it draws nothing from the caller's generator (sae-lens seeds it)
                self._twin = from_hf(_twin_of(self._hf), self.tokenizer, name=self.name, backend="bridge",
                                     processing={flag: False for flag in self.info.processing}, device=str(self.device))
        return self._twin.native_model()


def _twin_of(hf: nn.Module) -> nn.Module:
    """A second instance of ``hf``'s class sharing its parameters and buffers (no copy of the weights, no
    random initialisation: built on the meta device, then given ``hf``'s tensors). The Bridge wraps the
    twin's modules, so the nnsight model's own modules stay as they are."""
    with torch.device("meta"):
        twin = type(hf)(hf.config)
    twin.load_state_dict(hf.state_dict(), assign=True)
    for name, buffer in hf.named_buffers():  # non-persistent buffers (rotary frequencies) are not in the state dict
        owner, _, leaf = name.rpartition(".")
        module = twin.get_submodule(owner) if owner else twin
        if getattr(module, leaf, None) is None or getattr(module, leaf).is_meta:
            module.register_buffer(leaf, buffer, persistent=False)
    for module, original in zip(twin.modules(), hf.modules(), strict=True):  # tensors kept as plain attributes
        for attribute in ("original_inv_freq", "attention_scaling", "embed_scale"):
            if isinstance(getattr(original, attribute, None), Tensor):
                setattr(module, attribute, getattr(original, attribute))
    return twin.eval()


def _heads_of(n: int, raw: Any) -> Tensor:
    return _heads(_first(raw), n)


def _qkv_read(index: int, d_model: int, n: int, raw: Any) -> Tensor:
    return _heads(_first(raw)[..., index * d_model:(index + 1) * d_model], n)


def _qkv_write(index: int, d_model: int, new: Tensor, raw: Any) -> Any:
    fused = _first(raw)
    parts = [fused[..., i * d_model:(i + 1) * d_model] for i in range(3)]
    parts[index] = _flat(new).to(fused)
    return _replace_first(torch.cat(parts, dim=-1), raw)


def _rot_read(index: int, raw: Any) -> Tensor:
    return _bhpd(raw[index])


def _rot_write(index: int, new: Tensor, raw: Any) -> Any:
    parts = list(raw)
    parts[index] = _bhpd(new)
    return tuple(parts)


def _module(root: Any, path: str) -> Any:
    """``root.a.b.3.c`` for a dotted path (digits index module lists); works on envoys and modules."""
    for part in path.split("."):
        root = root[int(part)] if part.isdigit() else getattr(root, part)
    return root


def _get(envoy: Any, what: str) -> Any:
    return envoy.input if what.endswith("input") else envoy.output


def _set(envoy: Any, what: str, value: Any) -> None:
    if what.endswith("input"):
        envoy.input = value
    else:
        envoy.output = value


def _softmax_path(op: Any, depth: int) -> list[str]:
    """Operation names from ``op`` down to the softmax of the attention weights (``[]`` if none within ``depth``):
    the eager function itself, or a wrapper around it (TransformerLens's Bridge wraps Gemma's)."""
    names = _op_names(str(op.source))
    if "nn_functional_softmax_0" in names:
        return ["nn_functional_softmax_0"]
    if depth > 0:
        for name in names:
            if "eager" in name.lower() or "attention" in name.lower():
                inner = _softmax_path(getattr(op.source, name), depth - 1)
                if inner:
                    return [name, *inner]
    return []


def _pin_eager_attention(hf: nn.Module, attention: nn.Module) -> None:
    """Give the model its own name for its family's eager attention function, taken now.

    Attention modules look the function up at every call (``ALL_ATTENTION_FUNCTIONS`` for the implementation
    name, else their module's ``eager_attention_forward``), and TransformerLens's Bridge replaces Gemma's
    module-level function when it loads a Gemma model; pinned, this model's ``.source`` paths stay valid
    whatever is loaded later in the process. The mask is the eager one (additive, float)."""
    import sys

    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    function = sys.modules[type(attention).__module__].eager_attention_forward
    name = f"interp_eager_{id(function):x}"
    AttentionInterface.register(name, function)
    AttentionMaskInterface.register(name, eager_mask)
    main: Any = hf.config
    for config in (main, getattr(main, "text_config", None)):
        if config is not None:
            config._attn_implementation = name


def _static_softmax_path(hf: nn.Module) -> str:
    """The softmax's path inside the eager attention function, read from the function's source (nnsight names a
    call ``nn.functional.softmax(…)`` ``nn_functional_softmax_0``)."""
    import inspect

    from transformers import AttentionInterface

    config: Any = hf.config
    function = AttentionInterface._global_mapping.get(str(config._attn_implementation))
    if function is None or "nn.functional.softmax(" not in inspect.getsource(function):
        raise UnknownModelError(f"the nnsight backend found no softmax in the eager attention of {type(hf).__name__}")
    return "nn_functional_softmax_0"


def _op_names(listing: str) -> tuple[str, ...]:
    """The operation names in nnsight's listing of a module's ``forward`` (``print(envoy.source)``: one
    ``name -> line`` row per call, ``attention_interface_1`` …)."""
    return tuple(re.findall(r"^\s*(\w+)\s+->", listing, flags=re.MULTILINE))


# ----------------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------------
def build(source: Any, *, dtype: torch.dtype, device: str, processing: dict[str, bool], placement: dict[str, Any],
          started: float, remote: Remote | None = None) -> NNsightBackend:
    """The nnsight backend for a :class:`~interp.models.sources.ModelSource`; with ``remote``, a model whose
    passes run on NDIF (built on the meta device here: no weights are loaded)."""
    from nnsight import LanguageModel

    if source.is_encoder:
        raise UnknownModelError(f"{source.name} is an encoder; the nnsight backend runs decoder models: "
                                "use --backend bridge or hooked")
    lm = None if remote is None else _remote_model(source, remote)
    hf = source.build_hf(dtype, placement) if lm is None else lm._module
    layout = _layout(hf)
    n_params = int(sum(p.numel() for p in hf.parameters()))
    hf.set_attn_implementation("eager")  # patterns and scores exist on the eager path only
    _pin_eager_attention(hf, _module(_module(hf, layout.blocks)[0], layout.attn))
    device_map = dict(getattr(hf, "hf_device_map", None) or {})
    if not device_map and remote is None:
        hf = hf.to(device)
    if lm is None:
        lm = LanguageModel(hf, tokenizer=source.tokenizer)
    blocks = _module(hf, layout.blocks)
    attn0 = _module(blocks[0], layout.attn)
    facts = arch_facts(hf, n_layers=len(blocks), final_norm=_module(hf, layout.final_norm),
                       post_attn_norm=layout.post_attn is not None, qk_norm=hasattr(attn0, "q_norm"),
                       is_encoder=False, n_ctx=source.n_ctx)
    first_device = input_device(hf) if device_map else str(next(hf.parameters()).device)
    if remote is not None:
        first_device = "cpu"  # inputs are prepared here; the weights are on the server
    info = ModelInfo(
        name=source.name, source=source.kind, origin=source.origin, architecture=source.architecture,
        dtype=str(dtype).replace("torch.", ""), device=first_device, processing={k: False for k in processing},
        prepend_bos=True, n_params=n_params, n_layers=facts.n_layers, n_heads=facts.n_heads,
        n_kv_heads=facts.n_kv_heads, d_model=facts.d_model, d_head=facts.d_head, n_ctx=facts.n_ctx,
        is_encoder=False, backend="nnsight",
        placement={k: str(v) for k, v in device_map.items()} or ({"": first_device} if placement else {}),
        load_seconds=round(time.perf_counter() - started, 3),
        notes=(source.notes + "; " if source.notes else "") + "nnsight LanguageModel: weights unprocessed (raw Hugging Face coordinates)"
        + ("" if remote is None else f"; remote: every pass runs on NDIF ({remote.host}) as {remote.model_id}"),
    )
    return NNsightBackend(lm, hf, source.tokenizer, info, facts, layout, remote)


#: The hub checkpoints the bundled models were converted from (their names on a server).
_BUNDLED_HUB_IDS = {"gemma-3-270m": "google/gemma-3-270m", "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def _remote_model(source: Any, remote: Remote) -> Any:
    """nnsight's ``LanguageModel`` for the server's model: built from the configuration on the meta device (no
    weights are loaded here), keyed by its hub id (or folder) as nnsight keys remote requests."""
    from nnsight import LanguageModel

    model_id = source.tl_name if source.kind == "hub" else (str(source.folder) if source.folder else None)
    if model_id is None:
        raise OptionError(f"{source.name} is built in code, so no server has it: --remote takes a hub id (the "
                          "server's name for the model) or a Hugging Face folder")
    # A bundled model's weights are a dequantized GGUF here; the server's are the checkpoint it was made from.
    remote.model_id = (_BUNDLED_HUB_IDS.get(source.name) or source.tl_name or model_id) if source.kind == "bundled" \
        else model_id
    lm = LanguageModel(model_id, tokenizer=source.tokenizer, attn_implementation="eager")
    lm.repo_id = remote.model_id
    return lm
