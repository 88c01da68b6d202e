"""``attention-sparsity``: certified top-k truncation, output-aware KV eviction, effective rank (Tzachristas et al.;
OBCache, Gu et al. 2025; docs/analyses/attention-sparsity.md)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from plotly.subplots import make_subplots

from interp import plots
from interp.attribution.sparsity import OUTPUT_AWARE, SparsityScores, attention_sparsity, long_prompts
from interp.data import default_prompts
from interp.errors import OptionError
from interp.models import LoadedModel
from interp.registry import Analysis, register, signature_options
from interp.results import Result
from interp.viewer import attention_section

#: Tzachristas et al.'s headline (abstract): certified top-k cuts scored keys 2–4× on average (bert-base).
PAPER_CLAIM = "2–4× fewer scored keys on average (bert-base-uncased and synthetic logits; Tzachristas et al.)"
SINK_EPSILON = 0.3  # Gu et al.'s threshold on α₀, as in the attention-sinks analysis

NOTES = (
    "Certified top-k: for every query, keeping only its k largest attention logits and renormalising moves the "
    "attention distribution by exactly the discarded (tail) mass τ in total variation, and moves the head's "
    "output by τ·‖μ_tail − μ_head‖ ≤ τ·diam. k_ε is the fewest keys whose tail mass is at most ε; 'keys saved' "
    "is n / k_ε (n = keys the query sees). Two averages are shown: the mean of n/k_ε over queries, and Σn / Σk_ε "
    "(the reduction in the total number of keys scored). Queries that see fewer than min_keys keys are left "
    "out, because a query that sees 3 keys cannot save much.",
    "Gaussian-logit law: if a query's logits were Gaussian with standard deviation σ, k_ε/n ≈ Φ_c(σ + Φ⁻¹(ε)). "
    "The scatter compares this prediction, with σ fitted per head from its logits, to the measured k_ε/n. "
    "Heads with a first-token sink have very non-Gaussian logits (one huge outlier), so the law says little "
    "about them.",
    "KV eviction: for each prompt the last W queries form the observation window; every earlier token may be "
    "evicted, and a cache budget β keeps that share of them. Tokens are ranked by accumulated attention "
    "(H2O-style heuristic) or by the output-aware OBCache saliencies — the squared change of the window's "
    "outputs if the token's value (value), key (key → 0, logit → 0) or both (joint: the token leaves the "
    "softmax) were pruned. The error is the RMS relative change of the window queries' attention outputs "
    "after the lowest-scored tokens are removed and the softmax renormalised, averaged over heads. The right "
    "panel marks the first-token attention sink: how often each score evicts position 0.",
    "Effective rank (Roy & Vetterli): exp of the entropy of the normalised singular values of a head's "
    "attention matrix (1 = every query reads the same mix, n = full rank), on the first rank_prompts "
    "prompts. Entropy is the mean attention entropy per query, divided by log n for the normalised view.",
    "Attention, token by token: the attention of every head on the first few analysed prompts (cut to 48 "
    "tokens). Pick a head (it starts on the one whose queries need the fewest keys), then hover or click a "
    "token to see where it attends (its row) or what attends to it (its column): a sparse head puts its "
    "weight on a few keys, a diffuse one spreads it.",
)

REFERENCES = (
    "Tzachristas et al., top-k sparse attention via total variation (certified top-k: TV distance = tail mass, the output-error certificate and the Gaussian-logit law).",
    "Gu, Liang, Zhao & Diao, OBCache: Optimal Brain KV Cache Pruning for Efficient Long-Context LLM Inference, "
    "arXiv 2510.07651 (2025).",
    "Zhang et al., H2O: Heavy-Hitter Oracle for Efficient Generative Inference of LLMs, NeurIPS 2023 "
    "(accumulated-attention eviction).",
    "Roy & Vetterli, The effective rank: a measure of effective dimensionality, EUSIPCO 2007.",
    "Gu et al., When Attention Sink Emerges in Language Models, ICLR 2025 (α₀ and the sink threshold 0.3).",
)


def _floats(text: str | Sequence[float], name: str) -> tuple[float, ...]:
    if not isinstance(text, str):
        return tuple(float(x) for x in text)
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise OptionError(f"--{name} must be comma-separated numbers such as 0.05,0.01; got {text!r}") from None
    if not values:
        raise OptionError(f"--{name} needs at least one number, e.g. 0.05,0.01")
    return values


def summary_tables(scores: SparsityScores) -> dict[str, pd.DataFrame]:
    """Headline tables: keys saved beside the paper's claim, the eviction comparison, truncation check."""
    keys_rows = []
    for eps in scores.reported_epsilons:
        mean_ratio, total_ratio = scores.mean_keys_saved(eps)
        e = scores.epsilon_index(eps)
        keys_rows.append({
            "ε (TV budget)": eps,
            "keys saved, mean n/k_ε": round(mean_ratio, 3),
            "keys saved, Σn/Σk_ε": round(total_ratio, 3),
            "kept fraction k_ε/n": round(float(scores.kept_fraction[:, :, e].mean()), 4),
            "Gaussian-law prediction of k_ε/n": round(float(scores.law_kept_fraction[:, :, e].mean()), 4),
            "paper": PAPER_CLAIM,
        })
    means = scores.mean_eviction_error().numpy()
    acc = scores.scores.index("accumulated")
    per_head = scores.eviction_error.flatten(start_dim=2).numpy()  # [S, B, L*H]
    eviction_rows = []
    for s, score in enumerate(scores.scores):
        for b, budget in enumerate(scores.budgets):
            eviction_rows.append({
                "score": score,
                "budget (share kept)": budget,
                "relative output error (mean over heads)": round(float(means[s, b]), 5),
                "ratio to accumulated attention": round(float(means[s, b] / means[acc, b]), 4)
                if means[acc, b] > 0 else float("nan"),
                "heads where it beats accumulated": round(float((per_head[s, b] < per_head[acc, b]).mean()), 3),
                "position 0 evicted (share of heads × prompts)": round(float(scores.sink_evicted[s, b].mean()), 3),
            })
    truncation = pd.DataFrame([{
        "ε": scores.reported_epsilons[0],
        "mean tail mass τ": round(float(scores.truncation_tau.mean()), 5),
        "mean realised ‖Attn − Attn_k‖": round(float(scores.truncation_error.mean()), 5),
        "mean bound τ·diam": round(float(scores.truncation_bound.mean()), 5),
        "realised / bound": round(float(scores.truncation_error.sum() / scores.truncation_bound.sum()), 4)
        if float(scores.truncation_bound.sum()) > 0 else float("nan"),
        "mean ‖o‖": round(float(scores.output_norm.mean()), 5),
        f"mean τ at k={scores.k}": round(float(scores.tail_at_k.mean()), 5),
        f"mean single-gap bound at k={scores.k}": round(float(scores.gap_bound_at_k.mean()), 5),
    }])
    e0 = scores.epsilon_index(scores.reported_epsilons[0])
    layers = pd.DataFrame({
        "layer": np.arange(scores.logit_sigma.shape[0]),
        f"keys saved n/k at ε={scores.reported_epsilons[0]}": scores.keys_saved[:, :, e0].mean(1).numpy().round(3),
        "α₀ (attention to first token)": scores.bos_attention.mean(1).numpy().round(3),
        "normalised entropy": scores.normalized_entropy.mean(1).numpy().round(3),
        "effective rank": scores.effective_rank.mean(1).numpy().round(2),
        "logit σ": scores.logit_sigma.mean(1).numpy().round(3),
    })
    return {
        "Keys saved by certified top-k (beside the paper's claim)": pd.DataFrame(keys_rows),
        "KV eviction: output error by score and budget": pd.DataFrame(eviction_rows),
        "Top-k truncation: realised output error against the certificate τ·diam (window queries)": truncation,
        "Per-layer summary": layers,
    }


def figures(scores: SparsityScores, frame: pd.DataFrame) -> dict[str, plots.go.Figure]:
    eps0 = scores.reported_epsilons[0]
    at_eps0 = frame[np.isclose(frame["epsilon"].astype(float), eps0, atol=0) | frame["epsilon"].isna()]
    out: dict[str, plots.go.Figure] = {}
    out[f"Keys saved n/k_ε at ε={eps0} per layer × head"] = plots.layer_head_heatmap(
        at_eps0[at_eps0["metric"] == "keys_saved"], "keys_saved", f"Mean keys saved n/k_ε at ε={eps0}")
    layers = scores.kept_fraction.shape[0]
    curves = {f"layer {layer}": scores.kept_fraction[layer].mean(0).numpy() for layer in range(layers)}
    curves["all heads"] = scores.kept_fraction.mean((0, 1)).numpy()
    tv = plots.line_curves(scores.epsilons, curves, "TV budget ε against the share of keys kept k_ε/n",
                           x_title="ε (total-variation budget)", y_title="mean k_ε / n")
    tv.update_xaxes(type="log")
    out["TV-budget curves"] = tv
    law = plots.go.Figure()
    for eps in scores.reported_epsilons:
        e = scores.epsilon_index(eps)
        labels = [f"{layer}.{head}" for layer in range(layers) for head in range(scores.kept_fraction.shape[1])]
        law.add_trace(plots.go.Scatter(
            x=scores.law_kept_fraction[:, :, e].flatten().numpy(), y=scores.kept_fraction[:, :, e].flatten().numpy(),
            mode="markers", name=f"ε={eps}", text=labels,
            hovertemplate="head %{text}: predicted %{x:.3f}, measured %{y:.3f}<extra></extra>"))
    law.add_trace(plots.go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="y = x", line=dict(dash="dot")))
    law.update_layout(title="Gaussian-logit law Φ_c(σ + Φ⁻¹(ε)) against measured k_ε/n, per head",
                      xaxis_title="predicted k_ε / n", yaxis_title="measured k_ε / n", template="plotly_white",
                      height=420)
    out["Gaussian-logit law: predicted vs measured"] = law
    n_sink_heads = int((scores.bos_attention > SINK_EPSILON).sum())
    eviction = make_subplots(rows=1, cols=2, subplot_titles=(
        "relative output error of the window queries",
        f"first-token sink (position 0) evicted; {n_sink_heads} sink heads with α₀ > {SINK_EPSILON}"))
    means = scores.mean_eviction_error().numpy()
    for s, score in enumerate(scores.scores):
        dash = None if score in OUTPUT_AWARE else "dash"
        eviction.add_trace(plots.go.Scatter(x=list(scores.budgets), y=means[s], mode="lines+markers",
                                            name=score, legendgroup=score, line=dict(dash=dash)), row=1, col=1)
        eviction.add_trace(plots.go.Scatter(x=list(scores.budgets), y=scores.sink_evicted[s].mean((1, 2)).numpy(),
                                            mode="lines+markers", name=score, legendgroup=score, showlegend=False,
                                            line=dict(dash=dash), marker=dict(symbol="x")), row=1, col=2)
    eviction.update_xaxes(title_text="cache budget (share of evictable tokens kept)")
    eviction.update_yaxes(title_text="RMS ‖Δo‖ / ‖o‖ (mean over heads)", type="log", row=1, col=1)
    eviction.update_yaxes(title_text="share of heads × prompts", range=[-0.02, 1.02], row=1, col=2)
    eviction.update_layout(title="KV eviction: output error vs cache budget per score (attention sink marked)",
                           template="plotly_white", height=440)
    out["Eviction error vs budget"] = eviction
    if frame.loc[frame["metric"] == "effective_rank", "value"].notna().any():  # rank_prompts=0: not measured
        out["Effective rank per layer × head"] = plots.layer_head_heatmap(
            frame, "effective_rank", "Attention effective rank (Roy–Vetterli)")
    out["Normalised attention entropy per layer × head"] = plots.layer_head_heatmap(
        frame, "normalized_entropy", "Mean attention entropy / log n")
    certificate = plots.go.Figure(plots.go.Scatter(
        x=scores.truncation_bound.flatten().numpy(), y=scores.truncation_error.flatten().numpy(), mode="markers",
        name="heads", text=[f"{layer}.{head}" for layer in range(layers) for head in range(scores.kept_fraction.shape[1])],
        hovertemplate="head %{text}: bound %{x:.4f}, realised %{y:.4f}<extra></extra>"))
    top = float(max(scores.truncation_bound.max(), scores.truncation_error.max(), 1e-9))
    certificate.add_trace(plots.go.Scatter(x=[0, top], y=[0, top], mode="lines", name="y = x", line=dict(dash="dot")))
    certificate.update_layout(title=f"Top-k_ε output error (ε={eps0}) against its certificate τ·diam, per head",
                              xaxis_title="mean τ·diam_{H,T}", yaxis_title="mean ‖Attn − Attn_k‖",
                              template="plotly_white", height=420)
    out["Truncation certificate"] = certificate
    return out


def run(lm: LoadedModel, prompts: Sequence[str], *, batch_size: int = 8, progress: bool | None = None,
        epsilons: str | Sequence[float] = "0.05,0.01", budgets: str | Sequence[float] = "0.1,0.25,0.5,0.75",
        k: int = 32, window: int = 32, min_keys: int = 16, rank_prompts: int = 2, max_tokens: int = 256,
        concat: int = 1, seed: int = 0) -> Result:
    if concat < 1:
        raise OptionError(f"concat must be at least 1, got {concat}")
    texts = long_prompts(list(prompts), per_prompt=concat) if concat > 1 else list(prompts)
    scores = attention_sparsity(
        lm, texts, epsilons=_floats(epsilons, "epsilons"), budgets=_floats(budgets, "budgets"), k=k, window=window,
        min_keys=min_keys, rank_prompts=rank_prompts, max_tokens=max_tokens, batch_size=batch_size,
        progress=progress)
    frame = scores.to_frame()
    summary: dict[str, object] = {
        "n_prompts": scores.n_prompts, "n_tokens": scores.n_tokens, "window_prompts": scores.n_window_prompts,
        "mean_effective_rank": round(float(scores.effective_rank.mean()), 4) if scores.n_rank_prompts else None,
        "effective_rank_prompts": scores.n_rank_prompts,
        "mean_normalized_entropy": round(float(scores.normalized_entropy.mean()), 4),
        "truncation_realised_over_bound": round(float(scores.truncation_error.sum() / scores.truncation_bound.sum()), 4)
        if float(scores.truncation_bound.sum()) > 0 else None,
    }
    for eps in scores.reported_epsilons:
        mean_ratio, total_ratio = scores.mean_keys_saved(eps)
        summary[f"keys_saved_mean_eps_{eps:g}"] = round(mean_ratio, 4)
        summary[f"keys_saved_total_eps_{eps:g}"] = round(total_ratio, 4)
    for score in OUTPUT_AWARE:
        for budget in scores.budgets:
            summary[f"eviction_ratio_{score}_vs_accumulated_budget_{budget:g}"] = round(
                scores.eviction_ratio(score, budget), 4)
    parameters = dict(scores.params, concat=concat)
    e0 = scores.epsilon_index(scores.reported_epsilons[0])
    sparsest = divmod(int(scores.keys_saved[:, :, e0].nan_to_num(-1.0).flatten().argmax()), lm.n_heads)
    sections = {"Attention, token by token": attention_section(
        lm, texts, max_tokens=min(48, max_tokens), initial=sparsest)}
    return Result(
        analysis="attention-sparsity", frame=frame, figures=figures(scores, frame), tables=summary_tables(scores),
        notes=NOTES, references=REFERENCES, sections=sections, metadata={"parameters": parameters, "summary": summary},
    )


register(Analysis(
    name="attention-sparsity",
    summary="certified top-k truncation (TV), OBCache vs accumulated-attention KV eviction, effective rank",
    run=run,
    default_prompts=default_prompts,
    options=signature_options(run, {
        "epsilons": (str, "TV budgets ε to report, comma-separated (the first drives the figures)"),
        "budgets": (str, "cache budgets (share of evictable tokens kept), comma-separated"),
        "k": (int, "fixed k for the tail mass and the single-gap bound"),
        "window": (int, "observation window: the last W queries of each prompt (prompts need ≥ 2W tokens)"),
        "min_keys": (int, "queries that see fewer keys are left out of per-query averages"),
        "rank_prompts": (int, "effective rank on the first N prompts (one eigendecomposition per head and prompt; 0: off)"),
        "max_tokens": (int, "tokens per prompt (BOS included)"),
        "concat": (int, "join N consecutive prompts into one (3 shipped paragraphs ≈ 256+ tokens)"),
    }),
))
