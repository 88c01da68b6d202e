"""Model loading: test architectures, local HF folders checked against HF's own logits, the checked cache."""

from __future__ import annotations

import json

import pytest
import torch

import interp
from interp.errors import HubUnavailableError, OptionError, PromptError, UnknownModelError
from interp.models import build_checked_cache, byte_tokenizer, cache_is_valid


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
    assert torch.equal(a.model.W_Q, b.model.W_Q) and not torch.equal(a.model.W_Q, c.model.W_Q)


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
    tokens = lm.tokenize(["local folders load too"]).tokens
    with torch.no_grad():
        ours = lm.model(tokens).log_softmax(-1).cpu()
        theirs = hf(tokens).logits.log_softmax(-1)
    assert torch.allclose(ours, theirs, atol=1e-4), float((ours - theirs).abs().max())


def test_unknown_and_offline_names_give_one_line_errors(tmp_path):
    with pytest.raises(UnknownModelError, match="unknown model 'no-such-model'") as info:
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
    from interp import models

    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path))
    calls = []

    def fake_plain_copy(gguf_path, architecture, out):
        calls.append(gguf_path)
        (out / "model.safetensors").write_bytes(b"weights")
        return {}

    monkeypatch.setattr(models, "_plain_copy_from_gguf", fake_plain_copy)
    locate = lambda scratch: scratch / "x.gguf"  # noqa: E731
    folder = models._gguf_cache("fake", "X", locate)
    models._gguf_cache("fake", "X", locate)
    assert len(calls) == 1  # the valid cache is reused
    (folder / "model.safetensors").write_bytes(b"weightz")
    models._gguf_cache("fake", "X", locate)
    assert len(calls) == 2 and cache_is_valid(folder)


def test_provenance_is_recorded(tiny_gpt2):
    info = tiny_gpt2.info.as_dict()
    for key in ("name", "source", "dtype", "processing", "prepend_bos", "n_params", "origin"):
        assert key in info
    assert info["n_params"] == sum(p.numel() for p in tiny_gpt2.model.parameters())
    assert info["prepend_bos"] is True
