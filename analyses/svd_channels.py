"""``svd-channels``: SVD communication channels between heads and Q/K/V composition (Elhage et al. 2021;
Merullo et al. 2024; docs/analyses/svd-channels.md).

Weights: per-head OV/QK spectra and effective ranks, composition scores of every writer/reader pair with
a random-matrix baseline, per-component (rank-1) composition. Data: previous-token and induction heads on
repeated random token sequences, then the previous-token → induction K-channel tested by projecting the
writers' top components out (against random components and random directions) and traversed by adding
a multiple of the channel direction at one key position.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from interp import plots
from interp.attribution.channel_interventions import (
    ChannelTraversals,
    channel_pairs_table,
    effects_frame,
    effects_table,
    induction_channel_test,
    repeated_token_rows,
    repeated_token_scores,
    token_pool,
    top_pairs_table,
    traverse_strongest_channel,
)
from interp.attribution.channels import COMPOSITION_MODES, ChannelAnalysis, CompositionScores, svd_channels
from interp.data import default_prompts
from interp.errors import OptionError
from interp.models import LoadedModel
from interp.registry import Analysis, register, signature_options
from interp.results import Result, tidy_frame

NOTES = (
    "Composition scores (Elhage et al. 2021) measure, from the weights alone, how much of what a writer head "
    "writes (its OV matrix) a later reader head reads through its queries (Q), keys (K) or values (V): "
    "‖OV_A R_B‖_F / (‖OV_A‖_F ‖R_B‖_F). They have a positive floor: random matrices of the same shapes score "
    "about 1/√d_model (E[score²] = 1/d_model exactly). The baseline is the mean of Gaussian factored matrices "
    "of the heads' shapes and ranks; z = (score − baseline) / baseline std. Scores below the baseline mean "
    "the writer writes into directions the reader systematically ignores.",
    "Talking Heads (Merullo et al. 2024): the writer's OV = Σ σ_i u_i v_iᵀ is split into rank-1 components; "
    "CS_i is the composition score of component i alone. Exactly, CS_full²‖OV‖² = Σ_i CS_i² σ_i², so "
    "σ_i² CS_i² / Σ is the share of the interaction carried by component i. A low-rank channel is a writer/"
    "reader pair whose interaction sits in a few components.",
    "Previous-token heads attend from t to t−1 and induction heads from a repeated token to the token after "
    "its earlier copy, on [BOS] r r with r random tokens (Olsson et al. 2022). The K-channel test projects, "
    "for each induction head, the previous-token heads' top-k components (by CS_i with that head) out of "
    "what they write, and compares the induction score with removing k random other components of the "
    "same heads, k random residual directions, and the whole heads.",
    "Traversal: a multiple α of the channel direction (the writer's top component for the reader, scaled "
    "to the writer's typical output norm) is added to what the writer writes at one key position; the curve "
    "shows the attention the reader gives that position from later queries, against a random direction and "
    "the writer's top-σ component. For an induction head the key's content must match the query, so a push "
    "along a direction the reader reads breaks the match in either sign; a direction it does not read leaves "
    "the attention unchanged.",
    "Effective matrices (default) fold norm gains TransformerLens cannot fold into the weights: Gemma-3's "
    "post-attention norm (OV·diag(g)) and q/k norms. Rotary rotations and per-token RMS scales are not part "
    "of a weight-only score. GQA: every query head is a reader/writer with its shared K/V head.",
)

REFERENCES = (
    "Elhage et al., A Mathematical Framework for Transformer Circuits, Transformer Circuits Thread 2021.",
    "Merullo, Eickhoff & Pavlick, Talking Heads: Understanding Inter-layer Communication in Transformer "
    "Language Models, NeurIPS 2024 (arXiv 2406.09519).",
    "Olsson et al., In-context Learning and Induction Heads, Transformer Circuits Thread 2022.",
    "Roy & Vetterli, The effective rank: a measure of effective dimensionality, EUSIPCO 2007.",
)


def _label(head: tuple[int, int]) -> str:
    return f"{head[0]}.{head[1]}"


def _pair_heatmap(scores: CompositionScores, values: torch.Tensor, title: str, colorbar: str) -> plots.go.Figure:
    n_layers, n_heads = scores.scores.shape[:2]
    labels = [f"{layer}.{head}" for layer in range(n_layers) for head in range(n_heads)]
    matrix = torch.where(scores.valid, values, torch.full_like(values, float("nan")))
    return plots.matrix_heatmap(matrix.reshape(n_layers * n_heads, n_layers * n_heads).numpy(), title,
                                x_labels=labels, y_labels=labels, x_title="reader head (layer.head)",
                                y_title="writer head (layer.head)", colorbar_title=colorbar)


def run(lm: LoadedModel, prompts: Sequence[str], *, batch_size: int = 8, progress: bool | None = None, seed: int = 0,
        modes: str = "QKV", raw: bool = False, baseline_samples: int = 100, components: int = 4,
        random_trials: int = 2, sequences: int = 4, half_length: int = 20, heads: int = 3,
        components_per_pair: int = 3) -> Result:
    effective = not raw
    mode_list = [m for m in modes.upper() if m.strip()]
    if not mode_list or any(m not in COMPOSITION_MODES for m in mode_list):
        raise OptionError(f"--modes {modes!r} is not a subset of QKV: give e.g. QKV or K")
    for name, value, low in (("components", components, 1), ("random_trials", random_trials, 1),
                             ("sequences", sequences, 1), ("half_length", half_length, 4), ("heads", heads, 1),
                             ("components_per_pair", components_per_pair, 0)):
        if value < low:
            raise OptionError(f"--{name.replace('_', '-')} must be at least {low}, got {value}")
    if "K" not in mode_list:
        mode_list.append("K")  # the induction channel test needs K-composition
    channels = svd_channels(lm, mode_list, effective=effective, baseline_samples=baseline_samples, seed=seed)
    k_comp = channels.composition["K"]
    rows = repeated_token_rows(lm, sequences, half_length, seed=seed, pool=token_pool(lm, prompts, minimum=half_length))
    repeated = repeated_token_scores(lm, rows=rows, batch_size=batch_size)
    previous, induction = repeated.circuit_heads(heads)

    pairs = channel_pairs_table(k_comp, previous, induction, components)
    effects = induction_channel_test(lm, k_comp, channels.ov, previous, induction, k=components,
                                     random_trials=random_trials, rows=rows, seed=seed,
                                     space="residual" if effective else "head")
    effect_frame = effects_frame(effects)
    traversed = traverse_strongest_channel(lm, channels.ov, k_comp, previous, induction, rows, seed=seed)
    frame = pd.concat([channels.to_frame(components_per_pair), repeated.to_frame(), effect_frame]
                      + ([traversed.to_frame()] if traversed else []), ignore_index=True)
    frame = tidy_frame(frame, extra_columns=("reader_layer", "reader_head", "mode", "component", "condition", "k",
                                             "trial", "writers", "alpha", "direction", "writer"))

    figures: dict[str, plots.go.Figure] = {}
    for mode in mode_list:
        scores = channels.composition[mode]
        figures[f"{mode}-composition z-score, writer × reader"] = _pair_heatmap(
            scores, scores.z, f"{mode}-composition z-score vs random baseline (writer rows, reader columns)", "z")
    figures.update(_component_figure(lm, k_comp, previous, induction))
    figures["Singular spectra"] = _spectra_figure(channels, previous, induction)
    figures["OV effective rank per head"] = plots.layer_head_heatmap(
        channels.ov.to_frame(), "ov_effective_rank", "Effective rank of each head's OV matrix (Roy & Vetterli)")
    figures["Previous-token and induction scores"] = plots.layer_head_heatmap(
        repeated.to_frame(), "induction", "Induction score per head (repeated random tokens)")
    effect_summary = effects_table(effect_frame, components)
    if not effect_summary.empty:
        figures["Induction score with channels removed"] = _effect_figure(effect_summary, components)
    if traversed:
        figures["Channel traversal"] = _traversal_figure(traversed)

    heads_table = pd.DataFrame([{"role": role, "head": _label(h), "previous-token score": round(float(repeated.previous_token[h]), 4),
                                 "induction score": round(float(repeated.induction[h]), 4)}
                                for role, group in (("previous-token", previous), ("induction", induction)) for h in group])
    top_tables = {f"Top {mode}-composition pairs": top_pairs_table(channels.composition[mode]) for mode in mode_list}
    tables = {"Previous-token and induction heads (repeated random tokens)": heads_table,
              "K-composition, previous-token → induction heads": pairs,
              "Induction score with channels removed": effect_summary, **top_tables}
    if traversed:
        tables["Channel traversal"] = traversed.table()
    summary = _summary(channels, repeated, pairs, effect_summary, previous, induction, components)
    params = dict(modes="".join(mode_list), effective=effective, edit_space="residual" if effective else "head", baseline_samples=baseline_samples,
                  components=components, random_trials=random_trials, sequences=sequences, half_length=half_length,
                  heads=heads, components_per_pair=components_per_pair, seed=seed,
                  baseline=dict(mean=k_comp.baseline.mean, std=k_comp.baseline.std,
                                component_mean=k_comp.baseline.component_mean,
                                component_std=k_comp.baseline.component_std, samples=k_comp.baseline.samples))
    return Result(analysis="svd-channels", frame=frame, figures=figures, tables=tables, notes=NOTES,
                  references=REFERENCES, metadata={"parameters": params, "summary": summary})


def _component_figure(lm: LoadedModel, k_comp: CompositionScores, previous, induction) -> dict[str, plots.go.Figure]:
    """Components of the best previous-token writer × every later reader head (CS_i, K mode)."""
    candidates = [(w, r) for r in induction for w in previous if w[0] < r[0]]
    if not candidates:
        return {}
    writer, reader = max(candidates, key=lambda pair: float(k_comp.scores[pair[0] + pair[1]]))
    later = k_comp.component_scores[writer[0], writer[1], :, writer[0] + 1:].reshape(k_comp.component_scores.shape[2], -1)
    order = later.max(dim=1).values.argsort(descending=True)[:32]
    labels = [f"{layer}.{head}" for layer in range(writer[0] + 1, lm.n_layers) for head in range(lm.n_heads)]
    title = f"K-composition CS_i of writer {_label(writer)}'s top components with each later head"
    return {f"Component × reader (writer {_label(writer)})": plots.matrix_heatmap(
        later[order].numpy(), title, x_labels=labels, y_labels=[f"c{int(i)}" for i in order],
        x_title="reader head", y_title="writer component", colorbar_title="CS_i")}


def _spectra_figure(channels: ChannelAnalysis, previous, induction) -> plots.go.Figure:
    series = {"OV mean over heads": channels.ov.S.mean(dim=(0, 1)).numpy(),
              "QK mean over heads": channels.qk.S.mean(dim=(0, 1)).numpy()}
    for head in previous[:1]:
        series[f"OV {_label(head)} (previous-token)"] = channels.ov.S[head].numpy()
    for head in induction[:1]:
        series[f"QK {_label(head)} (induction)"] = channels.qk.S[head].numpy()
    rank = channels.ov.S.shape[-1]
    return plots.line_curves(list(range(rank)), series, "Singular values of OV and QK (sorted)", x_title="component",
                             y_title="singular value")


def _effect_figure(summary: pd.DataFrame, components: int) -> plots.go.Figure:
    figure = plots.go.Figure()
    names = {"clean": "clean", "top": f"top-{components} channel components", "random_components":
             f"{components} random other components", "random_directions": f"{components} random directions",
             "whole_head": "whole previous-token heads"}
    for condition, part in summary.groupby("condition", sort=False):
        figure.add_trace(plots.go.Bar(x=[plots.safe_label(r) for r in part["reader"]], y=part["induction score"],
                                      error_y=dict(type="data", array=part["std over trials"].tolist()),
                                      name=names.get(str(condition), str(condition))))
    figure.update_layout(title="Induction score of each induction head when the previous-token heads' channel is removed",
                         barmode="group", yaxis_title="induction score", xaxis_title="induction head",
                         template="plotly_white", height=420)
    return figure


def _traversal_figure(traversed: ChannelTraversals) -> plots.go.Figure:
    return plots.line_curves(
        list(traversed.alphas), {f"{t.label} direction": t.attention_to_positions.numpy() for t in traversed.traversals},
        f"Traversal: {_label(traversed.reader)}'s attention to position {traversed.position} as α·(component "
        f"{traversed.component} of {_label(traversed.writer)}) is added there",
        x_title="α (× median output norm of the writer)", y_title="attention to the edited key")


def _summary(channels: ChannelAnalysis, repeated, pairs: pd.DataFrame, effects: pd.DataFrame, previous, induction,
             components: int) -> dict:
    summary: dict = {
        "previous_token_heads": [_label(h) for h in previous],
        "induction_heads": [_label(h) for h in induction],
        "ov_effective_rank_mean": round(float(channels.ov.effective_rank.mean()), 3),
        "qk_effective_rank_mean": round(float(channels.qk.effective_rank.mean()), 3),
    }
    for mode, scores in channels.composition.items():
        summary[f"{mode}_baseline_mean"] = round(scores.baseline.mean, 6)
        summary[f"{mode}_max_z"] = round(float(torch.nan_to_num(scores.z, nan=-1e9).max()), 3)
    if not pairs.empty:
        summary["prev_to_induction_k_comp_mean"] = round(float(pairs["K-comp"].mean()), 6)
        summary["prev_to_induction_z_mean"] = round(float(pairs["z"].mean()), 3)
        summary["prev_to_induction_above_baseline"] = int((pairs["z"] > 0).sum())
        summary["prev_to_induction_pairs"] = len(pairs)
    if not effects.empty:
        def mean_change(condition: str) -> float:
            part = effects[effects["condition"] == condition]
            return round(float(part["change vs clean"].mean()), 4) if len(part) else float("nan")

        for condition in ("top", "random_components", "random_directions"):
            summary[f"induction_change_{condition}{components}"] = mean_change(condition)
        summary["induction_change_whole_heads"] = mean_change("whole_head")
    return summary


register(Analysis(
    name="svd-channels",
    summary="SVD channels between heads (Talking Heads) and Q/K/V composition vs a random baseline",
    run=run,
    default_prompts=default_prompts,
    encoder_ok=False,
    options=signature_options(run, {
        "modes": (str, "composition modes (subset of QKV; K is always computed)"),
        "raw": (bool, "use TransformerLens's raw OV/QK (do not fold post-attention and q/k norm gains)"),
        "baseline_samples": (int, "random matrix pairs for the baseline"),
        "components": (int, "k: channel components projected out per writer"),
        "random_trials": (int, "random-component and random-direction controls per reader"),
        "sequences": (int, "repeated random sequences for previous-token/induction scores"),
        "half_length": (int, "length of the random sequence that is repeated"),
        "heads": (int, "previous-token and induction heads taken (top by score)"),
        "components_per_pair": (int, "per writer/reader pair, components kept in the tidy frame"),
    }),
))
