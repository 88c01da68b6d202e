"""The analysis registry: one registration per name, recipes that refuse unknown options, each option's
default declared once (the recipe's signature), and the keywords ``run`` receives as documented."""

from __future__ import annotations

import inspect
import re

import pandas as pd
import pytest

import interp
from interp import registry
from interp.errors import OptionError
from interp.registry import RUN_KEYWORDS, Analysis, analysis_names, get_analysis, register, signature_options
from interp.results import Result


@pytest.fixture
def scratch_registry(monkeypatch):
    """Register into a copy, so that a test's registrations (or a broken register) cannot leak."""
    analysis_names()  # discover the shipped recipes first
    monkeypatch.setattr(registry, "_ANALYSES", dict(registry._ANALYSES))
    return registry._ANALYSES


def _probe_run(lm, prompts, *, batch_size: int = 8, progress: bool | None = None, seed: int = 0,
               alpha: float = 0.5) -> Result:
    return Result(analysis="probe", frame=pd.DataFrame({"metric": ["alpha"], "value": [alpha]}))


def test_the_recipes_are_found_under_interp_analyses():
    names = analysis_names()
    assert {"attention-sinks", "attention-sparsity", "explanation-agreement", "head-importance", "language-steering", "safety-heads",
            "svd-channels"} <= set(names)
    for name in names:
        assert get_analysis(name).run.__module__.startswith("interp.analyses."), name


def test_a_second_registration_under_the_same_name_is_refused(scratch_registry):
    original = get_analysis("attention-sinks")
    impostor = Analysis(name="attention-sinks", summary="impostor", run=_probe_run,
                        options=signature_options(_probe_run, {"alpha": (float, "a number")}))
    with pytest.raises(OptionError, match="analysis name 'attention-sinks' is already registered") as error:
        register(impostor)
    assert "\n" not in str(error.value)
    assert get_analysis("attention-sinks") is original


def test_register_refuses_a_recipe_that_swallows_or_disagrees_with_its_options(scratch_registry):
    def swallowing(lm, prompts, *, batch_size=8, progress=None, seed=0, alpha=0.5, **_):
        return None

    with pytest.raises(OptionError, match=r"\*\*_"):
        register(Analysis(name="probe-swallow", summary="s", run=swallowing, options={"alpha": (float, 0.5, "a")}))
    with pytest.raises(OptionError, match="alpha.*0.7.*0.5"):  # a second, different default
        register(Analysis(name="probe-default", summary="s", run=_probe_run, options={"alpha": (float, 0.7, "a")}))
    with pytest.raises(OptionError, match="beta"):  # an option the recipe does not take
        register(Analysis(name="probe-extra", summary="s", run=_probe_run,
                          options={"alpha": (float, 0.5, "a"), "beta": (int, 1, "b")}))
    with pytest.raises(OptionError, match="alpha"):  # a recipe keyword the command line cannot set
        register(Analysis(name="probe-hidden", summary="s", run=_probe_run, options={}))
    assert not {"probe-swallow", "probe-default", "probe-extra", "probe-hidden"} & set(scratch_registry)


def test_signature_options_take_each_default_from_the_recipe():
    options = signature_options(_probe_run, {"alpha": (float, "a number")})
    assert options == {"alpha": (float, 0.5, "a number")}
    with pytest.raises(OptionError, match="gamma"):
        signature_options(_probe_run, {"gamma": (float, "not a parameter")})


@pytest.mark.parametrize("name", analysis_names())
def test_every_registered_analysis_declares_each_default_once_and_refuses_unknown_options(name):
    spec = get_analysis(name)
    parameters = inspect.signature(spec.run).parameters
    assert not [p for p in parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD], "swallows unknown options"
    keywords = {n: p for n, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(keywords) == set(RUN_KEYWORDS) | set(spec.options)
    for option, (kind, default, text) in spec.options.items():
        assert default == keywords[option].default, option  # the command line shows what the recipe uses
        assert default is None or isinstance(default, kind), option
        assert text, option
    with pytest.raises(TypeError, match="no_such_option"):
        spec.run(None, [], batch_size=1, progress=False, seed=0, no_such_option=1)


def test_run_passes_exactly_the_keywords_the_registry_documents(scratch_registry, tiny_gpt2):
    """The ``run:`` line of :class:`Analysis`'s docstring is the contract every recipe is written against."""
    line = re.search(r"run: ``run\(lm, prompts, \*, ([^)]*)\)", Analysis.__doc__)
    documented = {name.strip() for name in line.group(1).split(",")} - {"**options"}
    received = {}

    def recorder(lm, prompts, **keywords):
        received.update(keywords)
        return Result(analysis="probe", frame=pd.DataFrame({"metric": ["m"], "value": [1.0]}))

    # set directly: register (rightly) refuses a recipe with **keywords
    scratch_registry["probe"] = Analysis(name="probe", summary="s", run=recorder, options={"alpha": (float, 0.5, "a")})
    interp.run("probe", tiny_gpt2, prompts=["a b", "c d", "e f"], max_prompts=2, seed=3, alpha=0.25)
    assert set(received) - {"alpha"} == documented == set(RUN_KEYWORDS)
    assert received["seed"] == 3 and received["alpha"] == 0.25
