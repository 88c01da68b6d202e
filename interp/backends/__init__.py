"""The seam between the suite and model libraries: one protocol, one module per backend.

Nothing outside this package imports ``transformer_lens`` (ruff's banned-api rule enforces it).

* :mod:`interp.backends.base` — the protocol (:class:`Backend`) and its plain data;
* :mod:`interp.backends.hooked` — TransformerLens's ``HookedTransformer`` / ``HookedEncoder``;
* :mod:`interp.backends.bridge` — TransformerLens's ``TransformerBridge`` (accelerate's ``device_map``);
* :mod:`interp.backends.nnsight` — nnsight's ``LanguageModel`` on the Hugging Face model (the optional
  ``nnsight`` extra).

Backends are imported lazily: ``import interp`` loads neither TransformerLens nor transformers.

Examples:
    >>> from interp.backends import BACKENDS, DEFAULT_BACKEND
    >>> BACKENDS, DEFAULT_BACKEND
    (('hooked', 'bridge', 'nnsight'), 'bridge')
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from collections.abc import Iterator
from typing import Any

import torch

from interp.backends.base import (
    ArchFacts,
    Backend,
    HeadWeights,
    HookRef,
    ModelInfo,
    NormSpec,
    TokenBatch,
    layer_of,
    softcap,
)
from interp.errors import OptionError

#: Backend names, in the order the docs list them.
BACKENDS: tuple[str, ...] = ("hooked", "bridge", "nnsight")
#: The default, chosen by measurement (docs/concepts/backends.md; benchmarks/bench_backends.py): the bridge
#: was as fast or faster on every analysis but one, loads faster, maps more architectures, takes a device map
#: and is the only backend of transformer-lens 4. A model can prefer another (``ModelSpec.backend``).
DEFAULT_BACKEND = "bridge"

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "ArchFacts", "Backend", "HeadWeights", "HookRef", "ModelInfo",
           "NormSpec", "TokenBatch", "available_backends", "build_backend", "default_backend", "preferred_backend", "layer_of", "official_hub_name", "quiet_loading", "softcap"]


def default_backend() -> str:
    """:data:`DEFAULT_BACKEND` when the installed TransformerLens has it, else ``bridge`` (transformer-lens 4)."""
    return DEFAULT_BACKEND if DEFAULT_BACKEND in available_backends() else "bridge"


def preferred_backend(preference: str | None) -> str:
    """A model's preferred backend when it is installed, else the default."""
    return preference if preference in available_backends() else default_backend()


def available_backends() -> list[str]:
    """Backends the installed packages offer (transformer-lens 4 has no hooked backend; nnsight is an extra)."""
    names = ["bridge"]
    if importlib.util.find_spec("transformer_lens.HookedTransformer") is not None:
        names.insert(0, "hooked")
    if importlib.util.find_spec("nnsight") is not None:
        names.append("nnsight")
    return names


def official_hub_name(name: str) -> str:
    """TransformerLens's canonical hub id for an alias (``gpt2-small`` → ``gpt2``), when it knows one."""
    try:
        from transformer_lens.loading_from_pretrained import get_official_model_name
    except ImportError:  # transformer-lens 4 dropped the alias table: hub ids are used as given
        return name
    try:
        return get_official_model_name(name)
    except ValueError:
        return name


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence what loading prints that says nothing about the results: transformers' "Loading weights"
    bars and info logs, TransformerLens's "Moving model to device" prints, its advice logged on the root
    logger ("With reduced precision, it is advised to use ``from_pretrained_no_processing``") and advisory
    warnings. Errors still show. Everything is restored on exit.

    Examples:
        >>> with quiet_loading():
        ...     print("Moving model to device: cpu")
        >>> print("after loading")
        after loading
    """
    import io
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # ``logging.warning(...)`` on a root logger without handlers installs a stderr handler for good
    # (logging.basicConfig): a placeholder handler prevents that, and the disable level drops the record.
    root = logging.getLogger()
    placeholder = logging.NullHandler()
    root.addHandler(placeholder)
    disabled = logging.root.manager.disable
    logging.disable(max(disabled, logging.WARNING))
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(disabled)
        root.removeHandler(placeholder)
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def build_backend(name: str, source: Any, *, dtype: torch.dtype, device: str, processing: dict[str, bool],
                  placement: dict[str, Any], started: float, remote: Any = None) -> Backend:
    """Wrap a :class:`~interp.models.sources.ModelSource` in backend ``name`` (quietly); ``remote`` (an
    :class:`~interp.backends.ndif.Remote`, nnsight only) runs its passes on NDIF."""
    if name not in BACKENDS:
        raise OptionError(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)}")
    if name == "nnsight" and name not in available_backends():
        raise OptionError("backend 'nnsight' needs the nnsight package: pip install 'interp[nnsight]' "
                          "(make setup installs it into .venv)")
    if name not in available_backends():
        raise OptionError(f"backend {name!r} is not in the installed transformer-lens "
                          f"(transformer-lens 4 removed HookedTransformer): use --backend bridge")
    module = importlib.import_module(f"interp.backends.{name}")
    extra = {} if remote is None else {"remote": remote}
    with quiet_loading():
        return module.build(source, dtype=dtype, device=device, processing=processing, placement=placement,
                            started=started, **extra)
