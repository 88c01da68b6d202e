"""Shared test setup: offline hubs, no wandb, deterministic and polite CPU use, and the backend under test.

The unit suite runs once per backend: ``pytest --backend hooked`` or ``pytest --backend bridge`` (the
default is the suite's default backend). The option sets ``INTERP_BACKEND``, so every
``interp.load_model`` in the run uses that backend unless a test names one.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import warnings  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)
torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--backend", default=None, choices=("hooked", "bridge", "nnsight"),
                     help="the model backend every test loads by default (INTERP_BACKEND)")


def pytest_configure(config: pytest.Config) -> None:
    chosen = config.getoption("--backend")
    if chosen:
        os.environ["INTERP_BACKEND"] = chosen


def pytest_report_header(config: pytest.Config) -> str:
    from interp.backends import default_backend

    return f"interp backend: {os.environ.get('INTERP_BACKEND') or default_backend()}"


@pytest.fixture(scope="session")
def backend_name() -> str:
    from interp.backends import default_backend

    return os.environ.get("INTERP_BACKEND") or default_backend()


@pytest.fixture(scope="session")
def tiny_gpt2():
    import interp

    return interp.load_model("tiny-gpt2")


@pytest.fixture(scope="session")
def tiny_llama():
    import interp

    return interp.load_model("tiny-llama")
