"""Token attributions for one prediction: which input tokens does it depend on, by attention and by gradient?

Method (docs/analyses/explanation-agreement.md; Abnar & Zuidema 2020; Sundararajan et al. 2017; Captum 0.9):

* The explained quantity ``F`` is the target token's logit at the predicting position (the last token of a
  decoder prompt, the ``[MASK]`` of an encoder prompt), or the logit difference ``logit(a) − logit(b)``
  for a pair. The target defaults to the model's own top prediction.
* Attention-based scores of input token ``j`` (no gradients): ``attention_last`` — the last layer's
  head-mean attention row of the predicting position; ``attention_mean`` — the same row averaged over all
  layers; ``rollout`` — the predicting row of ``Ã_L ⋯ Ã_1`` with ``Ã_l = ½·mean_h A_l + ½·I`` (rows
  renormalised); ``flow`` — the maximum flow from token ``j`` at the input to the predicting position at
  the top of the layered graph whose capacities are ``Ã_l``'s entries (networkx, one max-flow per token);
  ``top_head`` — the attention row of the single most important head by the suite's own exact ablation
  scan (zero-ablating each head, the rise of the target's loss, or the fall of the logit difference).
* Feature attributions, by Captum on the token embeddings (the output of :attr:`Backend.embedding_hook`;
  position embeddings, token types and norms stay as they are): ``saliency`` — ``‖∂F/∂x_j‖₂``;
  ``gradient_x_input`` — ``Σ_d x_jd·∂F/∂x_jd``; ``integrated_gradients`` — Gauss–Legendre with ``steps``
  points, signed sum over the embedding dimensions, with the convergence delta
  ``Σ_j a_j − (F(x) − F(x'))`` per prompt; ``occlusion`` — ``F(x) − F(x with token j at the baseline)``;
  ``kernel_shap`` — Kernel SHAP with ``samples`` coalitions of whole tokens.
* The baseline ``x'`` puts the pad token's embedding at every scored token (:func:`baseline_embeddings`
  says why not zero); special tokens (BOS, ``[CLS]``,
  ``[SEP]``, ``[MASK]``, padding) keep their embedding and are not scored.

Examples:
    >>> import interp
    >>> from interp.attribution.token_attribution import token_attributions
    >>> lm = interp.load_model("tiny-gpt2")
    >>> explained = token_attributions(lm, ["The cat sat"], methods=("rollout", "integrated_gradients"))
    >>> sorted(explained.frame["method"].unique())
    ['integrated_gradients', 'rollout']
    >>> bool(abs(explained.convergence_delta[0]) < 0.05 * max(1.0, abs(explained.output_change[0])))
    True
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import OptionError, PromptError
from interp.models import LoadedModel, TokenBatch
from interp.results import tidy_frame

ATTENTION_METHODS: tuple[str, ...] = ("attention_last", "attention_mean", "rollout", "flow", "top_head")
FEATURE_METHODS: tuple[str, ...] = ("saliency", "gradient_x_input", "integrated_gradients", "occlusion", "kernel_shap")
#: Every method, in report order.
METHODS: tuple[str, ...] = ATTENTION_METHODS + FEATURE_METHODS
#: Methods whose token score has a sign (positive: the token supports the target).
SIGNED_METHODS: frozenset[str] = frozenset({"gradient_x_input", "integrated_gradients", "occlusion", "kernel_shap"})
#: Attention flow runs one max-flow per token; longer prompts make it slow (Abnar & Zuidema used ≤ 64).
MAX_FLOW_TOKENS = 64

#: A target: None (the model's top prediction), a token string or id, or a (target, contrast) pair of them.
Target = str | int | tuple[str | int, str | int] | None
#: A prompt: text (BOS added as the model does) or token ids (used as given, BOS included).
Prompt = str | Sequence[int]


@dataclass(frozen=True)
class TokenAttributions:
    """Every method's token scores for each prompt's prediction.

    ``scores[method][i]`` holds one value per position of prompt ``i`` (NaN on unscored special tokens).

    Attributes:
        tokens / token_ids: each prompt's tokens (special tokens included).
        scored: True at the positions that get a score (not BOS, ``[CLS]``, ``[SEP]``, ``[MASK]``).
        predict_positions: the position whose prediction is explained.
        targets / contrasts: the target token id and the contrast token id (None: no contrast).
        output: ``F(x)``; ``output_change``: ``F(x) − F(x')`` (x' the all-baseline input).
        convergence_delta: integrated gradients' ``Σ_j a_j − (F(x) − F(x'))`` per prompt (NaN when not run).
        top_head: the ``(layer, head)`` behind ``top_head`` (None when not run).
    """

    prompts: tuple[str, ...]
    tokens: tuple[tuple[str, ...], ...]
    token_ids: tuple[tuple[int, ...], ...]
    scored: tuple[tuple[bool, ...], ...]
    predict_positions: tuple[int, ...]
    targets: tuple[int, ...]
    contrasts: tuple[int | None, ...]
    target_text: tuple[str, ...]
    methods: tuple[str, ...]
    scores: dict[str, tuple[np.ndarray, ...]]
    output: np.ndarray
    output_change: np.ndarray
    convergence_delta: np.ndarray
    top_head: tuple[int, int] | None
    seconds: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def values(self, method: str, prompt: int) -> np.ndarray:
        """The scores of ``method`` on prompt ``prompt``'s scored positions, in position order."""
        if method not in self.scores:
            raise OptionError(f"method {method!r} was not run: this result has {', '.join(self.methods)}")
        return self.scores[method][prompt][np.asarray(self.scored[prompt])]

    def scored_positions(self, prompt: int) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.scored[prompt]))

    @property
    def frame(self) -> pd.DataFrame:
        """Tidy rows: ``prompt, position, token, method, value`` (metric ``attribution``; ``layer``/``head``
        filled for ``top_head``)."""
        rows: list[dict[str, Any]] = []
        for method in self.methods:
            layer, head = self.top_head if method == "top_head" and self.top_head else (None, None)
            for i, values in enumerate(self.scores[method]):
                for position in self.scored_positions(i):
                    rows.append(dict(layer=layer, head=head, position=int(position), token=self.tokens[i][position],
                                     metric="attribution", value=float(values[position]), prompt=i, method=method))
        frame = tidy_frame(rows, extra_columns=("prompt", "method"))
        frame["prompt"] = frame["prompt"].astype("Int64")
        frame["method"] = frame["method"].astype("string")
        return frame


# ----------------------------------------------------------------------------------------------------
# Inputs: prompts, predicting positions, targets
# ----------------------------------------------------------------------------------------------------
def check_methods(methods: Sequence[str] | None) -> tuple[str, ...]:
    """The methods asked for, validated (default: all of :data:`METHODS`)."""
    if methods is None:
        return METHODS
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    chosen = tuple(dict.fromkeys(methods))
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        raise OptionError(f"unknown attribution method(s) {', '.join(map(repr, unknown)) or '(none)'}: "
                          f"choose from {', '.join(METHODS)}")
    return chosen


def single_token_id(lm: LoadedModel, text: str | int) -> int:
    """The id of ``text`` when it is exactly one token of ``lm``'s vocabulary (or a valid id), else a
    :class:`PromptError`."""
    if isinstance(text, int) and not isinstance(text, bool):
        if not 0 <= text < lm.d_vocab:
            raise PromptError(f"the target id {text} is outside {lm.name}'s vocabulary (0..{lm.d_vocab - 1})")
        return int(text)
    if not isinstance(text, str) or text == "":
        raise PromptError(f"a target must be a non-empty token string, got {text!r}")
    # no special tokens: an encoder's encode() wraps any text in [CLS] … [SEP]
    ids = list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    unk = getattr(lm.tokenizer, "unk_token_id", None)
    if len(ids) != 1:
        raise PromptError(f"the target {text!r} is {len(ids)} tokens for {lm.name}; a target must be exactly one "
                          "token (try a leading space or a shorter word)")
    if unk is not None and ids[0] == unk and text != getattr(lm.tokenizer, "unk_token", None):
        raise PromptError(f"the target {text!r} is not in {lm.name}'s vocabulary (it encodes to the unknown token)")
    return int(ids[0])


def _special_ids(lm: LoadedModel) -> set[int]:
    ids = set(getattr(lm.tokenizer, "all_special_ids", []) or [])
    for token_id in (lm.bos_token_id, lm.pad_token_id):
        if token_id is not None:
            ids.add(int(token_id))
    return ids


def _predict_position(lm: LoadedModel, ids: Sequence[int], prompt: str) -> int:
    if not lm.is_encoder:
        return len(ids) - 1
    mask_id = getattr(lm.tokenizer, "mask_token_id", None)
    if mask_id is None:
        raise PromptError(f"{lm.name} is an encoder whose tokenizer has no mask token: there is no masked-token "
                          "prediction to explain (use a masked-language model such as minilm-l6, or a decoder)")
    hits = [i for i, t in enumerate(ids) if t == mask_id]
    if len(hits) != 1:
        mask = getattr(lm.tokenizer, "mask_token", "[MASK]")
        raise PromptError(f"{lm.name} is an encoder: it predicts a masked token, not the next one; put exactly one "
                          f"{mask} in each prompt ({prompt[:40]!r} has {len(hits)})")
    return hits[0]


# ----------------------------------------------------------------------------------------------------
# The explained quantity F, with the token embeddings as the input
# ----------------------------------------------------------------------------------------------------
def target_score(
    lm: LoadedModel,
    embeddings: Float[Tensor, "row pos d_model"],
    tokens: Int[Tensor, "row pos"],
    mask: Int[Tensor, "row pos"],
    positions: Int[Tensor, " row"],
    targets: Int[Tensor, " row"],
    contrasts: Int[Tensor, " row"],
    *,
    probability: bool = False,
) -> Float[Tensor, " row"]:
    """``F`` per row with the token embeddings replaced by ``embeddings`` (differentiable in them).

    ``contrasts`` holds −1 where there is no contrast token. ``probability=True`` gives ``p(target)`` at the
    predicting position instead (a softmax over the whole vocabulary; for the faithfulness curves).
    """
    batch = TokenBatch(tokens, mask, mask.sum(-1))

    def replace(activation: Tensor, hook: Any) -> Tensor:
        return embeddings.to(activation.dtype)

    hooks = [(lm.embedding_hook, replace)]
    rows = torch.arange(len(tokens), device=positions.device)
    if lm.is_encoder:
        logits = lm.forward(batch, fwd_hooks=hooks)[rows, positions.to(lm.device)]
        if probability:
            return _wide(logits).softmax(-1)[rows, targets.to(logits.device)]
        score = logits[rows, targets.to(logits.device)]
        other = logits[rows, contrasts.clamp(min=0).to(logits.device)]
    else:
        final = lm.forward(batch, fwd_hooks=hooks, stop_at_layer=lm.n_layers)
        normed = lm.final_norm(final[rows, positions.to(final.device)])
        if probability:
            return _wide(lm.unembed(normed)).softmax(-1)[rows, targets.to(normed.device)]
        score = lm.logits_for(normed, targets)
        other = lm.logits_for(normed, contrasts.clamp(min=0))
    has_contrast = (contrasts >= 0).to(score.device)
    return _wide(score - torch.where(has_contrast, other, torch.zeros_like(other)))


def _wide(values: Tensor) -> Tensor:
    """At least float32 (half-precision logits lose the small differences the methods measure)."""
    return values.to(torch.promote_types(values.dtype, torch.float32))


@dataclass(frozen=True)
class _Inputs:
    """The padded prompts and everything ``F`` needs, one row per prompt."""

    tokens: Tensor
    mask: Tensor
    positions: Tensor
    targets: Tensor
    contrasts: Tensor
    embeddings: Tensor
    baseline: Tensor
    scored: Tensor  # [batch, pos] bool

    def args(self, rows: slice | None = None) -> tuple[Tensor, ...]:
        pick = rows if rows is not None else slice(None)
        return (self.tokens[pick], self.mask[pick], self.positions[pick], self.targets[pick], self.contrasts[pick])


def input_embeddings(lm: LoadedModel, batch: TokenBatch) -> Float[Tensor, "batch pos d_model"]:
    """The token embeddings of ``batch`` (the output of :attr:`Backend.embedding_hook`), on the CPU, in
    float32 for half-precision models and in the model's dtype otherwise."""
    captured = lm.capture(batch, [lm.embedding_hook])[lm.embedding_hook].cpu()
    # cloned: captured activations are inference tensors, which autograd refuses
    return (captured.float() if captured.dtype in (torch.float16, torch.bfloat16) else captured).clone()


def baseline_embeddings(lm: LoadedModel, batch: TokenBatch, scored: Tensor) -> Float[Tensor, "batch pos d_model"]:
    """The baseline input: every scored token replaced by the pad token, special tokens kept.

    Not the zero embedding: in a model whose embeddings go straight into an RMSNorm (Gemma, Llama) the
    normalised input is the same for every ``α·x`` with ``α > 0`` and jumps at ``α = 0``, so integrated
    gradients from zero miss that jump (on gemma-3-270m the delta stayed near 0.5 logits from 16 to 256
    steps); the pad token is a real input on the same scale.
    """
    tokens = torch.where(scored, torch.full_like(batch.tokens, lm.pad_token_id), batch.tokens)
    return input_embeddings(lm, TokenBatch(tokens, batch.attention_mask, batch.lengths))


def _forward_fn(lm: LoadedModel) -> Callable[..., Tensor]:
    def forward(embeddings: Tensor, tokens: Tensor, mask: Tensor, positions: Tensor, targets: Tensor,
                contrasts: Tensor) -> Tensor:
        return target_score(lm, embeddings, tokens, mask, positions, targets, contrasts)

    return forward


# ----------------------------------------------------------------------------------------------------
# Attention-based scores
# ----------------------------------------------------------------------------------------------------
def rollout_matrices(patterns: Float[Tensor, "layer head pos pos"]) -> Float[Tensor, "layer pos pos"]:
    """``Ã_l = ½·mean_h A_l + ½·I`` with rows renormalised (Abnar & Zuidema's residual-aware attention)."""
    mean = patterns.float().mean(1)
    eye = torch.eye(mean.shape[-1], dtype=mean.dtype).expand_as(mean)
    mixed = 0.5 * mean + 0.5 * eye
    return mixed / mixed.sum(-1, keepdim=True)


def attention_rollout(patterns: Float[Tensor, "layer head pos pos"]) -> Float[Tensor, "pos pos"]:
    """``R = Ã_L ⋯ Ã_1``: row ``i`` is how much of position ``i``'s top-layer state comes from each input."""
    mixed = rollout_matrices(patterns)
    result = mixed[0]
    for layer in range(1, mixed.shape[0]):
        result = mixed[layer] @ result
    return result


def attention_flow(patterns: Float[Tensor, "layer head pos pos"], position: int) -> np.ndarray:
    """Max-flow from every input token to ``position`` at the top layer, capacities ``Ã_l`` (networkx)."""
    import networkx as nx

    mixed = rollout_matrices(patterns).numpy()
    n_layers, n_pos, _ = mixed.shape
    graph = nx.DiGraph()
    for layer in range(n_layers):
        for i in range(n_pos):
            for j in range(n_pos):
                if mixed[layer, i, j] > 0:
                    graph.add_edge((layer, j), (layer + 1, i), capacity=float(mixed[layer, i, j]))
    flows = np.zeros(n_pos)
    for j in range(n_pos):
        if graph.has_node((0, j)) and graph.has_node((n_layers, position)):
            flows[j] = nx.maximum_flow_value(graph, (0, j), (n_layers, position))
    return flows


def _attention_scores(lm: LoadedModel, inputs: _Inputs, methods: Sequence[str], top_head: tuple[int, int] | None,
                      lengths: Sequence[int]) -> dict[str, list[np.ndarray]]:
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(lm.n_layers)]
    out: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    seen = lm.capture(TokenBatch(inputs.tokens, inputs.mask, inputs.mask.sum(-1)), names)
    stacked = torch.stack([seen[n].float().cpu() for n in names], dim=1)  # [batch, layer, head, q, k]
    for i, n in enumerate(lengths):
        patterns = stacked[i, :, :, :n, :n]
        p = int(inputs.positions[i])
        for method in methods:
            if method == "attention_last":
                row = patterns[-1].mean(0)[p]
            elif method == "attention_mean":
                row = patterns.mean(1)[:, p].mean(0)
            elif method == "rollout":
                row = attention_rollout(patterns)[p]
            elif method == "flow":
                row = torch.from_numpy(attention_flow(patterns, p))
            else:  # top_head
                assert top_head is not None
                row = patterns[top_head[0], top_head[1], p]
            out[method].append(row.double().numpy())
    return out


def most_important_head(lm: LoadedModel, inputs: _Inputs, lengths: Sequence[int]) -> tuple[int, int]:
    """The head whose zero-ablation hurts the explained prediction most (the suite's exact ablation scan):
    the largest fall of the logit difference when every prompt has a contrast, else the largest rise of the
    target's loss."""
    from interp.attribution.ablation_scan import ablation_scan, naive_ablation_scan
    from interp.tasks import Task, TaskExample

    has_pair = bool((inputs.contrasts >= 0).all())
    examples = []
    for i, n in enumerate(lengths):
        p, target = int(inputs.positions[i]), int(inputs.targets[i])
        contrast = int(inputs.contrasts[i]) if has_pair else None
        examples.append(TaskExample(tokens=tuple(int(t) for t in inputs.tokens[i, :n]), targets=((p, target),),
                                    answer_position=p, correct=target if has_pair else None, incorrect=contrast))
    metric = "logit_diff" if has_pair else "loss"
    task = Task("explained predictions", tuple(examples))
    # the fast scan resumes through the decoder's unembedding; an encoder's MLM head needs full passes
    scan = (naive_ablation_scan if lm.is_encoder else ablation_scan)(lm, task, mode="zero", metrics=(metric,))
    importance = torch.nan_to_num(scan.importance(metric), nan=-float("inf"))
    flat = int(importance.flatten().argmax())
    return flat // lm.n_heads, flat % lm.n_heads


# ----------------------------------------------------------------------------------------------------
# Feature attributions (Captum)
# ----------------------------------------------------------------------------------------------------
def _feature_scores(lm: LoadedModel, inputs: _Inputs, methods: Sequence[str], *, steps: int, samples: int,
                    max_rows: int, seed: int, timings: dict[str, float]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    from captum.attr import InputXGradient, IntegratedGradients, KernelShap, Occlusion, Saliency

    forward = _forward_fn(lm)
    x, baseline, args = inputs.embeddings, inputs.baseline, inputs.args()
    n_rows, n_pos, d_model = x.shape
    out: dict[str, np.ndarray] = {}
    delta = np.full(n_rows, np.nan)
    with torch.enable_grad(), warnings.catch_warnings():
        # Captum warns that the embeddings did not require gradients yet; it switches them on itself
        warnings.filterwarnings("ignore", message="Input Tensor .* did not already require gradients")
        for method in methods:
            started = time.perf_counter()
            if method == "saliency":
                grads = Saliency(forward).attribute(x, additional_forward_args=args, abs=False)
                out[method] = grads.norm(dim=-1).detach().double().numpy()
            elif method == "gradient_x_input":
                attr = InputXGradient(forward).attribute(x, additional_forward_args=args)
                out[method] = attr.sum(-1).detach().double().numpy()
            elif method == "integrated_gradients":
                attr, conv = IntegratedGradients(forward).attribute(
                    x, baselines=baseline, additional_forward_args=args, n_steps=steps, method="gausslegendre",
                    internal_batch_size=max(1, max_rows // max(1, n_rows)) * n_rows, return_convergence_delta=True)
                out[method] = attr.sum(-1).detach().double().numpy()
                delta = conv.detach().double().numpy()
            elif method == "occlusion":
                with torch.no_grad():
                    attr = Occlusion(forward).attribute(
                        x, sliding_window_shapes=(1, d_model), strides=(1, d_model), baselines=baseline,
                        additional_forward_args=args, perturbations_per_eval=max(1, max_rows // max(1, n_rows)))
                out[method] = attr.mean(-1).double().numpy()
            elif method == "kernel_shap":
                values = np.zeros((n_rows, n_pos))
                positions = torch.arange(n_pos).view(1, n_pos, 1).expand(1, n_pos, d_model)
                for i in range(n_rows):
                    torch.manual_seed(seed + i)
                    with torch.no_grad():
                        attr = KernelShap(forward).attribute(
                            x[i:i + 1], baselines=baseline[i:i + 1], additional_forward_args=inputs.args(slice(i, i + 1)),
                            feature_mask=positions, n_samples=samples, perturbations_per_eval=min(samples, max_rows))
                    values[i] = attr[0, :, 0].double().numpy()
                out[method] = values
            timings[method] = time.perf_counter() - started
    return out, delta


# ----------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------
def token_attributions(
    lm: LoadedModel,
    prompts: Sequence[Prompt] | str,
    targets: Sequence[Target] | Target = None,
    *,
    methods: Sequence[str] | str | None = None,
    steps: int = 32,
    samples: int = 128,
    top_head: tuple[int, int] | None = None,
    max_rows: int = 64,
    seed: int = 0,
) -> TokenAttributions:
    """Score every input token of each prompt's prediction by each method (see the module docstring).

    Args:
        prompts: decoder prompts (the next token is explained) or encoder prompts with one ``[MASK]``; text,
            or token ids used as given.
        targets: per prompt (a list) or one for all: None for the model's top prediction, a token string or
            id, or a pair ``(target, contrast)`` for the logit difference.
        methods: names from :data:`METHODS` (default all).
        steps: integrated-gradients points (Gauss–Legendre); samples: Kernel SHAP coalitions.
        top_head: the head used by ``top_head`` (default: the most important by the exact ablation scan).
        max_rows: rows per forward pass of the batched methods (bounds memory).

    Examples:
        >>> import interp
        >>> lm = interp.load_model("tiny-llama")
        >>> result = token_attributions(lm, ["ab", "abc"], targets=("c", "d"), methods=["occlusion"])
        >>> result.frame.groupby("prompt").size().tolist()       # one row per non-BOS token
        [2, 3]
    """
    chosen = check_methods(methods)
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts or any((p.strip() == "") if isinstance(p, str) else len(p) == 0 for p in prompts):
        raise PromptError("give at least one non-empty prompt (an empty prompt has no tokens to explain)")
    if not 1 <= steps <= 1024:
        raise OptionError(f"steps must be between 1 and 1024, got {steps}")
    if not 4 <= samples <= 100_000:
        raise OptionError(f"samples must be between 4 and 100000, got {samples}")
    per_prompt: list[Any] = list(targets) if isinstance(targets, list) else [targets] * len(prompts)
    if len(per_prompt) != len(prompts):
        raise OptionError(f"give one target per prompt: {len(prompts)} prompts, {len(per_prompt)} targets")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    rows = [lm.encode(p) if isinstance(p, str) else [int(t) for t in p] for p in prompts]
    texts = [p if isinstance(p, str) else lm.decode(list(p), skip_special_tokens=False) for p in prompts]
    lengths = [len(r) for r in rows]
    if "flow" in chosen and max(lengths) > MAX_FLOW_TOKENS:
        raise OptionError(f"attention flow is limited to {MAX_FLOW_TOKENS} tokens (one max-flow per token); the "
                          f"longest prompt has {max(lengths)}: shorten it or leave out 'flow'")
    positions = [_predict_position(lm, r, p) for r, p in zip(rows, texts, strict=True)]
    batch = lm.pad(rows)
    special = _special_ids(lm)
    scored = torch.zeros(batch.tokens.shape, dtype=torch.bool)
    for i, r in enumerate(rows):
        for j, t in enumerate(r):
            scored[i, j] = t not in special
        if not bool(scored[i].any()):
            raise PromptError(f"prompt {i} ({texts[i][:40]!r}) has no ordinary tokens to score")

    embedding = input_embeddings(lm, batch)
    baseline = baseline_embeddings(lm, batch, scored)
    with torch.no_grad():
        logits_args = (batch.tokens, batch.attention_mask, torch.tensor(positions))
        target_ids, contrast_ids = [], []
        top = None
        for i, target in enumerate(per_prompt):
            if target is None:
                if top is None:
                    top = _top_predictions(lm, *logits_args)
                target_ids.append(int(top[i]))
                contrast_ids.append(-1)
            elif isinstance(target, tuple | list):
                if len(target) != 2:
                    raise PromptError(f"a target pair must be (target, contrast), got {target!r}")
                target_ids.append(single_token_id(lm, target[0]))
                contrast_ids.append(single_token_id(lm, target[1]))
            elif isinstance(target, str | int):
                target_ids.append(single_token_id(lm, target))
                contrast_ids.append(-1)
            else:
                raise PromptError(f"a target must be None, a token string or a (target, contrast) pair, got {target!r}")
    inputs = _Inputs(batch.tokens, batch.attention_mask, torch.tensor(positions), torch.tensor(target_ids),
                     torch.tensor(contrast_ids), embedding, baseline, scored)
    with torch.no_grad():
        output = target_score(lm, embedding, *inputs.args()).double().numpy()
        at_baseline = target_score(lm, baseline, *inputs.args()).double().numpy()
    timings["setup"] = time.perf_counter() - started

    scores: dict[str, list[np.ndarray]] = {}
    attention = [m for m in chosen if m in ATTENTION_METHODS]
    if "top_head" in attention and top_head is None:
        started = time.perf_counter()
        top_head = most_important_head(lm, inputs, lengths)
        timings["top_head_scan"] = time.perf_counter() - started
    if top_head is not None and not (0 <= top_head[0] < lm.n_layers and 0 <= top_head[1] < lm.n_heads):
        raise OptionError(f"top_head must be (layer, head) within {lm.n_layers} layers × {lm.n_heads} heads, "
                          f"got {top_head}")
    if attention:
        started = time.perf_counter()
        scores.update(_attention_scores(lm, inputs, attention, top_head, lengths))
        timings["attention"] = time.perf_counter() - started
    feature = [m for m in chosen if m in FEATURE_METHODS]
    delta = np.full(len(rows), np.nan)
    if feature:
        features, delta = _feature_scores(lm, inputs, feature, steps=steps, samples=samples, max_rows=max_rows,
                                          seed=seed, timings=timings)
        for method, values in features.items():
            scores[method] = [values[i, :n] for i, n in enumerate(lengths)]
    for values in scores.values():  # unscored tokens carry NaN, so no method can rank them
        for i, row in enumerate(values):
            row[~scored[i, :lengths[i]].numpy()] = np.nan
    return TokenAttributions(
        prompts=tuple(texts),
        tokens=tuple(tuple(lm.token_strings(r)) for r in rows),
        token_ids=tuple(tuple(int(t) for t in r) for r in rows),
        scored=tuple(tuple(bool(v) for v in scored[i, :n]) for i, n in enumerate(lengths)),
        predict_positions=tuple(positions), targets=tuple(target_ids),
        contrasts=tuple(c if c >= 0 else None for c in contrast_ids),
        target_text=tuple(lm.token_strings([t])[0] for t in target_ids),
        methods=chosen, scores={m: tuple(scores[m]) for m in chosen},
        output=output, output_change=output - at_baseline, convergence_delta=delta, top_head=top_head,
        seconds={k: round(v, 3) for k, v in timings.items()},
        params=dict(methods=list(chosen), steps=steps, steps_rule="gausslegendre", samples=samples,
                    baseline="pad-token embedding at scored positions; special tokens kept",
                    token_score={"saliency": "L2 norm over embedding dims", "occlusion": "F(x) − F(x without j)",
                                 "kernel_shap": "Shapley value of the whole token",
                                 "other gradient methods": "signed sum over embedding dims"},
                    explained="logit of the target (minus the contrast's logit for a pair)",
                    embedding_hook=lm.embedding_hook, max_rows=max_rows, seed=seed,
                    top_head_rule="exact zero-ablation scan" if "top_head" in chosen else None),
    )


def _top_predictions(lm: LoadedModel, tokens: Tensor, mask: Tensor, positions: Tensor) -> Tensor:
    """The model's top prediction at each predicting position (argmax over the whole vocabulary)."""
    batch = TokenBatch(tokens, mask, mask.sum(-1))
    rows = torch.arange(len(tokens))
    if lm.is_encoder:
        return lm.forward(batch)[rows, positions].argmax(-1).cpu()
    final = lm.forward(batch, stop_at_layer=lm.n_layers)
    return lm.unembed(lm.final_norm(final[rows, positions])).argmax(-1).cpu()
