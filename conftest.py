"""Doctest setup for ``pytest --doctest-modules interp analyses`` (``make test``).

The recipes in ``analyses/`` are installed as ``interp.analyses`` (pyproject.toml maps the folder there), and
each registers its analysis when imported. Collected from the folder, pytest would import them a second time as
``analyses.<name>``, and that second registration is refused. So before collection the recipes are imported
under their installed names and the same module objects are also bound as ``analyses.<name>``: pytest finds
them already imported and collects their docstrings without running them again.

Doctests run like the unit suite: offline, no wandb, at most two CPU threads, and on the suite's default
backend whatever ``INTERP_BACKEND`` the shell sets (the examples show the defaults). Outside a doctest run
this file does nothing (the unit and integration suites keep their own ``tests/conftest.py``).
"""

from __future__ import annotations

import os
import sys

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("doctestmodules", False):
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.pop("INTERP_BACKEND", None)

    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))

    from interp.registry import analysis_names

    analysis_names()  # imports every recipe as interp.analyses.<name>
    for name, module in list(sys.modules.items()):
        if name == "interp.analyses" or name.startswith("interp.analyses."):
            sys.modules.setdefault(name.removeprefix("interp."), module)
