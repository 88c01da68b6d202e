"""Plotly builders shared by every analysis: each takes a frame or array and returns a ``go.Figure``.

Token strings are HTML-escaped before they reach a figure, because plotly renders a subset of HTML in
labels; nothing is saved here (saving is the report's job).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

_LAYOUT: dict[str, Any] = dict(template="plotly_white", margin=dict(l=60, r=20, t=50, b=50), height=420)


def safe_label(text: object) -> str:
    """Escape a token or prompt for use as a plotly label (no markup is interpreted)."""
    return html.escape(str(text), quote=True)


def layer_head_heatmap(
    frame: pd.DataFrame,
    metric: str,
    title: str,
    *,
    value_column: str = "value",
    colorscale: str = "Viridis",
    zmid: float | None = None,
) -> go.Figure:
    """Heat map of one metric over layer (rows) × head (columns) from a tidy frame."""
    rows = frame[frame["metric"] == metric]
    table = rows.pivot_table(index="layer", columns="head", values=value_column, aggfunc="mean").sort_index()
    figure = go.Figure(
        go.Heatmap(
            z=table.to_numpy(dtype=float),
            x=[str(h) for h in table.columns],
            y=[str(layer) for layer in table.index],
            colorscale="RdBu" if zmid is not None else colorscale,
            zmid=zmid,
            hovertemplate="layer %{y}, head %{x}: %{z:.4f}<extra></extra>",
            colorbar=dict(title=metric),
        )
    )
    figure.update_layout(title=title, xaxis_title="head", yaxis_title="layer", **_LAYOUT)
    figure.update_yaxes(autorange="reversed")
    return figure


def line_curves(
    x: Sequence[float] | np.ndarray,
    series: Mapping[str, Sequence[float] | np.ndarray],
    title: str,
    *,
    x_title: str,
    y_title: str,
) -> go.Figure:
    """One or more curves against a shared x (e.g. a per-layer mass)."""
    figure = go.Figure()
    for name, values in series.items():
        figure.add_trace(go.Scatter(x=list(x), y=list(np.asarray(values, dtype=float)), mode="lines+markers", name=safe_label(name)))
    figure.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, **_LAYOUT)
    return figure


def bars(
    labels: Sequence[str],
    values: Sequence[float] | np.ndarray,
    title: str,
    *,
    y_title: str,
    errors: Sequence[float] | np.ndarray | None = None,
) -> go.Figure:
    """Bar chart with optional error bars."""
    figure = go.Figure(
        go.Bar(
            x=[safe_label(label) for label in labels],
            y=list(np.asarray(values, dtype=float)),
            error_y=None if errors is None else dict(type="data", array=list(np.asarray(errors, dtype=float))),
        )
    )
    figure.update_layout(title=title, yaxis_title=y_title, **_LAYOUT)
    return figure


def matrix_heatmap(
    z: np.ndarray,
    title: str,
    *,
    x_labels: Sequence[str],
    y_labels: Sequence[str],
    x_title: str,
    y_title: str,
    colorscale: str = "Viridis",
    colorbar_title: str = "",
) -> go.Figure:
    """Generic labelled heat map (labels escaped)."""
    figure = go.Figure(
        go.Heatmap(
            z=np.asarray(z, dtype=float),
            x=[safe_label(label) for label in x_labels],
            y=[safe_label(label) for label in y_labels],
            colorscale=colorscale,
            colorbar=dict(title=colorbar_title),
        )
    )
    figure.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, **_LAYOUT)
    return figure
