"""A head-atlas dict for page tests, independent of the atlas computation.

Scores, nulls, labels, confidences, partners, importance and Ships scores are made up (seeded, with a few
distinctive values); the attention patterns of the examples are real, captured from the model with
``lm.capture``. The dict follows the contract of :func:`interp.viewer.render_atlas_page`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

METRICS = ("previous_token", "duplicate_token", "induction", "bos_attention", "ov_copying", "successor")
LABELS = ("previous-token", "duplicate-token", "induction", "sink", "copying", "copy-suppression", "successor")


def real_examples(lm: Any, prompts: Sequence[str], max_tokens: int = 48) -> list[dict[str, Any]]:
    """``[{"prompt", "tokens", "patterns": [layer][head][q][k] nested lists}]`` from ``lm.capture``."""
    examples = []
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(lm.n_layers)]
    for prompt in prompts:
        ids = lm.encode(prompt)[:max_tokens]
        captured = lm.capture(lm.pad([ids]), names)
        patterns = [captured[name][0].float().numpy().tolist() for name in names]
        examples.append({"prompt": prompt, "tokens": lm.token_strings(ids), "patterns": patterns})
    return examples


def made_up_atlas(lm: Any, prompts: Sequence[str], *, seed: int = 0, max_tokens: int = 48,
                  model_name: str | None = None) -> dict[str, Any]:
    """An atlas dict for ``lm``: made-up scores and labels, real attention patterns on ``prompts``."""
    rng = np.random.default_rng(seed)
    n_layers, n_heads = lm.n_layers, lm.n_heads
    shape = (n_layers, n_heads)
    scores = {m: rng.uniform(-0.2, 1.0, shape) for m in METRICS}
    scores["ov_copying"] = rng.uniform(-1.0, 1.0, shape)
    scores["induction"][n_layers - 1, 1 % n_heads] = 0.123456789012  # full precision must reach the card
    scores["successor"][0, 0] = float("nan")  # not measured: shown as a dash
    nulls = {m: rng.uniform(0.0, 0.1, shape) for m in METRICS}
    labels: list[list[list[str]]] = [[[] for _ in range(n_heads)] for _ in range(n_layers)]
    labels[0][0] = ["previous-token"]
    labels[n_layers - 1][1 % n_heads] = ["induction", "copying"]
    labels[0][n_heads - 1] = ["sink"]
    labels[n_layers - 1][0] = ["copy-suppression"]
    confidence = {label: rng.uniform(0.5, 1.0, shape) for label in LABELS}
    partners = [[[{"layer": (layer + 1) % n_layers, "head": (head + 1) % n_heads, "mode": mode,
                   "score": float(rng.uniform(0, 1))} for mode in ("K", "Q", "V")[: 1 + (layer + head) % 3]]
                 for head in range(n_heads)] for layer in range(n_layers)]
    return {
        "model": model_name or lm.name,
        "n_layers": n_layers,
        "n_heads": n_heads,
        "metrics": list(METRICS),
        "scores": {m: v.tolist() for m, v in scores.items()},
        "nulls": {m: v.tolist() for m, v in nulls.items()},
        "labels": labels,
        "confidence": {k: v.tolist() for k, v in confidence.items()},
        "thresholds": {m: 0.4 for m in METRICS},
        "partners": partners,
        "importance": rng.uniform(0, 2, shape).tolist(),
        "ships": None,
        "examples": real_examples(lm, prompts, max_tokens=max_tokens),
    }


def synthetic_atlas(n_layers: int, n_heads: int, n_examples: int, n_tokens: int, seed: int = 0) -> dict[str, Any]:
    """A model-free atlas of a given shape (random causal patterns), for page-size measurements."""
    rng = np.random.default_rng(seed)
    shape = (n_layers, n_heads)
    examples = []
    for index in range(n_examples):
        logits = rng.normal(0, 2, (n_layers, n_heads, n_tokens, n_tokens))
        logits[..., np.triu_indices(n_tokens, 1)[0], np.triu_indices(n_tokens, 1)[1]] = -np.inf
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        examples.append({"prompt": f"example {index}", "tokens": [f" t{i}" for i in range(n_tokens)],
                         "patterns": weights.tolist()})
    return {
        "model": "synthetic", "n_layers": n_layers, "n_heads": n_heads, "metrics": list(METRICS),
        "scores": {m: rng.uniform(0, 1, shape).tolist() for m in METRICS},
        "nulls": {m: rng.uniform(0, 0.1, shape).tolist() for m in METRICS},
        "labels": [[["induction"] if (layer + head) % 7 == 0 else [] for head in range(n_heads)]
                   for layer in range(n_layers)],
        "confidence": {label: rng.uniform(0.5, 1, shape).tolist() for label in LABELS},
        "thresholds": {m: 0.4 for m in METRICS},
        "partners": [[[{"layer": layer, "head": head, "mode": "K", "score": 0.5}] for head in range(n_heads)]
                     for layer in range(n_layers)],
        "importance": rng.uniform(0, 1, shape).tolist(), "ships": rng.uniform(0, 1, shape).tolist(),
        "examples": examples,
    }
