"""Shared test setup: offline hubs, no wandb, deterministic and polite CPU use."""

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


@pytest.fixture(scope="session")
def tiny_gpt2():
    import interp

    return interp.load_model("tiny-gpt2")


@pytest.fixture(scope="session")
def tiny_llama():
    import interp

    return interp.load_model("tiny-llama")
