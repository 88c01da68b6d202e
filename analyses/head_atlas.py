"""``head-atlas``: what every head does — detector scores against their nulls, roles, importance, Ships and
composition partners, on one interactive page (``interp run head-atlas --model NAME``)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from interp.attribution.head_atlas import DEFAULT_THRESHOLDS, ROLE_RULES, ROLES, head_atlas
from interp.data import default_prompts
from interp.models import LoadedModel
from interp.registry import Analysis, register, signature_options
from interp.results import Result
from interp.viewer import atlas_section_html

NOTES = (
    "The atlas gives every attention head a profile: detector scores, each against its null, the roles they "
    "add up to, and what the other analyses say about the head (ablation importance on the induction task: "
    "how much zero-ablating it lowers the logit difference of the answer, or raises the loss; "
    "Ships where the model has a chat template, and its top Q/K/V-composition partners). Click a head in the "
    "grid for its card; the attention viewer shows its pattern on example prompts token by token.",
    "Previous-token, duplicate-token and induction scores are TransformerLens's detect_head scores (same "
    "detection patterns, exclude_bos / exclude_current_token and 'mul' or 'abs' error measure), computed in "
    "one streaming pass. Previous-token reads the prompts; induction and duplicate-token read seeded repeated "
    "random tokens (BOS, R, R), where every query of the second copy has an earlier copy; the natural-text "
    "versions are reported too (induction_text, duplicate_token_text). First-token attention α₀, attention to "
    "the current token, the mean distance of the attention that does not go to the first token, and the "
    "attention entropy (1 = uniform) come from the same pass.",
    "Weight-only scores: the OV copying score is Σλ/Σ|λ| over the eigenvalues of the full OV circuit "
    "W_E·W_V·W_O·W_U on word-like tokens (Elhage et al.; +1 = copies what it attends to, −1 = suppresses it); "
    "the successor score is the share of ordinal tokens (1→2, Monday→Tuesday, January→February, A→B …) whose "
    "successor the head's OV circuit ranks first among the sequence's tokens (Gould et al.).",
    "Nulls: attention scores are compared with a head that has no query–key weights (uniform attention over the "
    "visible keys); induction and duplicate-token also with the head's own score on the same sequences with the "
    "first copy replaced by fresh tokens (a purely positional head scores the same there). Weight scores are "
    "compared with the same score after shuffling which token goes in (mean + 3 sd of the shuffled |score|). "
    "A role is claimed only when the score passes its threshold and sits clearly beyond its null: its "
    "confidence — how far the score sits from its null toward a perfect score — must reach min-confidence "
    "(default 0.1).",
)

REFERENCES = (
    "TransformerLens, head_detector.detect_head (previous-token, duplicate-token and induction detection patterns).",
    "Elhage et al., A Mathematical Framework for Transformer Circuits, Transformer Circuits Thread 2021 (OV circuit "
    "eigenvalues, composition scores).",
    "Olsson et al., In-context Learning and Induction Heads, Transformer Circuits Thread 2022.",
    "Gould, Ong, Ogden & Conmy, Successor Heads: Recurring, Interpretable Attention Heads In The Wild, 2023.",
    "McDougall et al., Copy Suppression: Comprehensively Understanding an Attention Head, 2023.",
    "Gu et al., When Attention Sink Emerges in Language Models: An Empirical View, ICLR 2025.",
    "Zhou et al., On the Role of Attention Heads in Large Language Model Safety (Ships), ICLR 2025.",
)

def run(
    lm: LoadedModel,
    prompts: Sequence[str],
    *,
    batch_size: int = 8,
    progress: bool | None = None,
    seed: int = 0,
    max_tokens: int = 64,
    include_bos: bool = False,
    exclude_current_token: bool = False,
    error_measure: str = "mul",
    induction_sequences: int = 8,
    half_length: int = 20,
    ov_tokens: int = 4096,
    ov_null_samples: int = 6,
    thresholds: str = "",
    roles: str = "all",
    min_confidence: float = 0.1,
    importance_sequences: int = 3,
    importance_half_length: int = 10,
    importance_metric: str = "logit_diff",
    ships_requests: int = 2,
    partners: int = 3,
    examples: int = 4,
    example_tokens: int = 48,
) -> Result:
    atlas = head_atlas(
        lm, prompts, max_tokens=max_tokens, exclude_bos=not include_bos, exclude_current_token=exclude_current_token,
        error_measure=error_measure, induction_sequences=induction_sequences, half_length=half_length,
        ov_tokens=ov_tokens, ov_null_samples=ov_null_samples, thresholds=thresholds, roles=roles, min_confidence=min_confidence,
        importance=importance_sequences > 0, importance_sequences=max(importance_sequences, 1),
        importance_half_length=importance_half_length, importance_metric=importance_metric,
        ships_requests=ships_requests, partners=partners, n_examples=examples, example_tokens=example_tokens,
        batch_size=batch_size, seed=seed, progress=progress)
    frame = atlas.to_frame()
    data = atlas.to_json()
    counts = atlas.role_counts()
    total = atlas.n_layers * atlas.n_heads
    summary = pd.DataFrame({
        "role": list(counts) + ["(no role)", "(no role but sink / diffuse)"],
        "heads": list(counts.values()) + [round(atlas.unexplained_share() * total),
                                          round(atlas.unexplained_share(("sink", "diffuse")) * total)],
    })
    summary["share of heads"] = (summary["heads"] / total).round(3)
    rules = pd.DataFrame([dict(role=r.role, metric=r.metric,
                               rule={"above": "≥ ", "below": "≤ ", "negative": "≤ −"}[r.direction]
                               + str(atlas.thresholds[r.metric])
                               + (f" and confidence ≥ {atlas.params['min_confidence']}" if r.role != "diffuse" else ""),
                               meaning=r.meaning, assigned=r.role in atlas.roles) for r in ROLE_RULES])
    tables = {
        "Heads per role": summary,
        "Roles (every claimed role with its score, null and confidence)": atlas.roles_frame(),
        "Role rules and thresholds": rules,
    }
    if atlas.notes:
        tables["Notes"] = pd.DataFrame({"note": list(atlas.notes)})
    metadata = {
        "atlas": data,
        "parameters": atlas.params,
        "timings": atlas.timings,
        "summary": {"role_counts": counts, "unexplained_share": round(atlas.unexplained_share(), 4),
                    "unexplained_share_ignoring_sink_diffuse": round(atlas.unexplained_share(("sink", "diffuse")), 4)},
        "successor_sequences": atlas.details.get("successor_sequences", {}),
    }
    # The grid, the profile cards and the token-level viewer replace heat maps (no plotly.js on this page).
    return Result(analysis="head-atlas", frame=frame, tables=tables, notes=NOTES + atlas.notes, references=REFERENCES,
                  metadata=metadata, sections={"Head atlas": atlas_section_html(data)})


register(Analysis(
    name="head-atlas",
    summary="what every head does: TL-style detectors against nulls, roles, importance, Ships, partners; one page",
    run=run,
    default_prompts=default_prompts,
    encoder_ok=False,
    options=signature_options(run, {
        "max_tokens": (int, "tokens per prompt (BOS included)"),
        "include_bos": (bool, "score attention to the first token too (detect_head's exclude_bos=False)"),
        "exclude_current_token": (bool, "detect_head's exclude_current_token"),
        "error_measure": (str, "detect_head's error measure: mul or abs"),
        "induction_sequences": (int, "repeated random-token sequences for induction / duplicate-token"),
        "half_length": (int, "length of the repeated random block"),
        "ov_tokens": (int, "word-like tokens in the OV copying score"),
        "ov_null_samples": (int, "shuffles for the OV copying null"),
        "thresholds": (str, "role thresholds, e.g. induction=0.4,previous_token=0.5 (metrics: "
                            + ", ".join(DEFAULT_THRESHOLDS) + ")"),
        "roles": (str, "roles to assign: all or a comma list of " + ", ".join(ROLES)),
        "min_confidence": (float, "a role also needs its score this far from the null toward a perfect score"),
        "importance_sequences": (int, "induction sequences for the ablation-importance join (0 = skip)"),
        "importance_half_length": (int, "length of the repeated block in the importance task"),
        "importance_metric": (str, "logit_diff (answer R[-1] vs a random token) or loss (repeated half)"),
        "ships_requests": (int, "harmful requests for the Ships join (0 = skip; needs a chat template)"),
        "partners": (int, "composition partners per mode (0 = skip)"),
        "examples": (int, "example prompts for the attention viewer (≤ 4)"),
        "example_tokens": (int, "tokens per example prompt (≤ 48)"),
    }),
))
