"""Self-contained HTML reports: plotly.js inlined once, every figure a div, every user string escaped.

Strings that come from prompts, tokens or model names reach the page in three ways, each made safe here:
HTML text (``html.escape``), tables (``DataFrame.to_html(escape=True)``) and figure JSON inside a
``<script>`` (every ``<`` written as ``\\u003c`` so no prompt can close the script tag).

An analysis can add sections it renders itself (``Result.sections``: title -> trusted HTML fragment, e.g.
the head atlas or the token-level attention viewer of :mod:`interp.viewer`); they come after the notes and
before the figures, and the page keeps its provenance (metadata table). plotly.js is inlined only when the
result has figures. In the metadata table a nested mapping larger than ``BULKY_METADATA_CHARS`` characters
(such as the head atlas with its attention patterns) is shown as one summary row, and a long value is cut
to ``MAX_METADATA_CELL`` characters: the whole value stays in ``Result.metadata``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from interp.results import Result

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;
color:#1d1d1f;line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0} td,th{border:1px solid #ddd;padding:.2rem .5rem;
text-align:left;vertical-align:top} th{background:#f5f5f7} .meta td:first-child{font-weight:600;white-space:nowrap}
.note{background:#f8f8fb;border-left:3px solid #7a7aff;padding:.5rem 1rem;margin:.5rem 0}
.figure{margin:1rem 0} .small{color:#666;font-size:.8rem} code{background:#f2f2f2;padding:0 .2rem}
pre{white-space:pre-wrap;background:#f7f7f7;padding:.5rem}
"""


def escape(value: Any) -> str:
    """HTML-escape anything (quotes included)."""
    return html.escape(str(value), quote=True)


def figure_json(figure: Any) -> str:
    """Figure JSON that is safe inside a ``<script>`` element (no ``<`` survives)."""
    text = figure.to_json()
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


#: A nested metadata mapping whose text is longer than this is summarised in one row of the report's table.
BULKY_METADATA_CHARS = 20_000
#: Longest value text shown in one cell of the report's metadata table.
MAX_METADATA_CELL = 600


def _cell(text: str) -> str:
    if len(text) <= MAX_METADATA_CELL:
        return text
    return f"{text[:MAX_METADATA_CELL]}… ({len(text):,} characters in all; the whole value is in Result.metadata)"


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if prefix and isinstance(value, Mapping) and len(str(value)) > BULKY_METADATA_CHARS:
        keys = ", ".join(str(k) for k in list(value)[:12]) + (", …" if len(value) > 12 else "")
        out.append((prefix, f"structured data ({len(value)} keys: {keys}), kept in Result.metadata"))
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    elif isinstance(value, list | tuple) and len(value) > 12:
        shown = ", ".join(str(v) for v in value[:5])
        out.append((prefix, _cell(f"{len(value)} items: {shown}, …")))
    else:
        out.append((prefix, _cell(str(value))))


def metadata_rows(metadata: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Flatten nested metadata into (key, value) rows; long lists are summarised."""
    rows: list[tuple[str, str]] = []
    _flatten("", metadata, rows)
    return rows


def _table_html(frame: pd.DataFrame, max_rows: int = 30) -> str:
    shown = frame.head(max_rows)
    table = shown.to_html(index=False, escape=True, na_rep="", float_format=lambda v: f"{v:.4g}", border=0)
    more = f'<p class="small">showing {len(shown)} of {len(frame)} rows</p>' if len(frame) > max_rows else ""
    return table + more


def _figures_html(result: Result) -> str:
    parts = []
    for index, (title, figure) in enumerate(result.figures.items()):
        div_id = f"figure-{index}"
        parts.append(
            f'<div class="figure"><h3>{escape(title)}</h3><div id="{div_id}" class="plotly-figure"></div>'
            f"<script>(function(){{var f={figure_json(figure)};"
            f"Plotly.newPlot('{div_id}',f.data,f.layout,{{responsive:true,displaylogo:false}});}})();</script></div>"
        )
    return "\n".join(parts)


def _body(result: Result) -> str:
    meta = result.metadata
    model_name = meta.get("model", {}).get("name", "") if isinstance(meta.get("model"), Mapping) else ""
    parts = [f"<h1>{escape(result.analysis)} — {escape(model_name)}</h1>"]
    generated = meta.get("finished_at") or datetime.now(UTC).isoformat(timespec="seconds")
    parts.append(f'<p class="small">interp report, generated {escape(generated)}</p>')
    if result.notes:
        parts.append("<h2>How to read this</h2>")
        parts.extend(f'<div class="note">{escape(note)}</div>' for note in result.notes)
    for title, fragment in result.sections.items():
        parts.append(f'<h2>{escape(title)}</h2>\n<div class="section">{fragment}</div>')
    if result.figures:
        parts.append("<h2>Figures</h2>")
        parts.append(_figures_html(result))
    for title, table in result.tables.items():
        parts.append(f"<h2>{escape(title)}</h2>")
        parts.append(_table_html(table))
    parts.append("<h2>Tidy table (first rows)</h2>")
    parts.append(_table_html(result.frame, max_rows=20))
    parts.append("<h2>Metadata</h2><table class=\"meta\">")
    parts.extend(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in metadata_rows(meta))
    parts.append("</table>")
    if result.references:
        parts.append("<h2>References</h2><ul>")
        parts.extend(f"<li>{escape(ref)}</li>" for ref in result.references)
        parts.append("</ul>")
    return "\n".join(parts)


def render_report(result: Result) -> str:
    """A whole self-contained HTML page for ``result`` (plotly.js inlined once when there are figures; no
    network needed)."""
    from plotly.offline import get_plotlyjs

    title = f"{result.analysis} — {result.metadata.get('model', {}).get('name', '')}"
    plotly = f"<script type=\"text/javascript\">{get_plotlyjs()}</script>" if result.figures else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title><style>{_STYLE}</style>"
        f"{plotly}</head>\n<body>\n"
        f"{_body(result)}\n</body></html>\n"
    )


def render_fragment(result: Result) -> str:
    """HTML for notebooks: figures use the plotly.js the notebook already loads (none inlined here)."""
    figures = "".join(figure.to_html(full_html=False, include_plotlyjs="require") for figure in result.figures.values())
    meta = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in metadata_rows(result.metadata)[:12])
    sections = "".join(f"<h4>{escape(title)}</h4>{fragment}" for title, fragment in result.sections.items())
    return (
        f"<div><b>{escape(result.analysis)}</b> — {len(result.frame)} rows"
        f"<table>{meta}</table>{sections}{_table_html(result.frame, 10)}{figures}</div>"
    )


def dumps_metadata(metadata: Mapping[str, Any]) -> str:
    """Metadata as JSON (for sidecar files), with non-JSON values stringified."""
    return json.dumps(metadata, indent=2, default=str)
