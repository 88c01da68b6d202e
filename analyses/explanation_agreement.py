"""``explanation-agreement``: is attention an explanation? Token attributions from attention and from gradients,
how far they agree and how faithful each is (Neely et al. 2022; docs/analyses/explanation-agreement.md)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from interp import plots
from interp.attribution.explanation_agreement import ExplanationAgreement, explanation_agreement
from interp.attribution.explanation_faithfulness import RANDOM, explanation_faithfulness
from interp.attribution.token_attribution import (
    ATTENTION_METHODS,
    METHODS,
    SIGNED_METHODS,
    check_methods,
    token_attributions,
)
from interp.errors import PromptError
from interp.explanation_tasks import default_tasks, explanation_examples
from interp.models import LoadedModel
from interp.registry import Analysis, comma_list, register, signature_options
from interp.results import Result, tidy_frame
from interp.viewer import attribution_viewer_html

NOTES = (
    "What is explained: for each prompt, the logit of the answer at the predicting position (the last token of "
    "a decoder prompt, the [MASK] of an encoder prompt), or the logit difference between the answer and a "
    "contrast answer when the task gives one. Tasks: capitals (factual recall against an in-context "
    "distractor), induction (repeated random tokens), sentiment (a review's one-word verdict), agreement "
    "(subject–verb number across an attractor noun), masked (encoders); --prompts explains each prompt's top "
    "prediction instead.",
    "Attention-based scores: attention_last is the last layer's head-mean attention row of the predicting "
    "position; attention_mean the same row averaged over layers; rollout and flow (Abnar & Zuidema 2020) "
    "follow attention through the layers with the residual added as ½·I; top_head is the row of the one head "
    "whose zero-ablation hurts the prediction most (the suite's exact ablation scan, per task).",
    "Feature attributions (Captum, on the token embeddings): saliency ‖∂F/∂x‖, gradient × input, integrated "
    "gradients from the zero embedding (its convergence delta per prompt is in the table), occlusion (the drop "
    "of F when one token is set to the zero embedding) and Kernel SHAP over whole tokens. BOS and other special "
    "tokens keep their embedding and are not scored.",
    "Agreement (the paper's test): Kendall's τ_b and Spearman's ρ between every pair of methods on each "
    "example, over the prompt's scored tokens, on |score|, and the top-3 overlap; the matrices show the mean "
    "over examples (the table adds the spread). Neely et al. found that attention correlates weakly with every "
    "feature attribution and that on a transformer no two methods correlate strongly — and so argued that "
    "rank correlation is a poor test of an explanation.",
    "Faithfulness (ERASER): remove the top-ranked tokens (deletion) or keep only them (insertion) and read the "
    "answer's probability. Comprehensiveness = p(x) − p(x without its top f) and sufficiency = p(x) − p(only its "
    "top f), averaged over f = 10, 20, 30, 50% of the scored tokens: a faithful method has high "
    "comprehensiveness and low sufficiency. 'random' is the mean of random orders: the floor.",
)

REFERENCES = (
    "Neely, Schouten, Bleeker & Lucic, A Song of (Dis)agreement: Evaluating the Evaluation of Explainable "
    "Artificial Intelligence in Natural Language Processing, HHAI 2022 (arXiv 2205.04559).",
    "Abnar & Zuidema, Quantifying Attention Flow in Transformers, ACL 2020.",
    "Sundararajan, Taly & Yan, Axiomatic Attribution for Deep Networks, ICML 2017.",
    "DeYoung et al., ERASER: A Benchmark to Evaluate Rationalized NLP Models, ACL 2020.",
    "Kokhlikyan et al., Captum: A unified and generic model interpretability library for PyTorch, 2020.",
)


def run(lm: LoadedModel, prompts: Sequence[str], *, batch_size: int = 8, progress: bool | None = None, seed: int = 0,
        tasks: str = "", methods: str = "", max_examples: int = 8, steps: int = 32, samples: int = 128,
        top_k: int = 3, random_orders: int = 5) -> Result:
    chosen = check_methods(comma_list(methods, "methods", str) if methods else None)
    task_names = comma_list(tasks, "tasks", str) if tasks else []
    groups: dict[str, tuple[list, list]] = {}
    skipped: dict[str, int] = {}
    if prompts:
        groups["prompts"] = (list(prompts)[:max_examples], [None] * min(len(prompts), max_examples))
    else:
        for task in task_names or default_tasks(lm):
            try:
                examples, skipped[task] = explanation_examples(lm, task, max_examples=max_examples, seed=seed)
            except PromptError as error:  # a shipped task this tokenizer cannot pose (no single-token answers)
                skipped[task] = -1
                if task_names:
                    raise error
                continue
            if not examples:
                skipped[task] = -1
                continue
            groups[task] = ([e.prompt for e in examples], [e.target for e in examples])
    if not groups:
        raise PromptError(f"no task fits {lm.name}: give --tasks with a .jsonl file or --prompts")
    explained, agreements, per_prompt, curves, rows = {}, [], [], [], []
    for task, (task_prompts, targets) in groups.items():
        result = token_attributions(lm, task_prompts, targets, methods=chosen, steps=steps, samples=samples,
                                    max_rows=8 * batch_size, seed=seed)
        explained[task] = result
        agreement = explanation_agreement(result, top_k=top_k)
        agreements.append(agreement.pairs.assign(task=task))
        faith = explanation_faithfulness(lm, result, random_orders=random_orders, seed=seed, max_rows=8 * batch_size)
        per_prompt.append(faith.per_prompt().assign(task=task))
        curves.append(faith.curves.assign(task=task))
        for i, text in enumerate(result.prompts):
            contrast = result.contrasts[i]
            rows.append({"task": task, "prompt": text[-90:], "answer": result.target_text[i],
                         "contrast": "" if contrast is None else lm.token_strings([contrast])[0],
                         "p(answer)": round(float(faith.full_probability[i]), 4), "F(x)": round(float(result.output[i]), 4),
                         "IG delta": round(float(result.convergence_delta[i]), 5),
                         "top head": "" if result.top_head is None else f"{result.top_head[0]}.{result.top_head[1]}"})
    pairs = pd.concat(agreements, ignore_index=True)
    overall = ExplanationAgreement(pairs=pairs, methods=chosen, top_k=top_k, magnitude=True)
    per = pd.concat(per_prompt, ignore_index=True)
    faith_summary = per.drop(columns=["prompt", "task"]).groupby("method", sort=False).agg(["mean", "std"])
    faith_summary = faith_summary.reindex([m for m in (*chosen, RANDOM) if m in faith_summary.index])
    all_curves = pd.concat(curves, ignore_index=True)

    figures = {}
    for statistic, title in (("spearman", "Spearman ρ"), ("kendall", "Kendall τ_b"), ("top_k", f"top-{top_k} overlap")):
        matrix = overall.matrix(statistic)
        figures[f"Agreement: {title} between methods (mean over {len(rows)} examples)"] = (
            plots.matrix_heatmap(matrix.to_numpy(), f"{title} of |token scores|, mean over examples",
                                 x_labels=list(matrix.columns), y_labels=list(matrix.index), x_title="method",
                                 y_title="method", colorscale="RdBu" if statistic != "top_k" else "Viridis",
                                 colorbar_title=title))
    for kind, what in (("deletion", "top tokens removed"), ("insertion", "only the top tokens kept")):
        mean = all_curves[all_curves.kind == kind].groupby(["method", "fraction"], sort=False).probability.mean()
        fractions = sorted(all_curves.fraction.unique())
        figures[f"Faithfulness: {kind} curves"] = plots.line_curves(
            fractions, {m: mean[m].reindex(fractions).to_numpy() for m in (*chosen, RANDOM) if m in mean.index},
            f"p(answer) with the {what}, mean over examples", x_title="fraction of scored tokens",
            y_title="p(answer)")
    figures["Faithfulness: comprehensiveness (higher is better)"] = plots.bars(
        list(faith_summary.index), faith_summary[("comprehensiveness", "mean")].to_numpy(),
        "Comprehensiveness AOPC per method (error bars: sd over examples)", y_title="p(x) − p(x without top f)",
        errors=faith_summary[("comprehensiveness", "std")].fillna(0).to_numpy())

    attention = [m for m in chosen if m in ATTENTION_METHODS]
    feature = [m for m in chosen if m not in ATTENTION_METHODS]
    cross, within = overall.between(attention, feature), overall.between(feature, feature)
    paper = pd.DataFrame([
        {"claim": "attention vs feature attribution: weak", "Neely et al. (DistilBERT)": "weak for every pair",
         "this run (mean Spearman ρ)": _span(cross)},
        {"claim": "feature attribution vs feature attribution on a transformer: no pair strong",
         "Neely et al. (DistilBERT)": "no pair strong", "this run (mean Spearman ρ)": _span(within)},
    ])
    tables = {
        "Explained predictions": pd.DataFrame(rows),
        "Agreement between methods: mean and sd over examples": overall.pair_table().round(3),
        "Faithfulness per method (mean and sd over examples)": faith_summary.round(4).reset_index(),
        "The paper's finding beside this run (the paper's table values could not be checked offline)": paper,
    }
    if any(v != 0 for v in skipped.values()):
        tables["Tasks and rows left out"] = pd.DataFrame(
            [{"task": t, "rows left out": "whole task (answers are not single tokens)" if n < 0 else n}
             for t, n in skipped.items() if n != 0])
    viewer_examples = []
    for task, result in explained.items():
        for i in range(min(3, len(result.prompts))):
            viewer_examples.append({
                "prompt": f"[{task}] {result.prompts[i]}", "tokens": list(result.tokens[i]),
                "predict": result.predict_positions[i], "target": result.target_text[i],
                "scores": {m: [None if np.isnan(v) else float(v) for v in result.scores[m][i]] for m in chosen}})
    sections = {"Token attributions, one method at a time": attribution_viewer_html(
        viewer_examples, chosen, signed=[m for m in chosen if m in SIGNED_METHODS],
        note="Pick a prompt and a method; each token is coloured by its score relative to the largest on that "
             "prompt. The boxed token is the predicting position; dashed tokens are not scored.")}
    frames = [r.frame.assign(task=t) for t, r in explained.items()]
    frames.append(overall.frame)
    frames.append(tidy_frame(per.melt(id_vars=["prompt", "method", "task"], var_name="metric", value_name="value"),
                             extra_columns=("prompt", "method", "task")))
    frame = tidy_frame(pd.concat(frames, ignore_index=True), extra_columns=("prompt", "method", "task"))
    timings = {f"{t}:{k}": v for t, r in explained.items() for k, v in r.seconds.items()}
    first = next(iter(explained.values()))
    return Result(
        analysis="explanation-agreement", frame=frame, figures=figures, tables=tables, notes=NOTES,
        references=REFERENCES, sections=sections,
        metadata={"parameters": {**first.params, "tasks": list(groups), "max_examples": max_examples, "top_k": top_k,
                                 "random_orders": random_orders, "agreement_on": "|score|"},
                  "summary": {"examples": len(rows), "attention_vs_feature_spearman": _span(cross),
                              "feature_vs_feature_spearman": _span(within),
                              "most_comprehensive": str(faith_summary[("comprehensiveness", "mean")].idxmax()),
                              "top_heads": {t: r.top_head for t, r in explained.items()}},
                  "timings": timings},
    )


def _span(values: np.ndarray) -> str:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return "—"
    return f"{finite.mean():.2f} (range {finite.min():.2f} to {finite.max():.2f})"


register(Analysis(
    name="explanation-agreement",
    summary="is attention an explanation? attention vs gradient token attributions: agreement and faithfulness",
    run=run,
    default_prompts=None,
    options=signature_options(run, {
        "tasks": (str, "comma list of capitals, induction, sentiment, agreement (decoders), masked (encoders), or a "
                       ".jsonl file of prompt/target/contrast rows (default: every task that fits the model)"),
        "methods": (str, f"comma list of {', '.join(METHODS)} (default all)"),
        "max_examples": (int, "examples per task"),
        "steps": (int, "integrated-gradients points (Gauss–Legendre)"),
        "samples": (int, "Kernel SHAP coalitions per example"),
        "top_k": (int, "k of the top-k overlap"),
        "random_orders": (int, "random rankings averaged for the faithfulness floor"),
    }),
))
