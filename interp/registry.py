"""Name → analysis registry shared by the command line, the reports and the Python API.

An analysis is a recipe module in the repository's ``analyses/`` folder (installed as the package
``interp.analyses``) that registers itself with :func:`register`; adding an analysis is adding one module
there. Each option's default is declared once, in the recipe's signature (:func:`signature_options`), and
a recipe takes exactly :data:`RUN_KEYWORDS` and its options, so an unknown option is an error.

Examples:
    >>> from interp.registry import analysis_names
    >>> "attention-sinks" in analysis_names()
    True
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from interp.errors import OptionError, UnknownAnalysisError

#: Keywords :func:`interp.run` passes to every recipe besides its options (the prompts are already cut to
#: ``max_prompts``, so a recipe never sees that one).
RUN_KEYWORDS: tuple[str, ...] = ("batch_size", "progress", "seed")

#: The package the recipes are imported as (folder ``analyses/`` at the repository root, see pyproject.toml).
RECIPES_PACKAGE = "interp.analyses"


@dataclass(frozen=True)
class Analysis:
    """A registered analysis.

    Attributes:
        name: command-line name, e.g. ``attention-sinks``.
        summary: one line for ``interp list``.
        run: ``run(lm, prompts, *, batch_size, progress, seed, **options) -> Result`` (the prompts already
            cut to ``max_prompts``; every option a keyword-only parameter with its default, no ``**kwargs``).
        default_prompts: callable returning the shipped prompt set (or None when the analysis makes its own).
        options: option name → (type, default, help) accepted on the command line as ``--option value``;
            build it with :func:`signature_options` so that the default is the recipe's own.
    """

    name: str
    summary: str
    run: Callable[..., Any] = field(repr=False)
    default_prompts: Callable[[], list[str]] | None = field(default=None, repr=False)
    options: dict[str, tuple[type, Any, str]] = field(default_factory=dict)
    encoder_ok: bool = True


_ANALYSES: dict[str, Analysis] = {}
_DISCOVERED = False


def signature_options(run: Callable[..., Any], options: dict[str, tuple[type, str]]) -> dict[str, tuple[type, Any, str]]:
    """Option name → (type, help) completed with each default read from ``run``'s signature.

    Examples:
        >>> def run(lm, prompts, *, batch_size=8, progress=None, seed=0, epsilon=0.3):
        ...     ...
        >>> signature_options(run, {"epsilon": (float, "threshold")})
        {'epsilon': (<class 'float'>, 0.3, 'threshold')}
    """
    parameters = inspect.signature(run).parameters
    out: dict[str, tuple[type, Any, str]] = {}
    for name, (kind, text) in options.items():
        parameter = parameters.get(name)
        if parameter is None or parameter.default is inspect.Parameter.empty:
            raise OptionError(f"option {name!r} is not a keyword parameter with a default of {run.__qualname__}")
        out[name] = (kind, parameter.default, text)
    return out


def comma_list(text: str | Sequence[Any], name: str, cast: Callable[[str], Any] = float) -> list[Any]:
    """An option given as comma-separated values (or already a sequence), each passed through ``cast``.

    Examples:
        >>> comma_list("0.1, 0.2", "strengths")
        [0.1, 0.2]
        >>> comma_list("a,b", "layers", int)
        Traceback (most recent call last):
        interp.errors.OptionError: --layers must be comma-separated values such as 1,2,4; got 'a,b'
    """
    from interp.errors import OptionError

    try:
        values = [cast(str(v).strip()) for v in (text.split(",") if isinstance(text, str) else text) if str(v).strip()]
    except ValueError:
        raise OptionError(f"--{name} must be comma-separated values such as 1,2,4; got {text!r}") from None
    if not values:
        raise OptionError(f"--{name} needs at least one value")
    return values


def _check_recipe(analysis: Analysis) -> None:
    """The recipe takes exactly :data:`RUN_KEYWORDS` and the declared options, with the declared defaults."""
    where = f"analysis {analysis.name!r}"
    parameters = inspect.signature(analysis.run).parameters.values()
    swallowing = [p.name for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD]
    if swallowing:
        raise OptionError(f"{where}: run takes **{swallowing[0]}, which hides unknown options; name each option")
    keywords = {p.name: p for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    missing = [k for k in (*RUN_KEYWORDS, *analysis.options) if k not in keywords]
    if missing:
        raise OptionError(f"{where}: run has no keyword-only parameter {', '.join(missing)}")
    undeclared = [k for k in keywords if k not in RUN_KEYWORDS and k not in analysis.options]
    if undeclared:
        raise OptionError(f"{where}: run parameter(s) {', '.join(undeclared)} are not declared options")
    for name, (_kind, default, _text) in analysis.options.items():
        own = keywords[name].default
        if own is inspect.Parameter.empty or not (own is default or own == default):
            raise OptionError(f"{where}: option {name!r} declares default {default!r} but run uses {own!r}: "
                              "build the options with signature_options")


def register(analysis: Analysis) -> Analysis:
    """Add an analysis (called at import time by the recipe modules).

    A name that is already registered is refused (no silent overwrite), as is a recipe whose signature
    does not match its options (see :func:`_check_recipe`).

    Examples:
        >>> register(get_analysis("attention-sinks"))
        Traceback (most recent call last):
        ...
        interp.errors.OptionError: analysis name 'attention-sinks' is already registered (interp.analyses.attention_sinks)
    """
    if analysis.name in _ANALYSES:
        old = _ANALYSES[analysis.name]
        raise OptionError(f"analysis name {analysis.name!r} is already registered ({old.run.__module__})")
    _check_recipe(analysis)
    _ANALYSES[analysis.name] = analysis
    return analysis


def _recipes_package() -> ModuleType:
    """``interp.analyses``: installed there by the wheel (and by an up-to-date editable install); in a plain
    source checkout the folder ``analyses/`` beside ``interp/`` is imported under that name."""
    try:
        return importlib.import_module(RECIPES_PACKAGE)
    except ModuleNotFoundError as error:
        if error.name != RECIPES_PACKAGE:
            raise
    folder = Path(__file__).resolve().parent.parent / "analyses"
    spec = importlib.util.spec_from_file_location(RECIPES_PACKAGE, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    if spec is None or spec.loader is None or not folder.is_dir():
        raise UnknownAnalysisError(f"the analysis recipes ({RECIPES_PACKAGE}) are not installed: reinstall interp")
    package = importlib.util.module_from_spec(spec)
    sys.modules[RECIPES_PACKAGE] = package
    try:
        spec.loader.exec_module(package)
    except BaseException:
        del sys.modules[RECIPES_PACKAGE]
        raise
    vars(sys.modules["interp"])["analyses"] = package  # bound on the parent, as an import would
    return package


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    package = _recipes_package()
    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{RECIPES_PACKAGE}.{module.name}")
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
