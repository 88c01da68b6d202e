"""Model loading: test architectures, local HF folders checked against HF's own logits, the checked cache."""

from __future__ import annotations

import json

import pytest
import torch

import interp
from interp.backends import available_backends
from interp.errors import HubUnavailableError, OptionError, PromptError, UnknownModelError
from interp.models import build_checked_cache, byte_tokenizer, cache_is_valid

needs_hooked = pytest.mark.skipif("hooked" not in available_backends(),
                                  reason="the installed transformer-lens (4.x) has no HookedTransformer")


@pytest.mark.parametrize(
    ("name", "kv_heads", "encoder"),
    [("tiny-gpt2", 4, False), ("tiny-llama", 2, False), ("tiny-bert", 4, True)],
)
def test_test_models_cover_the_supported_architectures(name, kv_heads, encoder):
    lm = interp.load_model(name)
    assert lm.info.source == "test" and lm.info.n_kv_heads == kv_heads and lm.is_encoder == encoder
    batch = lm.tokenize(["abc", "abcdef"])
    assert batch.tokens.shape == (2, 8 if encoder else 7)
    assert batch.attention_mask.sum().item() == (5 + 8 if encoder else 4 + 7)
    assert batch.tokens[0, 0].item() == lm.bos_token_id


def test_test_models_are_reproducible_from_their_seed():
    a = interp.load_model("tiny-llama", seed=3, reuse=False)
    b = interp.load_model("tiny-llama", seed=3, reuse=False)
    c = interp.load_model("tiny-llama", seed=4, reuse=False)
    for layer in range(a.n_layers):
        w_a, w_b, w_c = (m.head_weights(layer) for m in (a, b, c))
        assert torch.equal(w_a.W_Q, w_b.W_Q) and torch.equal(w_a.W_O, w_b.W_O)
        assert not torch.equal(w_a.W_Q, w_c.W_Q)
    batch = a.tokenize(["same seed, same model"])
    assert torch.equal(a.forward(batch), b.forward(batch))


def _tiny_hf(kind: str):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if kind == "llama":
        config = LlamaConfig(vocab_size=259, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                             bos_token_id=0, eos_token_id=1, pad_token_id=2, tie_word_embeddings=False)
        return LlamaForCausalLM(config).eval()
    config = GPT2Config(vocab_size=259, n_embd=64, n_layer=2, n_head=4, n_positions=128, bos_token_id=0,
                        eos_token_id=1)
    return GPT2LMHeadModel(config).eval()


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_local_hf_folder_loads_and_matches_hf_logits(kind, tmp_path):
    hf = _tiny_hf(kind)
    hf.save_pretrained(tmp_path)
    byte_tokenizer().save_pretrained(tmp_path)
    lm = interp.load_model(str(tmp_path), reuse=False)
    assert lm.info.source == "local"
    batch = lm.tokenize(["local folders load too"])
    with torch.no_grad():
        ours = lm.forward(batch).log_softmax(-1).cpu()
        theirs = hf(batch.tokens).logits.log_softmax(-1)
    assert torch.allclose(ours, theirs, atol=1e-4), float((ours - theirs).abs().max())


def test_unknown_and_offline_names_give_one_line_errors(tmp_path, monkeypatch):
    # Any name that is not registered or a folder is a hub id; offline, the hub cannot say whether it exists.
    with pytest.raises(HubUnavailableError, match=r"'no-such-model' is not a bundled.*unreachable \(offline\).*tiny-gpt2") as info:
        interp.load_model("no-such-model")
    assert "\n" not in str(info.value)
    with pytest.raises(UnknownModelError, match="does not exist"):
        interp.load_model("./missing-folder")
    with pytest.raises(UnknownModelError, match="no config.json"):
        interp.load_model(str(tmp_path))
    with pytest.raises(HubUnavailableError, match="unreachable.*available offline: .*tiny-gpt2") as info:
        interp.load_model("gpt2")
    assert "\n" not in str(info.value)
    with pytest.raises(OptionError, match="unknown dtype"):
        interp.load_model("tiny-gpt2", dtype="float8")
    # A reachable hub that does not know the name (transformers' OSError text for a missing repository).
    import transformers

    def not_on_the_hub(name, *args, **kwargs):
        raise OSError(f"{name} is not a local folder and is not a valid model identifier listed on "
                      "'https://huggingface.co/models'")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", not_on_the_hub)
    with pytest.raises(UnknownModelError, match="unknown model 'no-such-model'.*tiny-gpt2") as info:
        interp.load_model("no-such-model")
    assert "\n" not in str(info.value)


def test_tokenize_checks_the_context_window(tiny_gpt2):
    with pytest.raises(PromptError, match="at most 256"):
        tiny_gpt2.tokenize(["x" * 300])
    assert tiny_gpt2.tokenize(["x" * 300], max_tokens=10).tokens.shape == (1, 10)
    with pytest.raises(PromptError, match="empty"):
        tiny_gpt2.tokenize([])


def test_checked_cache_is_rebuilt_when_corrupt_or_partial(tmp_path):
    builds = []

    def build(folder):
        builds.append(folder)
        (folder / "weights.bin").write_bytes(b"0123456789" * 100)
        (folder / "config.json").write_text(json.dumps({"a": 1}))
        return {"note": "test"}

    target = tmp_path / "model"
    build_checked_cache(target, build)
    assert cache_is_valid(target) and len(builds) == 1
    assert not list(tmp_path.glob(".model.*")), "no temporary folder is left behind"
    weights = target / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[500] ^= 0xFF  # same size, one flipped byte
    weights.write_bytes(bytes(data))
    assert not cache_is_valid(target)
    build_checked_cache(target, build)
    assert cache_is_valid(target)
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    assert not cache_is_valid(target)
    (target / "manifest.json").unlink()
    assert not cache_is_valid(target)


def test_a_failed_build_leaves_the_previous_state(tmp_path):
    def broken(folder):
        (folder / "half.bin").write_bytes(b"x")
        raise RuntimeError("conversion died")

    with pytest.raises(RuntimeError):
        build_checked_cache(tmp_path / "model", broken)
    assert not (tmp_path / "model").exists()
    assert list(tmp_path.iterdir()) == []


def test_gguf_cache_rebuilds_an_invalid_cache(tmp_path, monkeypatch):
    from interp.models import gguf

    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path))
    calls = []

    def fake_plain_copy(gguf_path, architecture, out):
        calls.append(gguf_path)
        (out / "model.safetensors").write_bytes(b"weights")
        return {}

    monkeypatch.setattr(gguf, "plain_copy_from_gguf", fake_plain_copy)
    locate = lambda scratch: scratch / "x.gguf"  # noqa: E731
    folder = gguf.gguf_cache("fake", "X", locate)
    gguf.gguf_cache("fake", "X", locate)
    assert len(calls) == 1  # the valid cache is reused
    (folder / "model.safetensors").write_bytes(b"weightz")
    gguf.gguf_cache("fake", "X", locate)
    assert len(calls) == 2 and cache_is_valid(folder)


def test_provenance_is_recorded(tiny_gpt2):
    info = tiny_gpt2.info.as_dict()
    for key in ("name", "source", "dtype", "processing", "prepend_bos", "n_params", "origin", "backend"):
        assert key in info
    assert info["prepend_bos"] is True
    assert info["backend"] == tiny_gpt2.backend


def test_parameter_count_matches_the_hugging_face_model(backend_name):
    """``n_params`` checked against the Hugging Face model itself (``num_parameters()``, tied embeddings
    counted once) and against the configuration's arithmetic written out.

    Both backends report the checkpoint's count (not the hooked backend's TransformerLens copy, which has an
    untied unembedding with a bias and no norm weights after ``fold_ln``).
    """
    from interp.models.tiny import tiny_hf_model

    hf = tiny_hf_model("tiny-gpt2")
    config = hf.config
    d, vocab, layers, inner = config.n_embd, config.vocab_size, config.n_layer, config.n_inner
    per_block = (2 * d + (d * 3 * d + 3 * d) + (d * d + d)  # ln_1, c_attn, attention c_proj
                 + 2 * d + (d * inner + inner) + (inner * d + d))  # ln_2, c_fc, MLP c_proj
    written_out = vocab * d + config.n_positions * d + layers * per_block + 2 * d  # wte, wpe, blocks, ln_f
    assert hf.num_parameters() == written_out
    lm = interp.load_model("tiny-gpt2", reuse=False)
    assert lm.info.n_params == written_out


def test_unknown_backend_is_an_option_error_listing_the_backends(monkeypatch):
    with pytest.raises(OptionError, match="unknown backend 'tpu'.*hooked, bridge") as info:
        interp.load_model("tiny-gpt2", backend="tpu")
    assert "\n" not in str(info.value)
    monkeypatch.setenv("INTERP_BACKEND", "nope")
    with pytest.raises(OptionError, match="unknown backend 'nope'.*hooked, bridge"):
        interp.load_model("tiny-gpt2")
    assert interp.load_model("tiny-gpt2", backend="bridge").backend == "bridge"  # an explicit name wins


@pytest.mark.parametrize("placement", [{"device_map": "auto"}, {"max_memory": "cpu=1GiB"},
                                       {"offload_folder": "unused"}])
def test_device_map_on_the_hooked_backend_names_the_bridge(placement, tmp_path):
    if "offload_folder" in placement:
        placement = {"offload_folder": str(tmp_path / "offload")}
    with pytest.raises(OptionError, match="--backend bridge") as info:
        interp.load_model("tiny-gpt2", backend="hooked", **placement)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "offload").exists()  # refused before anything was created


@pytest.mark.parametrize(("spec", "expected"), [
    ("cpu=2GiB,0=20GB", {"cpu": "2GiB", 0: "20GB"}),
    (" cpu = 500 MB , 1=1024 ", {"cpu": "500MB", 1: "1024"}),
    ("cuda:1=1.5GiB,disk=10TB,mps=3kib", {"cuda:1": "1.5GiB", "disk": "10TB", "mps": "3kib"}),
    ({"cpu": 1024, 0: "2GiB"}, {"cpu": 1024, 0: "2GiB"}),
    (None, None),
])
def test_parse_max_memory_accepts_accelerate_budgets(spec, expected):
    from interp.models import parse_max_memory

    assert parse_max_memory(spec) == expected


@pytest.mark.parametrize(("spec", "message"), [
    ("cpu2GiB", "not DEVICE=SIZE"),
    ("", "is empty"),
    (" , ", "is empty"),
    ({}, "is empty"),
    ("gpu=2GiB", "not a GPU index, cpu, mps or disk"),
    ("cuda=2GiB", "not a GPU index"),
    ("cpu=lots", "not a size"),
    ("0=2 GiBs", "not a size"),
    ("cpu=-1GB", "not a size"),
])
def test_parse_max_memory_rejects_bad_budgets_in_one_line(spec, message):
    from interp.models import parse_max_memory

    with pytest.raises(OptionError, match=message) as info:
        parse_max_memory(spec)
    assert "\n" not in str(info.value)


def test_register_model_refuses_a_taken_name():
    from interp.models import ModelSpec, model_specs, register_model

    before = {spec.name: spec for spec in model_specs()}
    with pytest.raises(OptionError, match="'tiny-gpt2' is already registered"):
        register_model(ModelSpec("tiny-gpt2", "test", "an impostor", None, "interp.models.tiny:tiny_source"))
    after = {spec.name: spec for spec in model_specs()}
    assert after == before and after["tiny-gpt2"].description != "an impostor"


@needs_hooked
@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_both_backends_give_the_same_facts_and_logits(name):
    hooked = interp.load_model(name, backend="hooked")
    bridge = interp.load_model(name, backend="bridge")
    assert (hooked.backend, bridge.backend) == ("hooked", "bridge")
    assert hooked.facts == bridge.facts
    batch = hooked.tokenize(["The cat sat on the mat", "a", "two prompts of different lengths"])
    with torch.no_grad():
        a, b = hooked.forward(batch), bridge.forward(batch)
    real = batch.attention_mask.bool()  # padded query rows are computed but not promised
    assert torch.allclose(a[real], b[real], atol=1e-4), float((a[real] - b[real]).abs().max())
    assert float(a[real].std()) > 0.1  # not trivially equal


@needs_hooked
def test_both_backends_give_the_same_encoder_attention():
    hooked = interp.load_model("tiny-bert", backend="hooked")
    bridge = interp.load_model("tiny-bert", backend="bridge")
    assert hooked.facts == bridge.facts and hooked.is_encoder and bridge.is_encoder
    batch = hooked.tokenize(["bidirectional attention", "short"])
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(hooked.n_layers)]
    a, b = hooked.capture(batch, names), bridge.capture(batch, names)
    for name in names:
        for row, length in enumerate(batch.lengths.tolist()):
            pa, pb = a[name][row, :, :length, :length], b[name][row, :, :length, :length]
            assert torch.allclose(pa, pb, atol=1e-4), (name, row, float((pa - pb).abs().max()))
        assert not torch.allclose(a[name][0], a[name][0].mean(-1, keepdim=True))  # not uniform


def test_import_interp_loads_no_model_library():
    """``import interp`` stays light: TransformerLens, transformers and sae-lens load only when used."""
    import subprocess
    import sys

    code = ("import sys, interp; heavy = ('transformer_lens', 'transformers', 'sae_lens'); "
            "print(','.join(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip() == "", out.stdout


def test_a_disk_offloaded_untied_unembedding_gives_the_in_memory_logits(tmp_path):
    """Everything on disk, the unembedding included (untied from the embeddings): the Bridge's added zero
    ``b_U`` must reach accelerate's offload index (it failed with ``KeyError: 'lm_head.bias'``), and the
    logits and ``W_U`` equal the in-memory model's (both unprocessed: offloaded weights cannot be folded)."""
    from interp.models.tiny import byte_tokenizer, tiny_hf_model

    hf = tiny_hf_model("tiny-llama")
    hf.config.tie_word_embeddings = False
    folder = tmp_path / "untied-llama"
    hf.save_pretrained(str(folder))
    byte_tokenizer().save_pretrained(str(folder))
    raw = {"fold_ln": False, "center_writing_weights": False, "center_unembed": False, "fold_value_biases": False}
    offloaded = interp.load_model(str(folder), max_memory={"cpu": "1KiB"}, offload_folder=str(tmp_path / "off"),
                                  reuse=False)
    in_memory = interp.load_model(str(folder), backend="bridge", processing=raw, reuse=False)
    assert offloaded.info.placement.get("lm_head", offloaded.info.placement.get("")) == "disk"
    batch = in_memory.tokenize(["The cat sat on the mat.", "A dog"])
    real = batch.attention_mask.bool()
    with torch.no_grad():
        assert torch.allclose(offloaded.forward(batch)[real], in_memory.forward(batch)[real], atol=1e-5)
    assert torch.allclose(offloaded.W_U, in_memory.W_U) and torch.equal(offloaded.b_U, torch.zeros_like(offloaded.b_U))
