"""``head-importance``: which heads matter for a task, by every scoring method (Michel et al. 2019 and others;
docs/analyses/head-importance.md)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp import plots
from interp.attribution.ablation_scan import METRICS
from interp.attribution.head_importance import head_importance
from interp.data import default_prompts
from interp.errors import OptionError
from interp.interventions import ABLATION_MODES
from interp.models import LoadedModel
from interp.registry import Analysis, register, signature_options
from interp.results import Result
from interp.tasks import build_task

NOTES = (
    "Task: the analysis scores heads on one task. 'induction' (default) is random tokens repeated once "
    "(BOS, R, R without its last token); the loss is the mean next-token loss on the repeated half, the answer "
    "is the last token of R against a random token not in R, and the corrupted run replaces the first copy "
    "by fresh tokens. 'capitals' is factual recall with a counterfactual prefix; a .jsonl/.csv file gives "
    "your own (prompt, correct, incorrect) rows.",
    "Single-head ablation (heat maps 'ablation …'): each head is ablated on its own (zero ablation unless "
    "--ablation says otherwise) and the change of the task metric is shown: Δloss > 0 and Δlogit-diff < 0 mean the "
    "head helps; KL is the divergence of the answer-position distribution from the clean one. The scan is "
    "exact: it restarts each ablated pass from the cached clean residual at the head's layer and runs the "
    "heads of a layer together as stacked copies of the batch.",
    "Gradient importance (Michel et al. 2019): |∂L/∂ξ_h| for a gate ξ_h on the head's output, averaged over "
    "examples and divided by the ℓ2 norm of its layer (so each layer's row has unit norm).",
    "Patching: exact = the metric change when the head's output is replaced by its output on the corrupted run "
    "(or by its mean when the task has no corrupted prompts); attribution patching = the first-order estimate "
    "Σ (z_ref − z)·∂M/∂z of the same change for all heads from one forward and one backward pass. The scatter "
    "and the Spearman correlation say how far the cheap estimate can be trusted on this model.",
    "Direct logit attribution: each head's output at the answer position, divided by the frozen final-norm "
    "scale (and by the post-attention norm scale in models that have one, as Gemma 3), projected on "
    "W_U[correct] − W_U[incorrect]. With embeddings, biases and MLPs it sums to the logit difference; the "
    "summary table gives the largest deviation.",
    "Induction score: mean attention from a repeated token to the token after its earlier occurrence; "
    "previous-token score: mean attention to the preceding token (first copy). Induction heads should rank "
    "high by ablation Δloss on the repeated half.",
    "AttentionInfluence (Hua et al. 2025): for each document of the prompt set, the mean token loss with the "
    "listed heads masked minus the base loss, absolute and relative to the base; documents whose loss rises "
    "most rely most on those heads (Hua et al. mask retrieval heads and keep the top-ranked documents).",
    "Agreement: Spearman rank correlations between the scores, each oriented so that larger means more "
    "important. Methods that agree pick out the same heads; low agreement is itself a finding (ablation and "
    "gradients measure different things for heads whose effect is non-linear).",
)

REFERENCES = (
    "Michel, Levy & Neubig, Are Sixteen Heads Really Better than One?, NeurIPS 2019.",
    "Olsson et al., In-context Learning and Induction Heads, Transformer Circuits Thread 2022.",
    "Nanda, Attribution Patching: Activation Patching At Industrial Scale, 2023; Syed, Rager & Conmy, "
    "Attribution Patching Outperforms Automated Circuit Discovery, 2023.",
    "Lieberum et al., Does Circuit Analysis Interpretability Scale? Evidence from Multiple Choice Capabilities "
    "in Chinchilla, 2023.",
    "Yu, Merullo & Pavlick, Characterizing Mechanisms for Factual Recall in Language Models, EMNLP 2023.",
    "Hua et al., AttentionInfluence: Adopting Attention Head Influence for Weak-to-Strong Pretraining Data "
    "Selection, 2025.",
    "Zhou et al., On the Role of Attention Heads in Large Language Model Safety (Ships/Sahara), ICLR 2025 — "
    "the scale-query/scale-output operators.",
)

_TITLES = {
    "ablation_delta_loss": ("Ablation effect on the loss (Δloss, ablated − clean)", 0.0),
    "ablation_delta_logit_diff": ("Ablation effect on the logit difference (Δ, ablated − clean)", 0.0),
    "ablation_kl": ("Ablation KL divergence of the answer distribution", None),
    "ablation_delta_accuracy": ("Ablation effect on answer accuracy (Δ)", 0.0),
    "gradient_importance": ("Gradient importance (Michel et al., layer-normalised)", None),
    "patching_exact": ("Exact patching from the reference run (ΔM)", 0.0),
    "patching_attribution": ("Attribution patching estimate (ΔM, first order)", 0.0),
    "dla": ("Direct logit attribution (mean over examples)", 0.0),
    "induction_score": ("Induction score", None),
    "previous_token_score": ("Previous-token score", None),
}


def run(
    lm: LoadedModel,
    prompts: Sequence[str],
    *,
    batch_size: int = 8,
    progress: bool | None = None,
    seed: int = 0,
    task: str = "induction",
    ablation: str = "zero",
    eps: float | None = None,
    n_sequences: int = 3,
    half_length: int = 10,
    max_documents: int = 6,
    max_tokens: int = 48,
    influence_heads: int | None = None,
    influence_mode: str = "zero",
) -> Result:
    mode = ablation
    if mode not in ABLATION_MODES:
        raise OptionError(f"unknown --ablation {mode!r}: choose one of {', '.join(ABLATION_MODES)}")
    if influence_mode not in ABLATION_MODES:
        raise OptionError(f"unknown --influence-mode {influence_mode!r}: choose one of {', '.join(ABLATION_MODES)}")
    if max_documents < 0:
        raise OptionError(f"max_documents must be 0 or more, got {max_documents}")
    built = build_task(lm, task, n_sequences=n_sequences, half_length=half_length, seed=seed)
    documents = list(prompts)[:max_documents]
    scores = head_importance(lm, built, mode=mode, eps=eps, metrics=METRICS, documents=documents,
                             influence_heads=influence_heads, influence_mode=influence_mode, max_tokens=max_tokens,
                             batch_size=batch_size)
    frame = scores.to_frame()
    figures: dict[str, go.Figure] = {}
    for metric, (title, zmid) in _TITLES.items():
        if (frame["metric"] == metric).any():
            figures[title] = plots.layer_head_heatmap(frame, metric, title, zmid=zmid)
    agreement = scores.agreement()
    figures["Agreement between methods (Spearman)"] = plots.matrix_heatmap(
        agreement.to_numpy(), "Rank agreement between head scores (Spearman, larger = more important)",
        x_labels=list(agreement.columns), y_labels=list(agreement.index), x_title="", y_title="",
        colorscale="RdBu", colorbar_title="ρ")
    maps = scores.score_maps()  # on the host whatever the model's device
    exact, estimate = maps["patching_exact"].numpy().ravel(), maps["patching_attribution"].numpy().ravel()
    labels = [f"{layer}.{head}" for layer in range(lm.n_layers) for head in range(lm.n_heads)]
    lim = float(np.nanmax(np.abs(np.concatenate([exact, estimate])))) if exact.size else 1.0
    scatter = go.Figure([
        go.Scatter(x=exact, y=estimate, mode="markers", text=labels, name="heads",
                   hovertemplate="head %{text}: exact %{x:.4f}, estimate %{y:.4f}<extra></extra>"),
        go.Scatter(x=[-lim, lim], y=[-lim, lim], mode="lines", name="y = x", line=dict(dash="dot", color="grey")),
    ])
    scatter.update_layout(
        title=f"Attribution vs exact patching of {scores.patching_metric} (Spearman ρ = {scores.patching_spearman:.3f})",
        xaxis_title="exact ΔM", yaxis_title="attribution-patching estimate", template="plotly_white", height=420)
    figures["Attribution patching vs exact patching"] = scatter
    tables: dict[str, pd.DataFrame] = {}
    summary_rows = [("task", scores.task_description), ("ablation mode", mode),
                    *[(f"clean {m}", round(v, 5)) for m, v in scores.scan.clean.items()],
                    ("patching reference", scores.patching_reference),
                    ("Spearman(attribution, exact patching)", round(scores.patching_spearman, 4)),
                    ("ablation scan: model passes", scores.scan.forward_passes),
                    *[(f"seconds: {k}", v) for k, v in scores.seconds.items()]]
    if scores.dla is not None:
        summary_rows.append(("DLA: max |Σ components − logit diff|", f"{scores.dla.residual_error:.2e}"))
    tables["Summary"] = pd.DataFrame(summary_rows, columns=["quantity", "value"]).astype({"value": str})
    top = scores.top_heads(12, by="ablation_delta_loss").round(5)
    tables["Top heads by ablation Δloss (with the other scores)"] = top
    if scores.patterns is not None:
        tables["Top heads by induction score"] = scores.top_heads(8, by="induction_score").round(5)
    tables["Agreement between methods (Spearman)"] = agreement.round(3).reset_index(names="score")
    if scores.influence is not None:
        heads_text = ", ".join(f"{layer}.{head}" for layer, head in scores.influence_heads)
        docs = scores.influence.sort_values("relative", ascending=False).round(5)
        tables[f"AttentionInfluence: documents ranked by relative loss increase (masked heads {heads_text})"] = docs
        figures["AttentionInfluence per document"] = plots.bars(
            [f"doc {d}" for d in docs["document"]], docs["relative"].to_numpy(),
            f"Relative loss increase with heads {heads_text} masked ({influence_mode})", y_title="ΔL / L")
    notes = NOTES + tuple(getattr(built, "notes", ()))
    summary = {
        "clean": {k: round(v, 6) for k, v in scores.scan.clean.items()},
        "top_heads_by_loss": top["head"].head(5).tolist(),
        "patching_spearman": round(scores.patching_spearman, 6),
        "dla_residual_error": None if scores.dla is None else scores.dla.residual_error,
        "influence_heads": [f"{layer}.{head}" for layer, head in scores.influence_heads],
    }
    if scores.patterns is not None:
        summary["top_heads_by_induction"] = scores.top_heads(5, by="induction_score")["head"].tolist()
    return Result(
        analysis="head-importance", frame=frame, figures=figures, tables=tables, notes=notes,
        references=REFERENCES, metadata={"parameters": {**scores.params, "n_sequences": n_sequences,
                                                        "half_length": half_length, "max_documents": max_documents,
                                                        "influence_heads": summary["influence_heads"]},
                                         "summary": summary, "timings": scores.seconds},
    )


register(Analysis(
    name="head-importance",
    summary="head importance: ablation scan, gradients, attribution vs exact patching, DLA, AttentionInfluence",
    run=run,
    default_prompts=default_prompts,
    encoder_ok=False,
    options=signature_options(run, {
        "task": (str, "induction | capitals | path to a .jsonl/.csv file of prompt,correct,incorrect"),
        "ablation": (str, f"single-head ablation mode: {' | '.join(ABLATION_MODES)}"),
        "eps": (float, "factor of the scale modes (default 1e-5; scale_value needs it)"),
        "n_sequences": (int, "induction task: number of sequences"),
        "half_length": (int, "induction task: random tokens per copy"),
        "max_documents": (int, "AttentionInfluence: prompts used as documents (0 = skip)"),
        "max_tokens": (int, "AttentionInfluence: tokens per document"),
        "influence_heads": (int, "AttentionInfluence: number of top heads to mask (default ~5%)"),
        "influence_mode": (str, "AttentionInfluence masking mode"),
    }),
))
