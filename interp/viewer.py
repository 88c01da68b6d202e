"""Token-level attention viewer and the head-atlas page: plain HTML, one small inline script, no network.

Pick a head (select boxes, or ``[`` / ``]``), hover or click a token (or Tab to the tokens and move with the
arrow keys) and see where it attends (its row of the pattern, blue) or what attends to it (its column,
orange): weights are shown as colour intensity, as a number under every token, as the top weights in a
side table and in a query × key matrix. The same viewer is used by

* :func:`attention_viewer_html` (one prompt) and :func:`examples_viewer_html` (several);
* :func:`show_attention` (Python and notebooks: ``interp.show_attention("tiny-gpt2", "Hello", layer=1, head=0)``);
* :func:`attention_section` (the "Attention, token by token" section of the ``attention-sinks`` and
  ``attention-sparsity`` reports);
* :func:`render_atlas_page` / :func:`atlas_section_html` (the head atlas: a layer × head grid coloured by role
  or by a score, a profile card per head and the viewer following the selected head).

Safety: prompts and tokens reach the page only as JSON inside ``<script type="application/json">`` with
``<``, ``>`` and ``&`` written as ``\\u003c`` ``\\u003e`` ``\\u0026`` (no prompt can close the element), and the
script puts them into the page with ``textContent`` only. Titles are HTML-escaped. The script, its CSS and
the data are inlined: nothing is loaded from the network. Attention weights are stored to 3 decimals
(integers in thousandths, trailing zeros of a row left out); head-atlas scores keep full precision.

Examples:
    >>> from interp.viewer import attention_viewer_html
    >>> html = attention_viewer_html(["<bos>", "Hi", "<b>"], [[[[1, 0, 0], [0.5, 0.5, 0], [0.2, 0.3, 0.5]]]])
    >>> "<b>" in html, "\\\\u003cb\\\\u003e" in html
    (False, True)
"""

from __future__ import annotations

import html
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from interp.errors import OptionError, PromptError

#: Attention weights are stored as integers in units of 1 / SCALE (three decimals).
SCALE = 1000
#: Largest number of stored weights a report's viewer section holds (about 3 MB of page); beyond it the
#: section keeps fewer prompts, then fewer tokens.
REPORT_MAX_VALUES = 600_000
#: show_attention keeps every layer's heads up to this many stored weights, else only the asked layer's.
SHOW_MAX_VALUES = 2_000_000
#: Colours of the atlas roles (labels not listed get one from FALLBACK_COLOURS).
ROLE_COLOURS: dict[str, str] = {
    "sink": "#4c4c4c",
    "previous-token": "#1f77b4",
    "duplicate-token": "#17becf",
    "induction": "#d62728",
    "copying": "#2ca02c",
    "copy-suppression": "#9467bd",
    "successor": "#ff7f0e",
    "local": "#bcbd22",
    "positional": "#bcbd22",
    "local/positional": "#bcbd22",
    "diffuse": "#c7c7c7",
}
#: Short names shown in the atlas grid's cells (other labels: their initials).
ROLE_ABBREVIATIONS: dict[str, str] = {
    "sink": "S", "previous-token": "PT", "duplicate-token": "DT", "induction": "IND", "copying": "CP",
    "copy-suppression": "CS", "successor": "SUC", "local": "LOC", "positional": "POS", "local/positional": "LP",
    "diffuse": "DIF",
}
FALLBACK_COLOURS = ("#8c564b", "#e377c2", "#7f7f7f", "#aec7e8", "#98df8a", "#ffbb78", "#c5b0d5", "#f7b6d2")
ATLAS_KEYS = ("model", "n_layers", "n_heads", "metrics", "scores", "nulls", "labels", "confidence", "thresholds",
              "partners", "importance", "ships", "examples")


# ----------------------------------------------------------------------------------------------------
# Escaping and data
# ----------------------------------------------------------------------------------------------------
@cache
def _asset(name: str) -> str:
    return (resources.files("interp") / "report_assets" / name).read_text(encoding="utf-8")


def safe_json(data: Any) -> str:
    """JSON that is safe inside any ``<script>`` element: no ``<``, ``>`` or ``&`` survives, NaN is refused."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _json_script(data: Any, cls: str) -> str:
    return f'<script type="application/json" class="{cls}">{safe_json(data)}</script>'


def jsonable(value: Any) -> Any:
    """Tensors, arrays and numpy scalars as plain Python; NaN and ±inf as None (shown as "—")."""
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)


def _matrix(patterns: Any, layer: int, head: int, n_tokens: int) -> np.ndarray:
    try:
        inner = patterns[layer][head]
    except (IndexError, KeyError, TypeError):
        raise OptionError(f"no attention pattern for layer {layer}, head {head}") from None
    if hasattr(inner, "detach"):
        inner = inner.detach().float().cpu().numpy()
    matrix = np.asarray(inner, dtype=np.float64)
    if matrix.shape != (n_tokens, n_tokens):
        raise OptionError(f"the pattern of layer {layer}, head {head} has shape {matrix.shape}: expected "
                          f"[query, key] = ({n_tokens}, {n_tokens}) for {n_tokens} tokens")
    return matrix


def _all_heads(patterns: Any) -> list[tuple[int, int]]:
    layers = sorted(patterns) if isinstance(patterns, Mapping) else range(len(patterns))
    return [(int(layer), head) for layer in layers for head in range(len(patterns[layer]))]


def _quantised(matrix: np.ndarray) -> list[list[int]]:
    """Rows as integers in thousandths, trailing zeros left out (a causal row keeps only its prefix)."""
    values = np.rint(np.clip(matrix, 0.0, 1.0) * SCALE).astype(np.int64)
    rows = []
    for row in values:
        nonzero = np.flatnonzero(row)
        rows.append(row[: nonzero[-1] + 1].tolist() if nonzero.size else [])
    return rows


def _viewer_payload(examples: Sequence[Mapping[str, Any]], heads: Sequence[tuple[int, int]] | None,
                    initial: tuple[int, int] | None) -> dict[str, Any]:
    if not examples:
        raise OptionError("the attention viewer needs at least one example prompt")
    if heads is None:
        heads = _all_heads(examples[0]["patterns"])
    heads = [(int(layer), int(head)) for layer, head in heads]
    if not heads:
        raise OptionError("the attention viewer needs at least one (layer, head)")
    out_examples, patterns = [], []
    for example in examples:
        tokens = [str(t) for t in example["tokens"]]
        if not tokens:
            raise PromptError("an example prompt has no tokens")
        causal, rows = True, []
        for layer, head in heads:
            matrix = _matrix(example["patterns"], layer, head, len(tokens))
            causal = causal and bool(np.abs(np.triu(matrix, 1)).max(initial=0.0) < 1e-9)
            rows.append(_quantised(matrix))
        prompt = example.get("prompt")
        out_examples.append({"prompt": str(prompt) if prompt is not None else "".join(tokens), "tokens": tokens,
                             "causal": causal})
        patterns.append(rows)
    start = 0
    if initial is not None:
        wanted = (int(initial[0]), int(initial[1]))
        if wanted not in heads:
            raise OptionError(f"layer {wanted[0]}, head {wanted[1]} is not among the heads shown")
        start = heads.index(wanted)
    return {"scale": SCALE, "examples": out_examples, "heads": [list(h) for h in heads], "patterns": patterns,
            "initial": [0, start]}


def examples_viewer_html(examples: Sequence[Mapping[str, Any]], *, heads: Sequence[tuple[int, int]] | None = None,
                         title: str | None = None, element_id: str | None = None,
                         initial: tuple[int, int] | None = None, note: str | None = None,
                         include_style: bool = True) -> str:
    """The viewer over several prompts: ``examples`` are ``{"prompt", "tokens", "patterns"}`` mappings with
    ``patterns[layer][head]`` a ``[query][key]`` matrix (nested lists, arrays or tensors; a mapping from layer
    to ``[head][q][k]`` holds a subset of layers). ``heads`` limits and orders the ``(layer, head)`` pairs
    offered; ``initial`` is the head shown first. Returns an HTML fragment with its CSS and script inlined.
    """
    payload = _viewer_payload(examples, heads, initial)
    element = element_id or f"interp-attn-{uuid.uuid4().hex[:10]}"
    parts = [f"<style>{_asset('attention_viewer.css')}</style>" if include_style else "",
             f'<div class="interp-attn" id="{html.escape(element, quote=True)}">']
    if title:
        parts.append(f'<div class="ia-title">{html.escape(title)}</div>')
    if note:
        parts.append(f'<p class="ia-note">{html.escape(note)}</p>')
    parts.append(_json_script(payload, "interp-attn-data"))
    parts.append('<div class="ia-body"></div></div>')
    parts.append(f"<script>{_asset('attention_viewer.js')}</script>")
    return "".join(parts)


def attention_viewer_html(tokens: Sequence[str], patterns: Any, *, heads: Sequence[tuple[int, int]] | None = None,
                          title: str | None = None, element_id: str | None = None, prompt: str | None = None,
                          initial: tuple[int, int] | None = None) -> str:
    """A token-level attention viewer for one prompt (an HTML fragment with its CSS and script inlined).

    Args:
        tokens: the token strings, one per position (escaped in the page: any text is safe).
        patterns: ``[layer][head][query][key]`` attention weights (nested lists, an array or a tensor);
            causal (zero above the diagonal) or bidirectional.
        heads: the ``(layer, head)`` pairs offered (default every head); the first one is shown first.
        title: a heading shown above the viewer; ``element_id``: the viewer element's id (default random).
        prompt: the prompt text shown in the prompt chooser (default the joined tokens).
        initial: the ``(layer, head)`` shown first (default the first of ``heads``).

    Examples:
        >>> page = attention_viewer_html(["a", "b"], [[[[1.0, 0.0], [0.25, 0.75]]]], title="demo")
        >>> page.count('class="interp-attn"')
        1
    """
    if hasattr(patterns, "detach"):
        patterns = patterns.detach().float().cpu().numpy()
    example = {"prompt": prompt, "tokens": list(tokens), "patterns": patterns}
    start = initial if initial is not None else ((heads[0][0], heads[0][1]) if heads else None)
    return examples_viewer_html([example], heads=heads, title=title, element_id=element_id, initial=start)


def attribution_viewer_html(examples: Sequence[Mapping[str, Any]], methods: Sequence[str], *,
                            signed: Sequence[str] = (), title: str | None = None, note: str | None = None,
                            element_id: str | None = None) -> str:
    """A token-level viewer of attributions, one method at a time (an HTML fragment, CSS and script inlined).

    ``examples`` are ``{"prompt", "tokens", "predict", "target", "scores": {method: [value or None]}}``
    mappings (one value per token; None for unscored special tokens). Tokens and prompts are escaped by
    the browser (``textContent``); the data travels as :func:`safe_json`.

    Examples:
        >>> page = attribution_viewer_html([{"prompt": "<b>", "tokens": ["<b>"], "predict": 0, "target": "x",
        ...                                   "scores": {"saliency": [1.0]}}], ["saliency"])
        >>> "<b>" in page, page.count('class="interp-tattr"')
        (False, 1)
    """
    payload = {"methods": list(methods), "signed": list(signed), "examples": jsonable(list(examples))}
    element = element_id or f"interp-tattr-{uuid.uuid4().hex[:10]}"
    parts = [f"<style>{_asset('token_attribution.css')}</style>",
             f'<div class="interp-tattr" id="{html.escape(element, quote=True)}">']
    if title:
        parts.append(f'<div class="ta-title">{html.escape(title)}</div>')
    if note:
        parts.append(f'<p class="ta-note">{html.escape(note)}</p>')
    parts.append(_json_script(payload, "interp-tattr-data"))
    parts.append('<div class="ta-body"></div></div>')
    parts.append(f"<script>{_asset('token_attribution.js')}</script>")
    return "".join(parts)


# ----------------------------------------------------------------------------------------------------
# Capturing patterns from a model
# ----------------------------------------------------------------------------------------------------
def _stored_values(n_heads: int, n_tokens: int, causal: bool) -> int:
    return n_heads * (n_tokens * (n_tokens + 1) // 2 if causal else n_tokens * n_tokens)


def capture_examples(lm: Any, prompts: Sequence[str], *, max_prompts: int = 3, max_tokens: int | None = 48,
                     layers: Sequence[int] | None = None, max_values: int | None = REPORT_MAX_VALUES
                     ) -> list[dict[str, Any]]:
    """Attention patterns of ``lm`` on the first ``max_prompts`` prompts (cut to ``max_tokens``, BOS included).

    Returns ``[{"prompt", "tokens", "patterns"}]`` with ``patterns`` a mapping ``layer -> [head, q, k]``
    float array over the real tokens of that prompt (padding removed). With ``max_values``, prompts and then
    tokens are dropped until the stored weights fit (never below one prompt of 8 tokens).
    """
    texts = [str(p) for p in prompts if str(p).strip()][:max_prompts]
    if not texts:
        raise PromptError("the prompt set is empty: give at least one non-empty prompt")
    chosen = list(range(lm.n_layers)) if layers is None else [int(layer) for layer in layers]
    heads = len(chosen) * lm.n_heads
    causal = not lm.is_encoder
    rows = [lm.encode(t)[:max_tokens] if max_tokens else lm.encode(t) for t in texts]
    if max_values is not None:
        while len(rows) > 1 and sum(_stored_values(heads, len(r), causal) for r in rows) > max_values:
            rows.pop()
            texts.pop()
        while len(rows[0]) > 8 and _stored_values(heads, len(rows[0]), causal) > max_values:
            rows[0] = rows[0][:-1]
    batch = lm.pad(rows)
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in chosen]
    captured = lm.capture(batch, names)
    examples = []
    for index, (text, row) in enumerate(zip(texts, rows, strict=True)):
        n = len(row)
        patterns = {layer: captured[name][index, :, :n, :n].float().cpu().numpy()
                    for layer, name in zip(chosen, names, strict=True)}
        examples.append({"prompt": text, "tokens": lm.token_strings(row), "patterns": patterns})
    return examples


def attention_section(lm: Any, prompts: Sequence[str], *, max_prompts: int = 3, max_tokens: int = 48,
                      initial: tuple[int, int] | None = None, max_values: int = REPORT_MAX_VALUES) -> str:
    """The "Attention, token by token" report section: the viewer on the first few analysed prompts.

    Put it in a :class:`~interp.results.Result`'s ``sections`` (``{"Attention, token by token": html}``).
    """
    examples = capture_examples(lm, prompts, max_prompts=max_prompts, max_tokens=max_tokens, max_values=max_values)
    lengths = ", ".join(str(len(e["tokens"])) for e in examples)
    note = (f"The first {len(examples)} analysed prompt(s), cut to at most {max_tokens} tokens ({lengths} tokens, "
            f"first token included), every layer and head of {lm.name}. Weights are stored to 3 decimals.")
    return examples_viewer_html(examples, initial=initial, note=note)


# ----------------------------------------------------------------------------------------------------
# Pages
# ----------------------------------------------------------------------------------------------------
_PAGE_STYLE = ("body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem auto;"
               "max-width:1300px;color:#1d1d1f;line-height:1.4;padding:0 1rem}h1{font-size:1.5rem}"
               ".small{color:#666;font-size:.8rem}")


def page(title: str, body_html: str) -> str:
    """A whole self-contained HTML page around trusted ``body_html`` (``title`` is escaped)."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_PAGE_STYLE}</style></head>\n<body>\n"
            f"{body_html}\n</body></html>\n")


def _grid(value: Any, n_layers: int, n_heads: int, what: str) -> list[list[Any]]:
    grid = jsonable(value)
    if not isinstance(grid, list) or len(grid) != n_layers or any(
            not isinstance(row, list) or len(row) != n_heads for row in grid):
        raise OptionError(f"atlas {what} must be a [layer][head] grid of {n_layers} × {n_heads}")
    return grid


def _palette(labels: Sequence[str]) -> dict[str, str]:
    out, spare = {}, iter(FALLBACK_COLOURS * (1 + len(labels) // len(FALLBACK_COLOURS)))
    for label in labels:
        out[label] = ROLE_COLOURS.get(label) or next(spare)
    return out


def _most_confident(labels: list[list[list[str]]], confidence: Mapping[str, list[list[Any]]]) -> tuple[int, int]:
    """The labelled head with the most confident label (the first labelled head without confidences)."""
    best, best_value = (0, 0), None
    for layer, row in enumerate(labels):
        for head, cell in enumerate(row):
            for label in cell:
                grid = confidence.get(label)
                value = grid[layer][head] if grid is not None and grid[layer][head] is not None else 0.0
                if best_value is None or value > best_value:
                    best, best_value = (layer, head), value
    return best


def atlas_payload(atlas: Mapping[str, Any]) -> dict[str, Any]:
    """The atlas dict checked and made JSON-safe for the page (examples left out: the viewer holds them)."""
    missing = [key for key in ATLAS_KEYS if key not in atlas]
    if missing:
        raise OptionError(f"the atlas dict lacks {missing}: expected the keys {list(ATLAS_KEYS)}")
    n_layers, n_heads = int(atlas["n_layers"]), int(atlas["n_heads"])
    if n_layers < 1 or n_heads < 1:
        raise OptionError(f"the atlas needs at least one layer and one head, got {n_layers} × {n_heads}")
    metrics = [str(m) for m in atlas["metrics"]]
    scores = {m: _grid(atlas["scores"][m], n_layers, n_heads, f"scores[{m!r}]") for m in metrics}
    nulls_in = atlas.get("nulls") or {}
    nulls = {m: _grid(nulls_in[m], n_layers, n_heads, f"nulls[{m!r}]") for m in metrics if m in nulls_in}
    labels = _grid(atlas["labels"], n_layers, n_heads, "labels")
    labels = [[[str(x) for x in (cell or [])] for cell in row] for row in labels]
    confidence = {str(k): _grid(v, n_layers, n_heads, f"confidence[{k!r}]")
                  for k, v in (atlas.get("confidence") or {}).items()}
    partners_in = atlas.get("partners")
    partners = (_grid(partners_in, n_layers, n_heads, "partners") if partners_in is not None
                else [[[] for _ in range(n_heads)] for _ in range(n_layers)])
    partners = [[[{"layer": int(p["layer"]), "head": int(p["head"]), "mode": str(p["mode"]),
                   "score": jsonable(p.get("score"))} for p in (cell or [])] for cell in row] for row in partners]
    seen = [label for label in ROLE_COLOURS if any(label in cell for row in labels for cell in row)]
    seen += sorted({x for row in labels for cell in row for x in cell} - set(seen))
    initial = atlas.get("initial")
    if initial is None:
        initial = _most_confident(labels, confidence)
    return {
        "model": str(atlas["model"]), "n_layers": n_layers, "n_heads": n_heads, "metrics": metrics,
        "scores": scores, "nulls": nulls, "labels": labels, "confidence": confidence,
        "thresholds": {str(k): jsonable(v) for k, v in (atlas.get("thresholds") or {}).items()},
        "partners": partners,
        "importance": _grid(atlas["importance"], n_layers, n_heads, "importance")
        if atlas.get("importance") is not None else None,
        "ships": _grid(atlas["ships"], n_layers, n_heads, "ships") if atlas.get("ships") is not None else None,
        "roles": seen, "palette": _palette(seen), "initial": [int(initial[0]), int(initial[1])],
        "abbreviations": {label: ROLE_ABBREVIATIONS[label] for label in seen if label in ROLE_ABBREVIATIONS},
    }


def atlas_section_html(atlas: Mapping[str, Any], *, element_id: str | None = None) -> str:
    """The head atlas as an HTML fragment (grid, card, viewer; CSS and scripts inlined) for a report section.

    ``atlas`` follows the head-atlas contract (see :data:`ATLAS_KEYS` and :func:`render_atlas_page`).
    """
    payload = atlas_payload(atlas)
    element = html.escape(element_id or f"interp-atlas-{uuid.uuid4().hex[:10]}", quote=True)
    examples = atlas.get("examples") or []
    start = tuple(payload["initial"])
    if examples:
        viewer = examples_viewer_html(examples, initial=start, note=(
            f"{len(examples)} example prompt(s); the viewer follows the head selected in the grid (or pick one here)."))
    else:
        viewer = '<p class="ha-small">No example prompts in this atlas: the token-level viewer is not shown.</p>'
    return (
        f"<style>{_asset('head_atlas.css')}</style>"
        f'<div class="interp-atlas" id="{element}">{_json_script(payload, "interp-atlas-data")}'
        '<div class="ha-top"><div class="ha-left"><div class="ha-controls"></div><div class="ha-legend"></div>'
        '<div class="ha-grid-box"></div>'
        '<p class="ha-small">Hover a cell to preview its head; click or press Enter to select it. Tab into the grid '
        "and move with the arrow keys (Home/End, PageUp/PageDown jump).</p></div>"
        '<section class="ha-card" aria-live="polite" aria-label="profile of the head"></section></div>'
        f'<h3 class="ha-viewer-title">Attention, token by token</h3>{viewer}</div>'
        f"<script>{_asset('head_atlas.js')}</script>"
    )


def render_atlas_page(atlas: Mapping[str, Any]) -> str:
    """A self-contained head-atlas page from the atlas dict.

    The dict (``Result.metadata["atlas"]`` of the ``head-atlas`` analysis): ``model``, ``n_layers``,
    ``n_heads``, ``metrics`` (names), ``scores`` and ``nulls`` (``{metric: [[value per head] per layer]}``),
    ``labels`` (``[[[label, ...] per head] per layer]``), ``confidence`` (``{label: [[...]]}``),
    ``thresholds`` (``{metric: float}``), ``partners`` (``[[[{"layer", "head", "mode": "K"|"Q"|"V",
    "score"}, ...] per head] per layer]``), ``importance`` and ``ships`` (``[[...]]`` or None), ``examples``
    (``[{"prompt", "tokens", "patterns": [layer][head][q][k]}]``); optionally ``initial`` (``[layer, head]``).
    The card shows the values of ``scores`` at full precision (its cells carry them in ``data-value``).
    For a report with provenance, put :func:`atlas_section_html` in ``Result.sections`` instead.
    """
    name = str(atlas.get("model", ""))
    body = (f"<h1>Head atlas — {html.escape(name)}</h1>"
            f'<p class="small">{int(atlas.get("n_layers", 0))} layers × {int(atlas.get("n_heads", 0))} heads; '
            "every score beside its null, the labels it earns, and each head's attention token by token.</p>"
            f"{atlas_section_html(atlas)}")
    return page(f"Head atlas — {name}", body)


# ----------------------------------------------------------------------------------------------------
# show_attention
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttentionView:
    """What :func:`show_attention` returns: shows itself in notebooks, ``.html`` is a whole page, ``.save(path)``."""

    fragment: str
    model: str
    layer: int
    head: int
    n_tokens: tuple[int, ...]

    @property
    def html(self) -> str:
        """A whole self-contained HTML page."""
        return page(f"Attention of {self.model}, layer {self.layer} head {self.head}", self.fragment)

    def save(self, path: str | Path) -> Path:
        """Write the page atomically; returns the path."""
        from interp.results import atomic_write

        return atomic_write(path, self.html)

    def _repr_html_(self) -> str:
        return self.fragment

    def __repr__(self) -> str:
        return f"AttentionView(model={self.model!r}, layer={self.layer}, head={self.head}, tokens={list(self.n_tokens)})"


def _index(what: str, value: Any, size: int, model: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise OptionError(f"{what} must be a whole number from 0 to {size - 1}, got {value!r}")
    if not 0 <= int(value) < size:
        raise OptionError(f"{what} {int(value)} is out of range: {model} has {what}s 0 to {size - 1}")
    return int(value)


def show_attention(model: Any, prompt: str | Sequence[str], *, layer: int = 0, head: int = 0,
                   max_tokens: int | None = None, backend: str | None = None) -> AttentionView:
    """Look at a head's attention over a prompt, token by token (notebooks render it; ``.save(path)`` writes it).

    Args:
        model: a model name (``"gemma-3-270m"``, ``"tiny-gpt2"``, ...) or a loaded model.
        prompt: the text (or a few texts, chosen in the viewer); BOS is prepended as everywhere in the suite.
        layer, head: the head shown first; every head can be picked in the viewer (only the given layer's
            heads when all of them would hold more than ``SHOW_MAX_VALUES`` weights).
        max_tokens: cut each prompt to this many tokens (BOS included); default: the whole prompt.
        backend: how a named model is loaded (see :func:`interp.load_model`).

    Raises:
        PromptError: an empty prompt, or one longer than the model's context.
        OptionError: ``layer`` or ``head`` out of range, ``max_tokens`` below 1.

    Examples:
        >>> import interp
        >>> view = interp.show_attention("tiny-gpt2", "The cat sat on the mat.", layer=1, head=2)
        >>> view
        AttentionView(model='tiny-gpt2', layer=1, head=2, tokens=[24])
    """
    from interp.models import LoadedModel, load_model

    texts = [prompt] if isinstance(prompt, str) else list(prompt) if prompt is not None else []
    if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
        raise PromptError("the prompt is empty: give some text to look at")
    if max_tokens is not None and (isinstance(max_tokens, bool) or int(max_tokens) < 1):
        raise OptionError(f"max_tokens must be at least 1, got {max_tokens!r}")
    lm = model if isinstance(model, LoadedModel) else load_model(model, backend=backend)
    layer = _index("layer", layer, lm.n_layers, lm.name)
    head = _index("head", head, lm.n_heads, lm.name)
    rows = [lm.encode(t)[:max_tokens] if max_tokens else lm.encode(t) for t in texts]
    lm.pad(rows)  # a prompt longer than the context fails here, in one line
    causal = not lm.is_encoder
    total = sum(_stored_values(lm.n_layers * lm.n_heads, len(r), causal) for r in rows)
    layers = None if total <= SHOW_MAX_VALUES else [layer]
    examples = capture_examples(lm, texts, max_prompts=len(texts), max_tokens=max_tokens, layers=layers,
                                max_values=None)
    title = f"{lm.name}: attention, token by token"
    fragment = examples_viewer_html(examples, initial=(layer, head), title=title)
    return AttentionView(fragment=fragment, model=lm.name, layer=layer, head=head,
                         n_tokens=tuple(len(e["tokens"]) for e in examples))
