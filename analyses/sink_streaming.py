"""``sink-streaming``: StreamingLLM's test that the attention sink matters (Xiao et al., ICLR 2024)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from interp import plots
from interp.attribution.sink_streaming import CONTROLS, TEXTS, SinkStreaming, sink_streaming
from interp.errors import OptionError
from interp.models import LoadedModel
from interp.registry import Analysis, register, signature_options
from interp.results import Result

NOTES = (
    "What is measured: the perplexity of one long, coherent text (by default an original short story shipped "
    "with the suite, see interp/data/README.md) when every query may attend to at most w keys. 'window' keeps "
    "the w most recent keys; 'k initial + (w−k)' also keeps the first k tokens (BOS first); the controls keep "
    "k non-initial tokens instead (the first line-break tokens, the first tokens ending in '.', or seeded "
    "random positions, all between max(ks) and w). Only queries at positions ≥ w are scored, because before "
    "that nothing is dropped in any condition.",
    "How to read the figure: perplexity (log scale) against the number k of kept initial tokens; k = 0 is the "
    "plain sliding window, the dashed lines are full attention on the same queries, the open markers are the "
    "controls at their k. StreamingLLM's finding is a large jump at k = 0 that one to four initial tokens "
    "remove almost entirely (Llama-2-13B on PG19, window 1024: 5158 → 5.40; Llama-2-7B with 1, 2, 4, 8 kept: "
    "11.88, 10.51, 9.59, 9.54), while non-initial tokens do not help. A model whose window perplexity is "
    "close to full attention does not depend on its sink for this text and window; a model whose controls "
    "restore as much as the initial tokens has no position-specific sink.",
    "Positional scheme 'masked' (original positions, masked scores): one forward of the whole text with a hook "
    "on every layer's blocks.L.attn.hook_attn_scores that sets the scores of dropped keys to −inf, on either "
    "backend. Each token keeps its original position and each token's keys and values are computed under the "
    "same budget, as in a streaming KV cache. StreamingLLM instead numbers positions by cache slot: the window "
    "keys sit at the same relative distance from the query in both, but a kept initial key j sits at distance "
    "w−1−j there and t−j here. The masking is checked against Hugging Face's own attention with the same key "
    "sets given as an explicit 4-D mask (unit and integration tests).",
    "Positional scheme 'reassigned' (fresh positions, recomputed): for an evenly spaced sample of scored "
    "queries, a forward of the compressed sequence (kept tokens, then the window) at positions 0…n−1. Every "
    "state is recomputed from the compressed context, so with nothing kept this is StreamingLLM's 'sliding "
    "window with re-computation' baseline (the first window token becomes position 0 and can act as a sink) "
    "and with the line-break control it is their '4 \"\\n\" + 1020' row (the line breaks sit at the initial "
    "positions). StreamingLLM's own cache (kept states reused, only rotary positions re-numbered) is not "
    "implemented: it needs each kept key rotated per query, i.e. the model's rotary embedding outside the "
    "backend protocol, which exposes none.",
    "Models with sliding-window layers (Gemma 3: local layers with their own window, global layers without): "
    "the hook can only remove keys, so on local layers the budget is intersected with the model's own window. "
    "With w below the model's local window every layer is affected; with w at or above it only the global "
    "layers are, and on local layers the 'kept' initial tokens stay dropped beyond the model's own window "
    "(so is BOS in full attention, once the text is longer than that window).",
)

REFERENCES = (
    "Xiao, Tian, Chen, Han & Lewis, Efficient Streaming Language Models with Attention Sinks (StreamingLLM), "
    "ICLR 2024: Table 1 (Llama-2-13B, first PG19 book, 0+1024: 5158.07, 4+1020: 5.40, 4\"\\n\"+1020: 5.60) "
    "and Table 2 (Llama-2-7B, 1/2/4/8 initial tokens: 11.88/10.51/9.59/9.54).",
    "Gu et al., When Attention Sink Emerges in Language Models: An Empirical View, ICLR 2025.",
)

#: StreamingLLM's numbers as (configuration, model and data, perplexity, condition, k, our closest scheme).
#: Their "\\n" tokens sit at the initial positions, which only the re-assigned scheme reproduces.
PAPER_ROWS = (
    ("0 + 1024 (window)", "Llama-2-13B, PG19 book 1", 5158.07, "window", 0, "masked"),
    ("4 initial + 1020", "Llama-2-13B, PG19 book 1", 5.40, "sinks", 4, "masked"),
    ("4 '\\n' + 1020", "Llama-2-13B, PG19 book 1", 5.60, "newline", 4, "reassigned"),
    ("1 initial + (w−1)", "Llama-2-7B, PG19", 11.88, "sinks", 1, "masked"),
    ("2 initial + (w−2)", "Llama-2-7B, PG19", 10.51, "sinks", 2, "masked"),
    ("4 initial + (w−4)", "Llama-2-7B, PG19", 9.59, "sinks", 4, "masked"),
    ("8 initial + (w−8)", "Llama-2-7B, PG19", 9.54, "sinks", 8, "masked"),
)


def _ints(text: str | Sequence[int], name: str) -> list[int]:
    if not isinstance(text, str):
        return [int(v) for v in text]
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise OptionError(f"{name} must be comma-separated integers, got {text!r}") from None


def _names(text: str | Sequence[str]) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()] if isinstance(text, str) else list(text)


def run(lm: LoadedModel, prompts: Sequence[str], *, batch_size: int = 8, progress: bool | None = None, seed: int = 0,
        window: int = 64, ks: str | Sequence[int] = "1,2,4,8", text: str = "story", max_tokens: int = 1024,
        controls: str | Sequence[str] = ",".join(CONTROLS), control_k: int = 4, queries: int = 32) -> Result:
    if prompts and text != "story":
        raise OptionError(f"give the text either with --prompts or with --text {text}, not both")
    document = "\n".join(prompts) if prompts else None
    scores = sink_streaming(lm, text, document=document, window=window, ks=_ints(ks, "ks"),
                            controls=_names(controls), control_k=control_k, max_tokens=max_tokens, queries=queries,
                            seed=seed, batch_size=batch_size, progress=progress)
    summary = scores.summary()
    figures = {
        "Perplexity against the number of kept initial tokens": _k_figure(scores),
        "Loss along the text (moving average)": _loss_figure(scores),
    }
    facts = pd.DataFrame({
        "fact": ["text", "tokens (BOS included)", "window w", "scored queries (masked)", "sampled queries (reassigned)",
                 "positional encoding", "model's own sliding window", "model's sliding layers",
                 "layers the budget changes"],
        "value": [scores.text, scores.n_tokens, scores.window, scores.n_tokens - 1 - scores.window,
                  len(scores.sampled_queries), scores.positional, str(scores.sliding_window),
                  _layers_text(scores.sliding_layers, scores.n_layers), _affected(scores)],
    })
    tables = {
        "Perplexity by cache configuration": summary.round(3),
        "Beside StreamingLLM's numbers": _paper_table(scores),
        "Text and model facts": facts,
    }
    if scores.skipped:
        tables["Controls left out"] = pd.DataFrame({"reason": list(scores.skipped)})
    notes = NOTES
    if scores.sliding_window is not None and scores.window >= scores.sliding_window:
        notes = notes + (f"Here w = {scores.window} ≥ the model's own window {scores.sliding_window}: only the "
                         f"global layers feel the budget.",)
    full = scores.perplexity("masked", "full")
    window_ppl = scores.perplexity("masked", "window")
    return Result(
        analysis="sink-streaming", frame=scores.to_frame(), figures=figures, tables=tables, notes=notes,
        references=REFERENCES,
        metadata={"parameters": scores.params,
                  "text": {"name": scores.text, "sha256": scores.text_sha256, "tokens": scores.n_tokens,
                           "description": TEXTS.get(scores.text, ("given by the caller", ""))[0]},
                  "model_windows": {"sliding_window": scores.sliding_window,
                                    "sliding_layers": list(scores.sliding_layers)},
                  "summary": {"ppl_full": round(full, 4), "ppl_window": round(window_ppl, 4),
                              **{f"ppl_sinks_{k}": round(scores.perplexity("masked", "sinks", k), 4)
                                 for k in scores.ks},
                              "skipped_controls": list(scores.skipped)},
                  "timings": scores.seconds},
    )


def _layers_text(layers: Sequence[int], n_layers: int) -> str:
    if not layers:
        return "none (every layer is global)"
    return f"{len(layers)} of {n_layers}: {', '.join(map(str, layers))}"


def _affected(scores: SinkStreaming) -> str:
    if scores.sliding_window is None or scores.window < scores.sliding_window:
        return f"all {scores.n_layers}"
    local = set(scores.sliding_layers)
    return ", ".join(str(layer) for layer in range(scores.n_layers) if layer not in local) + " (global only)"


def _paper_table(scores: SinkStreaming) -> pd.DataFrame:
    def ppl(scheme: str, condition: str, k: int) -> float:
        try:
            return round(scores.perplexity(scheme, condition, k), 3)
        except OptionError:  # not measured (a skipped control, a k not asked for, or no sample)
            return np.nan

    w = scores.window
    rows = [{"paper configuration": configuration, "paper model, data": where, "paper ppl": paper,
             f"here (w={w})": f"{k} + {w - k}" if k else f"0 + {w}",
             "ppl masked (all queries)": ppl("masked", condition, k),
             "ppl reassigned (sample)": ppl("reassigned", condition, k),
             "closest scheme to the paper's": scheme}
            for configuration, where, paper, condition, k, scheme in PAPER_ROWS]
    rows.append({"paper configuration": "full attention", "paper model, data": "—", "paper ppl": np.nan,
                 f"here (w={w})": "all keys", "ppl masked (all queries)": ppl("masked", "full", 0),
                 "ppl reassigned (sample)": ppl("reassigned", "full", 0), "closest scheme to the paper's": "—"})
    return pd.DataFrame(rows)


def _k_figure(scores: SinkStreaming) -> plots.go.Figure:
    figure = plots.go.Figure()
    xs = [0, *scores.ks]
    styles = {"masked": dict(dash="solid"), "reassigned": dict(dash="dot")}
    for scheme in ("masked", "reassigned"):
        if scheme == "reassigned" and not scores.sampled_queries:
            continue
        ys = [scores.perplexity(scheme, "window")] + [scores.perplexity(scheme, "sinks", k) for k in scores.ks]
        name = "original positions, masked" if scheme == "masked" else "re-assigned positions (sample)"
        figure.add_trace(plots.go.Scatter(x=xs, y=ys, mode="lines+markers", name=name, line=styles[scheme]))
        full = scores.perplexity("masked", "full", sampled=scheme == "reassigned")
        figure.add_trace(plots.go.Scatter(x=[xs[0], xs[-1]], y=[full, full], mode="lines",
                                          name=f"full attention ({'all queries' if scheme == 'masked' else 'sample'})",
                                          line=dict(dash="dash", width=1)))
        symbols = {"newline": "square-open", "period": "diamond-open", "random": "x-open"}
        for entry in scores.conditions:
            if entry.scheme == scheme and entry.condition in symbols:
                shift = -0.08 if scheme == "masked" else 0.08  # side by side, not on top of each other
                figure.add_trace(plots.go.Scatter(
                    x=[entry.k + shift], y=[entry.perplexity], mode="markers", marker=dict(symbol=symbols[entry.condition], size=11),
                    name=plots.safe_label(f"{entry.condition} control ({scheme})")))
    figure.update_layout(title=f"Perplexity with a budget of w = {scores.window} keys", xaxis_title="kept initial tokens k",
                         yaxis_title="perplexity (log scale)", yaxis_type="log", template="plotly_white", height=460)
    return figure


def _loss_figure(scores: SinkStreaming, span: int = 32) -> plots.go.Figure:
    figure = plots.go.Figure()
    shown = [("full", 0), ("window", 0)] + [("sinks", k) for k in scores.ks[-2:]]
    for condition, k in shown:
        entry = scores.condition("masked", condition, k)
        values = np.convolve(np.asarray(entry.nll), np.ones(span) / span, mode="valid")
        positions = np.asarray(entry.queries[span - 1:]) + 1
        figure.add_trace(plots.go.Scatter(x=positions, y=values, mode="lines",
                                          name=plots.safe_label(entry.label(scores.window))))
    figure.update_layout(title=f"Next-token loss along the text ({span}-token moving average, original positions)",
                         xaxis_title="position of the predicted token", yaxis_title="loss (nats)",
                         template="plotly_white", height=420)
    return figure


register(Analysis(
    name="sink-streaming",
    summary="StreamingLLM test: perplexity with a sliding window, with and without the first tokens kept",
    run=run,
    default_prompts=None,
    encoder_ok=False,
    options=signature_options(run, {
        "window": (int, "w: keys each query may attend to (kept tokens included)"),
        "ks": (str, "numbers of initial tokens kept, comma-separated (each < w)"),
        "text": (str, f"shipped text: {' | '.join(TEXTS)} (--prompts gives your own, lines joined)"),
        "max_tokens": (int, "the text is cut to this many tokens (at least 2w)"),
        "controls": (str, "non-initial kept tokens to compare with ('' = none)"),
        "control_k": (int, "tokens kept by each control"),
        "queries": (int, "queries sampled for the re-assigned-position scheme (0 = skip it)"),
    }),
))
