"""The Result every analysis returns: a tidy frame, plotly figures and provenance metadata.

Examples:
    >>> import interp, tempfile, pathlib
    >>> result = interp.run("attention-sinks", "tiny-gpt2", prompts=["The cat sat on the mat."], progress=False)
    >>> list(result.frame.columns[:6])
    ['layer', 'head', 'position', 'token', 'metric', 'value']
    >>> len(result.metric("bos_attention"))                # one row per layer × head of tiny-gpt2
    8
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> result.to_html(folder / "attention-sinks.html").name
    'attention-sinks.html'
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

#: Columns every tidy frame starts with, in this order; analyses add columns such as ``dim`` or ``prompt``.
TIDY_COLUMNS: tuple[str, ...] = ("layer", "head", "position", "token", "metric", "value")


def tidy_frame(rows: list[dict[str, Any]] | pd.DataFrame, extra_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """Build a long-format frame with the standard columns first (missing ones filled with NA).

    Integer-like columns use pandas' nullable ``Int64`` so that "not applicable" stays NA rather than NaN.
    """
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame.from_records(rows)
    for column in TIDY_COLUMNS:
        if column not in frame.columns:
            frame[column] = pd.NA
    ordered = list(TIDY_COLUMNS) + [c for c in extra_columns if c in frame.columns]
    ordered += [c for c in frame.columns if c not in ordered]
    frame = frame[ordered]
    for column in ("layer", "head", "position"):
        frame[column] = frame[column].astype("Int64")
    frame["token"] = frame["token"].astype("string")
    frame["metric"] = frame["metric"].astype("string")
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce").astype("float64")
    return frame.reset_index(drop=True)


def current_umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    An interrupted write never leaves a truncated file at ``path``. The file gets the mode any file the
    user writes gets (``0666`` minus the umask), not the temporary file's private ``0600``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


@dataclass(frozen=True)
class Result:
    """What an analysis produced.

    Attributes:
        analysis: registered analysis name, e.g. ``"attention-sinks"``.
        frame: tidy long-format table (``layer, head, position, token, metric, value`` and extras).
        figures: plotly figures by title, in report order.
        metadata: provenance (model, source, dtype, processing flags, BOS, prompts, seed, version, time).
        tables: small derived views for the report (top rows, events); the frame stays the source of truth.
        notes: "how to read this" and method notes, as HTML-free plain text paragraphs.
        references: citations shown under the method notes.
        sections: report sections the analysis renders itself, title -> an HTML fragment, shown after the
            notes and before the figures (e.g. the head atlas, or the token-level attention viewer from
            :mod:`interp.viewer`). The fragment is trusted HTML: build it with :mod:`interp.viewer` or escape
            every user string with :func:`interp.report.escape`; data goes in as
            :func:`interp.viewer.safe_json` inside ``<script type="application/json">``.
    """

    analysis: str
    frame: pd.DataFrame
    figures: Mapping[str, go.Figure] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    tables: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    sections: Mapping[str, str] = field(default_factory=dict)

    def metric(self, name: str) -> pd.DataFrame:
        """Rows of one metric, e.g. ``result.metric("bos_attention")``."""
        return self.frame[self.frame["metric"] == name]

    def to_html(self, path: str | os.PathLike[str]) -> Path:
        """Write a self-contained HTML report (plotly.js inlined once) atomically; returns the path."""
        from interp.report import render_report

        return atomic_write(path, render_report(self))

    def to_parquet(self, path: str | os.PathLike[str]) -> Path:
        """Write the tidy frame as parquet atomically; returns the path."""
        import io

        buffer = io.BytesIO()
        self.frame.to_parquet(buffer, index=False)
        return atomic_write(path, buffer.getvalue())

    def _repr_html_(self) -> str:
        from interp.report import render_fragment

        return render_fragment(self)

    def __repr__(self) -> str:
        model = self.metadata.get("model", {}).get("name", "?") if isinstance(self.metadata, Mapping) else "?"
        return (
            f"Result(analysis={self.analysis!r}, model={model!r}, rows={len(self.frame)}, "
            f"figures={list(self.figures)})"
        )
