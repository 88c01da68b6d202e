"""Identities of the head-intervention engine (interp.interventions) on tiny models.

Each check compares against something computed another way: the closed-form causal-uniform pattern, the
clean run's own tensors with one head's term removed by hand, a brute-force mean, or the same generation
without a key/value cache.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from interp.errors import InterpUserError, OptionError
from interp.generation import generate
from interp.interventions import (
    ABLATION_MODES,
    ablate_heads,
    apply_hooks,
    cache_head_outputs,
    causal_uniform_pattern,
    check_heads,
    head_means,
    head_output_edit,
    head_z_edit,
    patch_heads,
    project_out,
)

PROMPTS = ["The cat sat on the mat.", "A dog barked twice at night"]


def capture(lm, batch, names: list[str]) -> dict[str, torch.Tensor]:
    """Run ``batch`` and return the named activations (after any installed hooks)."""
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(x: torch.Tensor, hook: Any) -> None:
            seen[name] = x.detach().clone()

        return hook

    with torch.inference_mode():
        logits = lm.forward(batch, fwd_hooks=[(n, keep(n)) for n in names])
    seen["logits"] = logits
    return seen


@pytest.fixture(params=["tiny-gpt2", "tiny-llama"])
def lm(request, tiny_gpt2, tiny_llama):
    return tiny_gpt2 if request.param == "tiny-gpt2" else tiny_llama


def test_scale_query_to_zero_gives_causal_uniform_and_spares_the_shared_kv_group(lm) -> None:
    batch = lm.tokenize(PROMPTS)
    name = "blocks.1.attn.hook_pattern"
    clean = capture(lm, batch, [name])[name]
    with ablate_heads(lm, [(1, 1)], mode="scale_query", eps=1e-7):
        ablated = capture(lm, batch, [name])[name]
    for row, length in enumerate(batch.lengths.tolist()):
        expected = causal_uniform_pattern(length)
        torch.testing.assert_close(ablated[row, 1, :length, :length].cpu(), expected, atol=1e-5, rtol=0)
    # Every other head — including head 0, which shares head 1's key/value head on tiny-llama — is untouched.
    others = [0, 2, 3]
    torch.testing.assert_close(ablated[:, others], clean[:, others], atol=0, rtol=0)
    assert not torch.allclose(ablated[:, 1], clean[:, 1])


def test_uniform_mode_is_the_scale_query_limit(lm) -> None:
    batch = lm.tokenize(PROMPTS)
    name = "blocks.0.attn.hook_pattern"
    with ablate_heads(lm, [(0, 2)], mode="uniform"):
        uniform = capture(lm, batch, [name])
    with ablate_heads(lm, [(0, 2)], mode="scale_query", eps=1e-9):
        limit = capture(lm, batch, [name])
    length = int(batch.lengths[0])
    torch.testing.assert_close(uniform[name][0, 2, :length, :length].cpu(), causal_uniform_pattern(length), atol=1e-6,
                               rtol=0)
    torch.testing.assert_close(uniform["logits"], limit["logits"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("mode", ["scale_query", "scale_output", "scale_value"])
def test_scale_one_changes_nothing(lm, mode: str) -> None:
    batch = lm.tokenize(PROMPTS)
    clean = capture(lm, batch, [])["logits"]
    with ablate_heads(lm, [(0, 0), (1, 3)], mode=mode, eps=1.0):
        same = capture(lm, batch, [])["logits"]
    torch.testing.assert_close(same, clean, atol=0, rtol=0)


def test_zero_ablation_removes_exactly_the_heads_term_from_attn_out(lm) -> None:
    batch = lm.tokenize(PROMPTS)
    layer, head = 1, 2
    names = [f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.hook_attn_out"]
    clean = capture(lm, batch, names)
    with ablate_heads(lm, [(layer, head)], mode="zero"):
        ablated = capture(lm, batch, names)
    w_o = lm.head_weights(layer).W_O[head]  # [d_head, d_model]
    term = clean[names[0]][:, :, head] @ w_o
    torch.testing.assert_close(ablated[names[1]], clean[names[1]] - term, atol=1e-5, rtol=1e-5)
    assert float(term.abs().max()) > 1e-3  # the head did contribute something


def test_scale_value_scales_only_that_query_head(lm) -> None:
    batch = lm.tokenize(PROMPTS)
    names = ["blocks.0.attn.hook_z", "blocks.0.attn.hook_pattern"]
    clean = capture(lm, batch, names)
    with ablate_heads(lm, [(0, 1)], mode="scale_value", eps=2.5):
        scaled = capture(lm, batch, names)
    torch.testing.assert_close(scaled[names[0]][:, :, 1], 2.5 * clean[names[0]][:, :, 1], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(scaled[names[0]][:, :, [0, 2, 3]], clean[names[0]][:, :, [0, 2, 3]], atol=0, rtol=0)
    torch.testing.assert_close(scaled[names[1]], clean[names[1]], atol=0, rtol=0)


def test_mean_reference_matches_brute_force_and_replaces_z(tiny_gpt2) -> None:
    lm = tiny_gpt2
    reference_prompts = ["Colourless green ideas", "sleep furiously", "x"]
    pooled = head_means(lm, reference_prompts)
    per_position = head_means(lm, reference_prompts, per_position=True)
    # Brute force: each prompt alone, no padding.
    zs = [capture(lm, lm.tokenize([p]), ["blocks.1.attn.hook_z"])["blocks.1.attn.hook_z"][0] for p in reference_prompts]
    torch.testing.assert_close(pooled.z[1], torch.cat(zs).mean(dim=0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(per_position.z[1][0], torch.stack([z[0] for z in zs]).mean(dim=0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(per_position.z[1][5], torch.stack([z[5] for z in zs[:2]]).mean(dim=0), atol=1e-5, rtol=1e-5)
    batch = lm.tokenize(["short one"])
    width = batch.tokens.shape[1]
    with ablate_heads(lm, [(1, 3)], mode="mean", reference=per_position):
        z = capture(lm, batch, ["blocks.1.attn.hook_z"])["blocks.1.attn.hook_z"]
    torch.testing.assert_close(z[0, :, 3], per_position.z[1][:width, 3], atol=0, rtol=0)
    with ablate_heads(lm, [(1, 3)], mode="mean", reference=pooled):
        z = capture(lm, batch, ["blocks.1.attn.hook_z"])["blocks.1.attn.hook_z"]
    torch.testing.assert_close(z[0, :, 3], pooled.z[1][3].expand(width, -1), atol=0, rtol=0)


def test_patch_heads_copies_the_corrupted_runs_output(lm) -> None:
    clean_batch = lm.tokenize(["The cat sat on the mat."])
    corrupt_batch = lm.tokenize(["The dog ran in the fog."])
    corrupted = cache_head_outputs(lm, corrupt_batch)
    name = "blocks.1.attn.hook_z"
    clean = capture(lm, clean_batch, [name])[name]
    with patch_heads(lm, [(1, 0), (0, 3)], corrupted):
        patched = capture(lm, clean_batch, [name])[name]
    torch.testing.assert_close(patched[:, :, 0], corrupted.z[1][:, :, 0], atol=0, rtol=0)
    assert not torch.allclose(patched[:, :, 1], clean[:, :, 1])  # layer-0 patch propagates to layer 1


def test_head_output_edit_projects_directions_out(tiny_gpt2) -> None:
    lm = tiny_gpt2
    batch = lm.tokenize(PROMPTS)
    layer, head = 1, 1
    direction = torch.randn(lm.d_model, generator=torch.Generator().manual_seed(0))
    unit = (direction / direction.norm()).to(lm.device)
    result_name = f"blocks.{layer}.attn.hook_result"
    names = [f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.hook_attn_out"]
    clean = capture(lm, batch, names)
    with apply_hooks(lm, [head_output_edit(lm, layer, head, project_out(direction))]):
        assert lm.active_hook_count() == 1
        edited = capture(lm, batch, [*names, result_name])  # per-head hook_result fires inside
    assert lm.active_hook_count() == 0  # the edit (and hook_result's switch) is gone
    result = clean[names[0]][:, :, head] @ lm.head_weights(layer).W_O[head]
    expected = clean[names[1]] - (result @ unit)[..., None] * unit
    torch.testing.assert_close(edited[names[1]], expected, atol=1e-5, rtol=1e-5)
    # The captured per-head output is the edited one: the clean z·W_O with the direction projected out.
    torch.testing.assert_close(edited[result_name][:, :, head], result - (result @ unit)[..., None] * unit,
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close((edited[result_name][:, :, head] @ unit).abs().max(),
                               torch.tensor(0.0, device=unit.device), atol=1e-5, rtol=0)
    # head_z_edit with the identity leaves the logits alone; doubling one head changes them.
    with apply_hooks(lm, [head_z_edit(lm, 0, 2, lambda z: z)]):
        same = capture(lm, batch, [])["logits"]
    torch.testing.assert_close(same, clean["logits"], atol=0, rtol=0)


def test_contexts_nest_and_always_remove_their_hooks(tiny_gpt2) -> None:
    lm = tiny_gpt2
    batch = lm.tokenize(PROMPTS)
    with ablate_heads(lm, [(0, 1), (1, 2)], mode="zero"):
        both = capture(lm, batch, [])["logits"]
    with ablate_heads(lm, [(0, 1)], mode="zero"), ablate_heads(lm, [(1, 2)], mode="zero"):
        nested = capture(lm, batch, [])["logits"]
    torch.testing.assert_close(nested, both, atol=0, rtol=0)
    with pytest.raises(RuntimeError), ablate_heads(lm, [(0, 1)], mode="uniform"):
        raise RuntimeError("boom")
    assert lm.active_hook_count() == 0


def naive_greedy(lm, ids: list[int], max_new_tokens: int) -> list[int]:
    """Greedy decoding without a cache: one full forward pass over the whole sequence per new token."""
    ids = list(ids)
    new: list[int] = []
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            logits = lm.forward(lm.pad([ids]))
            token = int(logits[0, -1].argmax())
            new.append(token)
            ids.append(token)
    return new


@pytest.mark.parametrize("mode", ["zero", "uniform", "scale_query"])
def test_interventions_hold_during_cached_generation(tiny_llama, mode: str) -> None:
    lm = tiny_llama
    prompts = ["abc abc ab", "xyz xy"]  # two lengths: the cached batch is left-padded
    heads = [(1, 1), (0, 3)]
    eps = 1e-6 if mode == "scale_query" else None
    clean = generate(lm, prompts, max_new_tokens=6, stop_at_eos=False)
    with ablate_heads(lm, heads, mode=mode, eps=eps):
        cached = generate(lm, prompts, max_new_tokens=6, stop_at_eos=False)
        uncached = [naive_greedy(lm, lm.encode(p), 6) for p in prompts]
    assert cached.token_ids == uncached
    assert cached.token_ids != clean.token_ids  # the ablation is active while decoding
    assert lm.active_hook_count() == 0


def test_bad_input_gives_one_line_errors(tiny_gpt2) -> None:
    lm = tiny_gpt2
    with pytest.raises(OptionError, match=r"layers 0\.\.1, heads 0\.\.3") as info:
        check_heads(lm, [(2, 0)])
    assert "\n" not in str(info.value)
    with pytest.raises(OptionError, match=r"heads 0\.\.3"):
        check_heads(lm, [(0, 4)])
    with pytest.raises(OptionError, match="pair"):
        check_heads(lm, ["0.1"])
    with pytest.raises(OptionError, match="choose one of"):
        with ablate_heads(lm, [(0, 0)], mode="dropout"):
            pass
    with pytest.raises(OptionError, match="reference"):
        with ablate_heads(lm, [(0, 0)], mode="mean"):
            pass
    with pytest.raises(OptionError, match="eps=alpha"):
        with ablate_heads(lm, [(0, 0)], mode="scale_value"):
            pass
    with pytest.raises(InterpUserError, match="no heads"):
        with ablate_heads(lm, [], mode="zero"):
            pass
    assert set(ABLATION_MODES) == {"zero", "mean", "resample", "scale_output", "scale_value", "scale_query", "uniform"}
