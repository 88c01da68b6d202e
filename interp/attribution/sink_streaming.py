"""StreamingLLM's test of attention sinks: perplexity of a long text when the first tokens leave the window.

Method (Xiao et al., ICLR 2024, §3.1 and Tables 1–2; docs/analyses/sink-streaming.md):

The text (``T`` tokens, BOS first) is scored token by token: the query at position ``t`` predicts token
``t + 1``. Only queries ``t ≥ w`` are scored — before that every condition sees every earlier key, so
the first ``w`` queries would only dilute the differences. Each condition gives each query a budget of
``w`` keys:

* ``full``: every earlier key (the model as it is);
* ``window``: the ``w`` most recent keys ``(t − w, t]``;
* ``sinks`` with ``k``: the first ``k`` tokens (BOS included) plus the ``w − k`` most recent keys;
* controls with ``k`` kept tokens that are *not* initial, plus the ``w − k`` most recent keys:
  ``newline`` (the first tokens made of line breaks), ``period`` (the first tokens ending a sentence with
  ".") and ``random`` (seeded random positions), all taken at positions ``≥ max(ks, control_k)`` and
  ``< w`` (so they are never initial tokens and are in the past of every scored query).

Perplexity is ``exp`` of the mean next-token loss over the scored queries. Two positional schemes:

* ``masked`` — original positions, masked scores: one forward of the whole text with a hook on every
  layer's ``blocks.L.attn.hook_attn_scores`` that sets the scores of keys outside the budget to ``−inf``.
  Every token keeps its position, and every token's keys and values are computed under the same policy
  (as they are in a streaming KV cache). Against StreamingLLM's cache the one difference is where the kept
  keys sit: StreamingLLM numbers positions by cache slot, so a query at slot ``w − 1`` sees kept key ``j``
  at relative distance ``w − 1 − j``; here it sees it at ``t − j`` (window keys are at the same relative
  distance in both). The hook goes through the backend protocol, so both backends run it.
* ``reassigned`` — fresh positions, recomputed: for an evenly spaced sample of scored queries, a forward
  of the compressed sequence (the kept tokens, then the window, in text order) with positions
  ``0 … n − 1``; its last position predicts ``t + 1``. All states are recomputed from the compressed
  context, so this is StreamingLLM's "sliding window with re-computation" baseline when nothing is kept
  (which they find good but slow) and, with the ``newline`` control, their "4 '\\n' tokens at the initial
  positions" row (Table 1: 5.60). It is not their cache scheme: there, kept and window keys keep the
  states computed when their tokens were read, and only the rotary positions move.

Models with their own sliding-window layers (Gemma 3: ``lm.facts.sliding_layers``, window
``lm.facts.sliding_window``) keep them: the hook can only remove keys, so on those layers the budget is
intersected with the model's own window. With ``w`` below the model's window the experiment changes
every layer; with ``w`` at or above it only the global layers change.

Examples:
    >>> import interp
    >>> from interp.attribution.sink_streaming import sink_streaming
    >>> lm = interp.load_model("tiny-gpt2")
    >>> result = sink_streaming(lm, window=16, ks=(1, 4), max_tokens=96, queries=4, progress=False)
    >>> [c.condition for c in result.conditions if c.scheme == "masked"][:3]
    ['full', 'window', 'sinks']
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp.data import shipped_path
from interp.errors import OptionError
from interp.models import LoadedModel
from interp.results import tidy_frame

#: Shipped texts: name → (description, sha256 of the UTF-8 text).
TEXTS: dict[str, tuple[str, str]] = {
    "story": ("an original short story written for the suite (interp/data/streaming_story.txt)",
              "d9247c9793c33c7456fb9ff475db243d8ee01ab45998b827d9b2e48d7093b316"),
    "python-reference": ("three topics of the Python 3.11.7 language reference (pydoc_data.topics: objects, "
                         "execmodel, import; PSF licence), extracted from the installed standard library",
                         "20c3ebf0302e916ea1236626bacdf7a4030ce07c67f483e8b97936adcacb0bb2"),
}
CONTROLS: tuple[str, ...] = ("newline", "period", "random")
SCHEMES: tuple[str, ...] = ("masked", "reassigned")
_PYDOC_TOPICS = ("objects", "execmodel", "import")


def _load_text(name: str) -> str:
    if name not in TEXTS:
        raise OptionError(f"unknown text {name!r}: choose one of {', '.join(TEXTS)}")
    if name == "story":
        text = shipped_path("streaming_story.txt").read_text(encoding="utf-8")
    else:
        from pydoc_data.topics import topics

        text = "\n\n".join(topics[key].strip() for key in _PYDOC_TOPICS) + "\n"
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if digest != TEXTS[name][1]:
        raise OptionError(f"text {name!r} differs from the one the suite was checked with (sha256 {digest[:12]}…, "
                          f"expected {TEXTS[name][1][:12]}…): use --text story or give the text with --prompts")
    return text


@dataclass(frozen=True)
class StreamingCondition:
    """One key budget under one positional scheme, with the loss of every scored query.

    ``queries`` are query positions ``t`` (each predicts token ``t + 1``); ``nll`` the matching losses.
    """

    scheme: str
    condition: str
    k: int
    kept: tuple[int, ...]
    kept_tokens: tuple[str, ...]
    queries: tuple[int, ...] = field(repr=False)
    nll: tuple[float, ...] = field(repr=False)

    @property
    def mean_nll(self) -> float:
        return float(np.mean(self.nll))

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll)

    def label(self, window: int) -> str:
        """Cache configuration as StreamingLLM writes it (``kept + recent``)."""
        if self.condition == "full":
            return "full attention"
        if self.condition == "window":
            return f"0 + {window} (window)"
        what = {"sinks": "initial", "newline": "'\\n'", "period": "'.'", "random": "random"}[self.condition]
        return f"{self.k} {what} + {window - self.k}"


@dataclass(frozen=True)
class SinkStreaming:
    """Everything the streaming test measured (see the module docstring)."""

    conditions: tuple[StreamingCondition, ...]
    window: int
    ks: tuple[int, ...]
    control_k: int
    n_tokens: int
    text: str
    text_sha256: str
    tokens: tuple[str, ...] = field(repr=False)
    sampled_queries: tuple[int, ...] = field(repr=False)
    sliding_window: int | None
    sliding_layers: tuple[int, ...]
    n_layers: int
    positional: str
    skipped: tuple[str, ...] = ()
    seconds: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)

    def condition(self, scheme: str, condition: str, k: int = 0) -> StreamingCondition:
        for entry in self.conditions:
            if (entry.scheme, entry.condition, entry.k) == (scheme, condition, k):
                return entry
        measured = sorted({(c.scheme, c.condition, c.k) for c in self.conditions})
        raise OptionError(f"({scheme}, {condition}, k={k}) was not measured: choose one of {measured}")

    def perplexity(self, scheme: str, condition: str, k: int = 0, *, sampled: bool = False) -> float:
        """Perplexity of one condition, over every scored query or (``sampled``) the reassigned sample."""
        entry = self.condition(scheme, condition, k)
        if not sampled or entry.scheme == "reassigned":
            return entry.perplexity
        keep = set(self.sampled_queries)
        return math.exp(float(np.mean([v for q, v in zip(entry.queries, entry.nll, strict=True) if q in keep])))

    def summary(self) -> pd.DataFrame:
        """One row per condition: cache configuration, kept tokens, perplexity per scheme."""
        rows = []
        masked = [c for c in self.conditions if c.scheme == "masked"]
        for entry in masked:
            reassigned = [c for c in self.conditions if c.scheme == "reassigned"
                          and (c.condition, c.k) == (entry.condition, entry.k)]
            rows.append({
                "cache (kept + recent)": entry.label(self.window),
                "condition": entry.condition, "k": entry.k,
                "kept positions": ",".join(map(str, entry.kept)),
                "kept tokens": " ".join(repr(t) for t in entry.kept_tokens),
                "ppl masked (all queries)": entry.perplexity,
                "ppl masked (sample)": self.perplexity("masked", entry.condition, entry.k, sampled=True)
                if self.sampled_queries else np.nan,
                "ppl reassigned (sample)": reassigned[0].perplexity if reassigned else np.nan,
            })
        return pd.DataFrame(rows)

    def to_frame(self) -> pd.DataFrame:
        """Tidy long-format rows (``layer, head, position, token, metric, value`` + extras).

        Extras: ``scheme``, ``condition``, ``k``, ``window``, ``queries`` (``all`` or ``sampled``),
        ``n_scored``, ``kept`` (positions, comma-separated). Metrics: ``perplexity`` and ``mean_nll`` per
        condition; ``token_nll`` per scored query (``position`` and ``token`` are the *predicted* token's);
        ``kept_token`` per kept token (``value`` is its rank among the kept ones).
        """
        rows: list[dict] = []
        keep = set(self.sampled_queries)
        for entry in self.conditions:
            base = dict(scheme=entry.scheme, condition=entry.condition, k=entry.k, window=self.window,
                        kept=",".join(map(str, entry.kept)))
            spans = [("all", list(entry.nll))]
            if entry.scheme == "masked" and keep:
                spans.append(("sampled", [v for q, v in zip(entry.queries, entry.nll, strict=True) if q in keep]))
            if entry.scheme == "reassigned":
                spans = [("sampled", list(entry.nll))]
            for span, values in spans:
                mean = float(np.mean(values))
                rows.append(dict(base, metric="perplexity", value=math.exp(mean), queries=span, n_scored=len(values)))
                rows.append(dict(base, metric="mean_nll", value=mean, queries=span, n_scored=len(values)))
            for query, value in zip(entry.queries, entry.nll, strict=True):
                rows.append(dict(base, metric="token_nll", position=query + 1, token=self.tokens[query + 1],
                                 value=value, queries="sampled" if entry.scheme == "reassigned" else "all"))
            for rank, (position, token) in enumerate(zip(entry.kept, entry.kept_tokens, strict=True)):
                rows.append(dict(base, metric="kept_token", position=position, token=token, value=rank))
        frame = tidy_frame(rows, extra_columns=("scheme", "condition", "k", "window", "queries", "n_scored", "kept"))
        for column in ("k", "window", "n_scored"):
            frame[column] = frame[column].astype("Int64")
        return frame


# ----------------------------------------------------------------------------------------------------
# Key budgets
# ----------------------------------------------------------------------------------------------------
def _allowed(n: int, window: int, kept: Sequence[int]) -> Tensor:
    """``[query, key]`` booleans: causal, and in the ``window − len(kept)`` most recent keys or kept."""
    t = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    keep = torch.zeros(n, dtype=torch.bool)
    keep[list(kept)] = True
    return (j <= t) & (((t - j) < (window - len(kept))) | keep[None, :])


def _keys(t: int, window: int, kept: Sequence[int]) -> list[int]:
    """The key positions query ``t`` keeps (the row ``t`` of :func:`_allowed`), in text order."""
    recent = window - len(kept)
    return sorted({j for j in kept if j <= t} | set(range(max(0, t - recent + 1), t + 1)))


def _controls(strings: Sequence[str], kind: str, count: int, first: int, window: int,
              rng: np.random.Generator) -> list[int]:
    """Positions of ``count`` non-initial tokens of one kind, in ``[first, window)`` (fewer if not found)."""
    span = range(first, min(window, len(strings)))
    if kind == "random":
        return sorted(int(p) for p in rng.choice(np.array(span), size=min(count, len(span)), replace=False))
    if kind == "newline":
        found = [p for p in span if "\n" in strings[p] and not strings[p].strip()]
    else:
        found = [p for p in span if strings[p].strip().endswith(".")]
    return found[:count]


# ----------------------------------------------------------------------------------------------------
# Forward passes
# ----------------------------------------------------------------------------------------------------
def _nll(lm: LoadedModel, final: Tensor, targets: Tensor, chunk: int = 256) -> list[float]:
    """Next-token losses of final residual rows ``final[i]`` for ``targets[i]`` (float32 log-softmax)."""
    out: list[float] = []
    for start in range(0, final.shape[0], chunk):
        logits = lm.resid_to_logits(final[start : start + chunk]).float()
        target = targets[start : start + chunk].to(logits.device)
        out += (-logits.log_softmax(-1).gather(-1, target[:, None])[:, 0]).double().cpu().tolist()
    return out


def _masked_nll(lm: LoadedModel, ids: list[int], allowed: Tensor | None, queries: Sequence[int]) -> list[float]:
    """Losses of ``queries`` in one forward of the whole text with disallowed keys' scores set to −inf."""
    hooks = []
    if allowed is not None:
        def mask_scores(scores: Tensor, hook: object) -> Tensor:
            keep = allowed.to(scores.device)
            return scores.masked_fill(~keep, float("-inf"))

        hooks = [(f"blocks.{layer}.attn.hook_attn_scores", mask_scores) for layer in range(lm.n_layers)]
    batch = lm.pad([ids])
    final = lm.forward(batch, fwd_hooks=hooks, stop_at_layer=lm.n_layers)[0]
    index = torch.tensor(list(queries))
    return _nll(lm, final[index.to(final.device)], torch.tensor(ids)[index + 1])


def _reassigned_nll(lm: LoadedModel, ids: list[int], window: int, kept: Sequence[int], queries: Sequence[int],
                    batch_size: int) -> list[float]:
    """Losses of ``queries``, each from a forward of its compressed sequence at fresh positions 0 … n−1."""
    out: list[float] = []
    for start in range(0, len(queries), batch_size):
        part = queries[start : start + batch_size]
        rows = [[ids[j] for j in _keys(t, window, kept)] for t in part]
        batch = lm.pad(rows)
        final = lm.forward(batch, stop_at_layer=lm.n_layers)
        last = final[torch.arange(len(rows)), (batch.lengths - 1).to(final.device)]
        out += _nll(lm, last, torch.tensor([ids[t + 1] for t in part]))
    return out


# ----------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------
def sink_streaming(
    lm: LoadedModel,
    text: str = "story",
    *,
    document: str | Sequence[int] | None = None,
    window: int = 64,
    ks: Sequence[int] = (1, 2, 4, 8),
    controls: Sequence[str] = CONTROLS,
    control_k: int = 4,
    max_tokens: int = 1024,
    queries: int = 32,
    seed: int = 0,
    batch_size: int = 8,
    progress: bool | None = None,
) -> SinkStreaming:
    """Perplexity of a long text under full attention, a sliding window, kept initial tokens and controls.

    Args:
        lm: a loaded decoder model.
        text: a shipped text (:data:`TEXTS`: ``story`` or ``python-reference``).
        document: the text itself instead (a string, or token ids with BOS), overriding ``text``.
        window: ``w``, keys each query may attend to (kept tokens included).
        ks: numbers of initial tokens kept (each ``1 ≤ k < w``).
        controls: non-initial kept tokens to compare with (:data:`CONTROLS`), ``control_k`` of each.
        max_tokens: the text is cut to this many tokens (BOS included); at least ``2w`` must remain.
        queries: scored queries sampled (evenly spaced) for the ``reassigned`` scheme; 0 skips it.
        seed: seeds the ``random`` control's positions.
        batch_size: compressed sequences per forward in the ``reassigned`` scheme.
    """
    if lm.is_encoder:
        raise OptionError(f"sink-streaming needs a decoder (causal) model; {lm.name} is an encoder")
    if window < 2:
        raise OptionError(f"window must be at least 2, got {window}")
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks:
        raise OptionError("give at least one number of kept initial tokens (ks)")
    if ks[0] < 1 or ks[-1] >= window:
        raise OptionError(f"each kept-token count k must satisfy 1 ≤ k < window={window}, got {list(ks)}")
    controls = tuple(controls)
    unknown = [c for c in controls if c not in CONTROLS]
    if unknown:
        raise OptionError(f"unknown control(s) {unknown}: choose from {', '.join(CONTROLS)}")
    if controls and not 1 <= control_k < window:
        raise OptionError(f"control_k must satisfy 1 ≤ control_k < window={window}, got {control_k}")
    first = max(ks[-1], control_k if controls else 0)
    if "random" in controls and window - first < control_k:
        raise OptionError(f"the random control needs {control_k} positions in [{first}, {window}): "
                          "raise the window or lower control_k")
    if queries < 0:
        raise OptionError(f"queries must be non-negative, got {queries}")
    if batch_size < 1:
        raise OptionError(f"batch size must be at least 1, got {batch_size}")
    if max_tokens < 2 * window or max_tokens > lm.info.n_ctx:
        raise OptionError(f"max_tokens must be between 2·window={2 * window} and the context window "
                          f"{lm.info.n_ctx}, got {max_tokens}")
    if document is None:
        source, body = text, _load_text(text)
        ids = lm.encode(body)
    elif isinstance(document, str):
        source, body = "document", document
        ids = lm.encode(body)
    else:
        source, body = "token ids", " ".join(map(str, document))
        ids = [int(i) for i in document]
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    ids = ids[:max_tokens]
    n = len(ids)
    if n < 2 * window:
        raise OptionError(f"the text has {n} tokens but the test needs at least 2·window={2 * window}: "
                          "give a longer text or a smaller window")
    strings = tuple(lm.token_strings(ids))
    scored = list(range(window, n - 1))
    sampled = sorted({int(q) for q in np.linspace(window, n - 2, num=queries).round()}) if queries else []

    budgets: list[tuple[str, int, list[int]]] = [("full", 0, []), ("window", 0, [])]
    budgets += [("sinks", k, list(range(k))) for k in ks]
    skipped: list[str] = []
    rng = np.random.default_rng(seed)
    for kind in controls:
        kept = _controls(strings, kind, control_k, first, window, rng)
        if len(kept) < control_k:
            skipped.append(f"control {kind!r}: only {len(kept)} such token(s) at positions {first}–{window - 1}, "
                           f"{control_k} needed")
            continue
        budgets.append((kind, control_k, kept))

    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    conditions: list[StreamingCondition] = []
    seconds = {"masked": 0.0, "reassigned": 0.0}
    full_nll: list[float] = []
    with torch.inference_mode():
        for kind, k, kept in tqdm(budgets, desc="sink streaming", disable=not show, unit="condition"):
            kept_tokens = tuple(strings[p] for p in kept)
            started = time.perf_counter()
            allowed = None if kind == "full" else _allowed(n, window, kept)
            nll = _masked_nll(lm, ids, allowed, scored)
            seconds["masked"] += time.perf_counter() - started
            conditions.append(StreamingCondition("masked", kind, k, tuple(kept), kept_tokens, tuple(scored), tuple(nll)))
            if kind == "full":
                full_nll = nll
            if not sampled:
                continue
            started = time.perf_counter()
            if kind == "full":  # nothing is dropped, so nothing moves: the full pass's losses at the sample
                by_query = dict(zip(scored, full_nll, strict=True))
                sample_nll = [by_query[q] for q in sampled]
            else:
                sample_nll = _reassigned_nll(lm, ids, window, kept, sampled, batch_size)
            seconds["reassigned"] += time.perf_counter() - started
            conditions.append(StreamingCondition("reassigned", kind, k, tuple(kept), kept_tokens, tuple(sampled),
                                                 tuple(sample_nll)))
    conditions.sort(key=lambda c: SCHEMES.index(c.scheme))
    return SinkStreaming(
        conditions=tuple(conditions), window=window, ks=ks, control_k=control_k, n_tokens=n, text=source,
        text_sha256=digest, tokens=strings, sampled_queries=tuple(sampled),
        sliding_window=lm.facts.sliding_window, sliding_layers=tuple(lm.facts.sliding_layers),
        n_layers=lm.n_layers, positional=lm.facts.positional, skipped=tuple(skipped),
        seconds={k: round(v, 3) for k, v in seconds.items()},
        params=dict(text=source, window=window, ks=list(ks), controls=list(controls), control_k=control_k,
                    max_tokens=max_tokens, queries=queries, seed=seed, batch_size=batch_size),
    )
