"""``language-steering``: steer the generation language with SAE features chosen by their effect, beside the
dense mean difference (Chou et al. 2025; Arad et al. 2025; docs/analyses/language-steering.md).

Recipe: train (or load) the SAE of each layer; per language, :func:`interp.steering.select_steering` chooses an
SAE setting per layer (candidates ranked by output score, screened and confirmed on the shipped tuning prompts)
and a dense mean-difference setting; the best layer's choice and the best setting of every other direction kind
are reported side by side on the held-out prompts and the blind-test prompts; heads that carry the chosen
direction are ranked by how much more they write along it with the edit on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go

from interp import plots
from interp.attribution.language_steering import default_layer, head_projections
from interp.corpus import LANGUAGE_NAMES, steering_prompts, steering_test_prompts, steering_tuning_prompts
from interp.errors import OptionError
from interp.models import LoadedModel
from interp.registry import Analysis, comma_list, register, signature_options
from interp.results import Result, tidy_frame
from interp.sae import DEFAULT_SAE
from interp.steering import select_steering
from interp.steering.compare import KIND_NAMES, evaluate_choices, method_variants
from interp.steering.directions import choice_spec
from interp.steering.selection import DEFAULT_STRENGTHS, METHOD_NOTES, REFERENCES, default_judge
from interp.steering.steer import feature_delta


def run(lm: LoadedModel, prompts: Sequence[str], *, batch_size: int = 8, progress: bool | None = None, seed: int = 0,
        layer: str | int | None = None, languages: str = "fr,es,de", strengths: str = ",".join(map(str, DEFAULT_STRENGTHS)),
        md_layer: int | None = None, candidates: int = 3, max_new_tokens: int = 24, heldout_from: int = 12,
        screen_prompts: int = 12, confirm_prompts: int = 24, blind_prompts: int = 40, sae_tokens: int = DEFAULT_SAE["training_tokens"], sae_width: int = DEFAULT_SAE["d_sae"],
        sae_k: int = DEFAULT_SAE["k"], sae_epochs: int = DEFAULT_SAE["epochs"], sae_seed: int = 0,
        sae_lr: float = DEFAULT_SAE["lr"], gen_batch_size: int = 32) -> Result:
    from interp.sae import train_sae

    started = time.perf_counter()
    langs = comma_list(languages, "languages", str)
    if lm.is_encoder or any(lang not in ("fr", "es", "de") for lang in langs):
        raise OptionError(f"language-steering needs a decoder and --languages drawn from fr,es,de; got {languages!r}")
    alphas = comma_list(strengths, "strengths")
    if any(not 0 < a <= 4 for a in alphas):  # checked before minutes of SAE training, not after
        raise OptionError(f"--strengths are fractions of the residual norm in (0, 4]; got {strengths!r}")
    layers = sorted(set(comma_list(str(layer), "layer", int))) if layer is not None else [default_layer(lm)]
    md_layer = default_layer(lm) if md_layer is None else md_layer
    if any(not 0 <= v < lm.n_layers for v in [*layers, md_layer]):
        raise OptionError(f"--layer and --md-layer must be in 0..{lm.n_layers - 1}; got {layer!r}, {md_layer}")
    heldout, blind = list(prompts)[heldout_from:], steering_test_prompts()[:blind_prompts]
    if not heldout:
        raise OptionError(f"need more than {heldout_from} prompts: the ones after --heldout-from are reported")
    timings, t = {}, time.perf_counter()
    saes = {sl: train_sae(lm, sl, d_sae=sae_width, k=sae_k, training_tokens=sae_tokens, epochs=sae_epochs,
                          lr=sae_lr, seed=sae_seed, progress=progress) for sl in layers}
    timings["SAEs (train or load)"] = time.perf_counter() - t
    tuning = steering_tuning_prompts()
    if screen_prompts < 1 or screen_prompts + confirm_prompts > len(tuning) or confirm_prompts < 0:
        raise OptionError(f"--screen-prompts (at least 1) and --confirm-prompts share the {len(tuning)} tuning prompts")
    options = {"strengths": alphas, "candidates": candidates, "max_new_tokens": max_new_tokens,
               "batch_size": gen_batch_size, "progress": progress, "seed": seed, "screen_prompts": tuning[:screen_prompts],
               "confirm_prompts": tuning[screen_prompts:screen_prompts + confirm_prompts]}
    rows, candidate_tables, screens, projections, details = [], [], [], {}, []
    for lang in langs:
        t = time.perf_counter()
        judge = default_judge(lm, [lang], max_tokens=max_new_tokens)
        per_layer = {sl: select_steering(lm, lang, sae=saes[sl], judge=judge, **options) for sl in layers}
        best_layer = max(layers, key=lambda sl: per_layer[sl].scores["coherent_success"])
        chosen = per_layer[best_layer]
        dense = select_steering(lm, lang, method="mean-diff", layer=md_layer, judge=judge, **options)
        timings[f"selection {lang}"] = time.perf_counter() - t
        t = time.perf_counter()
        variants = {**method_variants(chosen), "mean-diff": dense}
        trained = saes[best_layer]
        delta = feature_delta(lm, trained, lang)
        for split, split_prompts in (("held-out", heldout), ("blind test", blind)):
            if not split_prompts:
                continue
            frame = evaluate_choices(lm, variants, split_prompts, lang, sae=trained.sae, delta=delta, judge=judge,
                                     max_new_tokens=max_new_tokens, batch_size=gen_batch_size)
            frame["language"], frame["split"] = lang, split
            details.append(frame)
        timings[f"evaluation {lang}"] = time.perf_counter() - t
        for sl, choice in per_layer.items():
            cands = pd.DataFrame(choice.scores["candidates"]).assign(language=lang, layer=sl)
            candidate_tables.append(cands)
            screens.append(pd.DataFrame(choice.scores["screen"]).assign(language=lang, layer=sl, stage="screen"))
            screens.append(pd.DataFrame(choice.scores["confirmation"]).assign(language=lang, layer=sl,
                                                                              stage="confirmation"))
        screens.append(pd.DataFrame(dense.scores["screen"]).assign(language=lang, layer=md_layer, stage="screen"))
        for name, choice in variants.items():
            rows.append({"language": lang, "method": name, "setting": choice.describe(), "rule": choice.rule,
                         "tuning coherent success": choice.scores.get("coherent_success"),
                         "tuning prompts": choice.scores.get("prompts"),
                         "SAE mean-diff · dense (cosine)": chosen.scores.get("sae_mean_diff_cosine_with_dense")})
        with_edit = details[-2] if blind else details[-1]
        chosen_rows = with_edit[with_edit["method"] == "chosen"]
        on, off = head_projections(lm, choice_spec(lm, chosen, trained.sae, delta),
                                   [lm.encode(p) for p in chosen_rows["prompt"]],
                                   [lm.encode(x, prepend_bos=False) for x in chosen_rows["text"]])
        projections[lang] = (on - off).numpy()

    per_prompt = pd.concat(details, ignore_index=True)
    summary = per_prompt.groupby(["language", "split", "method"], sort=False).agg(
        coherent_success=("coherent", "mean"), fluent_success=("fluent", "mean"), success=("success", "mean"),
        fidelity=("fidelity", "mean"), unrelated_cosine=("unrelated_similarity", "first"),
        prompts=("prompt", "count")).reset_index()
    headline = pd.DataFrame(rows).merge(
        summary.pivot_table(index=["language", "method"], columns="split",
                            values=["coherent_success", "fluent_success", "success", "fidelity"]).pipe(
            lambda p: p.set_axis([f"{split} {metric.replace('_', ' ')}" for metric, split in p.columns], axis=1)
        ).reset_index(), on=["language", "method"], how="left")
    headline["method"] = [KIND_NAMES.get(m, m) if m != "chosen" else "chosen (SAE)" for m in headline["method"]]
    candidates_frame = pd.concat(candidate_tables, ignore_index=True)
    screen_frame = pd.concat(screens, ignore_index=True).drop(columns=["features"], errors="ignore")

    figures: dict[str, go.Figure] = {}
    fig = go.Figure()
    for lang in langs:
        sub = candidates_frame[candidates_frame["language"] == lang]
        fig.add_trace(go.Scatter(x=sub["monolinguality"], y=sub["output_shift"], mode="markers",
                                 name=plots.safe_label(LANGUAGE_NAMES.get(lang, lang)),
                                 text=[f"L{r.layer} f{r.feature}" for r in sub.itertuples()]))
    fig.update_layout(title="Candidate features: input score (monolinguality) vs output score", template="plotly_white",
                      xaxis_title="monolinguality ratio (input)", yaxis_title="shift of next-token mass (output)")
    figures["Input vs output score"] = fig
    fig = go.Figure()
    for (lang, sl, label), sub in screen_frame[screen_frame["stage"] == "screen"].groupby(["language", "layer", "method"]):
        best = sub.sort_values("coherent_success").groupby("strength").last().reset_index()
        fig.add_trace(go.Scatter(x=best["strength"], y=best["coherent_success"], mode="lines+markers",
                                 name=plots.safe_label(f"{lang} L{sl} {label}")))
    fig.update_layout(title="Screen: coherent success vs strength (fraction of the residual norm)",
                      xaxis_title="strength s", yaxis_title="coherent success", template="plotly_white")
    figures["Coherent success vs strength"] = fig
    for lang in langs:
        figures[f"Head projection onto the {lang} direction (on − off)"] = plots.matrix_heatmap(
            projections[lang], f"Head output · unit steering direction, edit on minus off ({lang})",
            x_labels=[str(h) for h in range(lm.n_heads)], y_labels=[str(v) for v in range(lm.n_layers)],
            x_title="head", y_title="layer", colorscale="RdBu", colorbar_title="Δ projection")
    examples = per_prompt[per_prompt["method"] == "chosen"].groupby(["language", "split"]).head(3)
    tables = {
        f"Headline: every method on the {len(heldout)} held-out and {len(blind)} blind-test prompts": headline,
        "Per language, split and method": summary,
        "Candidate features: input and output scores (ranked by the output score)": candidates_frame,
        "Screen and confirmation (tuning prompts only)": screen_frame,
        "Examples (chosen setting)": examples[["language", "split", "prompt", "baseline_text", "text", "detected",
                                               "coherent"]],
        "SAE reconstruction quality (held-out text)": pd.DataFrame(
            [{"layer": sl, "train_seconds": s.info.get("train_seconds"), **(s.quality.as_dict() if s.quality else {})}
             for sl, s in saes.items()]),
        "Time per stage (s)": pd.DataFrame([{"stage": k, "seconds": round(v, 1)} for k, v in timings.items()]),
    }
    tidy = [{"layer": None, "metric": metric, "value": r[metric], "language": r["language"], "split": r["split"],
             "method": r["method"]} for r in summary.to_dict("records")
            for metric in ("coherent_success", "fluent_success", "success", "fidelity")]
    tidy += [{"layer": layer_, "head": head, "metric": "head_projection_delta", "value": float(m[layer_, head]),
              "language": lang, "method": "chosen"} for lang, m in projections.items()
             for layer_ in range(m.shape[0]) for head in range(m.shape[1])]
    metadata = {"parameters": {"layers": layers, "languages": langs, "strengths": alphas, "md_layer": md_layer,
                               "candidates": candidates, "max_new_tokens": max_new_tokens, "heldout_prompts": len(heldout),
                               "blind_prompts": len(blind), "sae_seed": sae_seed, "sae_tokens": sae_tokens,
                               "sae_width": sae_width, "sae_k": sae_k, "sae_epochs": sae_epochs, "sae_lr": sae_lr,
                               "sae_path": {sl: str(s.path) for sl, s in saes.items()}},
                "summary": {f"{r['language']} {r['split']} {r['method']}": round(float(r["coherent_success"]), 3)
                            for r in summary.to_dict("records")},
                "stage_seconds": {k: round(v, 1) for k, v in timings.items()},
                "analysis_seconds": round(time.perf_counter() - started, 1)}
    return Result(analysis="language-steering", frame=tidy_frame(tidy, extra_columns=("language", "split", "method")),
                  figures=figures, metadata=metadata, tables=tables, notes=METHOD_NOTES, references=REFERENCES)


register(Analysis(
    name="language-steering",
    summary="steer the generation language with SAE features chosen by their effect, beside the dense mean difference",
    run=run,
    default_prompts=steering_prompts,
    options=signature_options(run, {
        "layer": (str, "SAE layer(s), comma-separated (default: the model's steering layer, 9 on gemma-3-270m)"),
        "languages": (str, "target languages, comma-separated (fr, es, de)"),
        "strengths": (str, "strengths screened, as fractions of the layer's mean residual norm"),
        "md_layer": (int, "layer of the dense mean-difference direction (default: the model's steering layer)"),
        "candidates": (int, "single SAE features screened per language and layer (best by output score)"),
        "max_new_tokens": (int, "tokens generated per prompt"),
        "heldout_from": (int, "prompts before this index are skipped (the earlier protocol's tuning prompts); the "
                         "rest are the held-out set"),
        "screen_prompts": (int, "shipped tuning prompts every setting is screened on"),
        "confirm_prompts": (int, "further tuning prompts the best settings are confirmed on"),
        "blind_prompts": (int, "shipped blind-test prompts on which every method is also reported; 0 skips them"),
        "sae_tokens": (int, "SAE training tokens"),
        "sae_width": (int, "SAE latents"),
        "sae_k": (int, "TopK active latents"),
        "sae_epochs": (int, "SAE passes over the cached activations"), "sae_lr": (float, "SAE Adam learning rate"),
        "sae_seed": (int, "SAE seed (corpus order, activation shuffle, initialisation)"),
        "gen_batch_size": (int, "prompts per generation batch"),
    }),
    encoder_ok=False,
))
