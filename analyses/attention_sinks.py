"""``attention-sinks``: first-token sinks, secondary sinks and massive activations (Gu et al. 2025; Sun et al. 2024;
docs/analyses/attention-sinks.md)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from interp import plots
from interp.attribution.sinks import attention_sinks
from interp.data import default_prompts
from interp.models import LoadedModel
from interp.registry import Analysis, register, signature_options
from interp.results import Result
from interp.viewer import attention_section

NOTES = (
    "Attention to BOS (heat map): for every layer and head, the mean attention the first token receives from "
    "the queries of each prompt (Gu et al.'s α₀), averaged over prompts. Values near 1 mean the head parks "
    "nearly all its attention on the first token — an attention sink. In most pretrained models layers "
    "after the first one or two sink heavily.",
    "Gu et al.'s sink metric Sink₀^ε is the share of heads whose α₀ exceeds ε (default 0.3) on prompts cut "
    "to T tokens (default 64). The paper reports 77% for GPT2-XL and 92–99% for Llama-family models on "
    "natural text.",
    "Secondary sinks are later tokens that start to draw at least τ of the head-averaged attention in some "
    "layer (their birth layer) and keep doing so for a number of layers (lifetime). The table lists them "
    "with their token text; punctuation and newlines are typical.",
    "Massive activations: the largest |residual-stream| entries per layer with the token and dimension they "
    "sit on; an entry is flagged when it exceeds 100 and is about 1000× the median magnitude of its hidden "
    "state (Sun et al.). They usually sit on the first token and on the first delimiter and cause the sink.",
    "Attention, token by token: the attention of every head on the first few analysed prompts. Pick a head "
    "(it starts on the strongest first-token sink), then hover or click a token to see where it attends (its "
    "row) or what attends to it (its column); a sink head paints the first token dark for every query.",
)

REFERENCES = (
    "Gu et al., When Attention Sink Emerges in Language Models: An Empirical View, ICLR 2025.",
    "Xiao et al., Efficient Streaming Language Models with Attention Sinks (StreamingLLM), ICLR 2024.",
    "Sun et al., Massive Activations in Large Language Models, COLM 2024.",
    "Wong et al., Secondary attention sinks, arXiv 2512.22213 (the secondary-sink score used here is the suite's own definition: head-averaged attention received, with birth layer and lifetime).",
)


def run(lm: LoadedModel, prompts: Sequence[str], *, batch_size: int = 8, progress: bool | None = None,
        epsilon: float = 0.3, max_tokens: int = 64, tau: float = 0.2, seed: int = 0) -> Result:
    scores = attention_sinks(lm, prompts, epsilon=epsilon, max_tokens=max_tokens, tau=tau,
                             batch_size=batch_size, progress=progress)
    frame = scores.to_frame()
    layers = list(range(lm.n_layers))
    figures = {
        "Attention to the first token (α₀) per layer × head": plots.layer_head_heatmap(
            frame, "bos_attention", "Mean attention received by the first token", colorscale="Viridis"),
        "Per-layer mass on the first token": plots.line_curves(
            layers, {"mean over heads": scores.layer_bos_mass.numpy(),
                     "max over heads": scores.bos_attention.max(dim=1).values.numpy()},
            "Attention mass on the first token by layer", x_title="layer", y_title="attention to first token"),
    }
    if scores.secondary_sinks:
        events = pd.DataFrame([s.__dict__ for s in scores.secondary_sinks])
        figure = plots.go.Figure()
        for _, event in events.head(40).iterrows():
            label = plots.safe_label(f"p{event.prompt}:{event.position} {event.token!r}")
            figure.add_trace(plots.go.Scatter(
                x=[event.birth_layer, event.birth_layer + event.lifetime - 1], y=[label, label],
                mode="lines+markers", line=dict(width=6), name=label, showlegend=False,
                hovertext=f"peak {event.peak_score:.3f} at layer {event.peak_layer}"))
        figure.update_layout(title="Secondary sinks: birth layer to last layer above τ", xaxis_title="layer",
                             template="plotly_white", height=max(300, 18 * min(len(events), 40) + 120))
        figures["Secondary-sink timeline"] = figure
    tokens = [f"{i}:{t}" for i, t in enumerate(scores.example_tokens)]
    figures["Residual-stream norm by token (first prompt)"] = plots.matrix_heatmap(
        scores.example_resid_norm.numpy(), "‖resid_post‖ per layer and token, first prompt",
        x_labels=tokens, y_labels=[str(layer) for layer in layers], x_title="token", y_title="layer",
        colorbar_title="norm")
    summary = pd.DataFrame({
        "layer": layers,
        "mean α₀ over heads": scores.layer_bos_mass.numpy().round(4),
        "heads with α₀ > ε (share of prompts, mean)": scores.sink_fraction.mean(dim=1).numpy().round(3),
        "most-attended position (mode over heads)": [
            int(np.bincount(scores.top_received_position()[layer].numpy()).argmax()) for layer in layers],
    })
    massive = pd.DataFrame([m.__dict__ for m in scores.massive]).sort_values("value", ascending=False)
    tables = {
        f"Gu et al. sink metric Sink₀^ε (ε={scores.epsilon}, T={scores.max_tokens})": pd.DataFrame(
            {"metric": ["Sink_0^eps (share of heads, mean over prompts)", "prompts", "tokens"],
             "value": [round(scores.gu_sink_metric, 4), scores.n_prompts, scores.n_tokens]}),
        "Per-layer summary": summary,
        f"Secondary sinks (τ={scores.tau})": pd.DataFrame([s.__dict__ for s in scores.secondary_sinks]).head(30)
        if scores.secondary_sinks else pd.DataFrame({"note": ["no secondary sink reached τ"]}),
        "Massive activations (top entries per layer)": massive.head(30),
    }
    strongest = divmod(int(scores.bos_attention.nan_to_num(-1.0).flatten().argmax()), lm.n_heads)
    sections = {"Attention, token by token": attention_section(
        lm, prompts, max_tokens=min(48, max_tokens), initial=strongest)}
    return Result(
        analysis="attention-sinks", frame=frame, figures=figures, tables=tables, notes=NOTES,
        references=REFERENCES, sections=sections, metadata={"parameters": scores.params,
                                         "summary": {"gu_sink_metric": round(scores.gu_sink_metric, 6),
                                                     "secondary_sinks": len(scores.secondary_sinks),
                                                     "flagged_massive": sum(m.flagged for m in scores.massive)}},
    )


register(Analysis(
    name="attention-sinks",
    summary="first-token sinks (Gu et al.), secondary sinks, massive activations",
    run=run,
    default_prompts=default_prompts,
    options=signature_options(run, {"epsilon": (float, "Gu et al. threshold on α₀"),
                                    "max_tokens": (int, "T: tokens per prompt (BOS included)"),
                                    "tau": (float, "secondary-sink threshold")}),
))
