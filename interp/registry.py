"""Name → analysis registry shared by the command line, the reports and the Python API.

An analysis is a recipe module under ``analyses/`` that registers itself with :func:`register`; adding an
analysis is adding one module there.

Example:
    >>> from interp.registry import analysis_names
    >>> "attention-sinks" in analysis_names()
    True
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from interp.errors import UnknownAnalysisError


@dataclass(frozen=True)
class Analysis:
    """A registered analysis.

    Attributes:
        name: command-line name, e.g. ``attention-sinks``.
        summary: one line for ``interp list``.
        run: ``run(lm, prompts, *, batch_size, max_prompts, seed, progress, **options) -> Result``.
        default_prompts: callable returning the shipped prompt set (or None when the analysis makes its own).
        options: option name → (type, default, help) accepted on the command line as ``--option value``.
    """

    name: str
    summary: str
    run: Callable[..., Any] = field(repr=False)
    default_prompts: Callable[[], list[str]] | None = field(default=None, repr=False)
    options: dict[str, tuple[type, Any, str]] = field(default_factory=dict)
    encoder_ok: bool = True


_ANALYSES: dict[str, Analysis] = {}
_DISCOVERED = False


def register(analysis: Analysis) -> Analysis:
    """Add an analysis (called at import time by modules under ``analyses/``)."""
    _ANALYSES[analysis.name] = analysis
    return analysis


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    import analyses

    for module in pkgutil.iter_modules(analyses.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"analyses.{module.name}")
    _DISCOVERED = True


def analysis_names() -> list[str]:
    """Registered analysis names, sorted."""
    _discover()
    return sorted(_ANALYSES)


def get_analysis(name: str) -> Analysis:
    """The registered analysis called ``name`` (one-line error listing the accepted names)."""
    _discover()
    if name not in _ANALYSES:
        raise UnknownAnalysisError(f"unknown analysis {name!r}: choose one of {', '.join(sorted(_ANALYSES))}")
    return _ANALYSES[name]
