"""The backend protocol itself, and the TransformerBridge's known traps, checked against the hooked backend.

Both backends wrap the same Hugging Face test model, so every activation, gradient and edit must agree:

* TransformerLens #1317 — in compatibility mode the Bridge registers *aliases*; an alias that fires at a
  different point from the HookedTransformer hook of the same name gives silently different numbers.
  Every hook name the suite's methods use is compared activation by activation, and each hook function
  must receive the name it was installed under.
* TransformerLens #1559 — gradients through the Bridge's hooks (attribution patching differentiates the
  metric with respect to ``hook_z``): compared with the hooked backend and with a finite difference.
* TransformerLens #1740 — an edit to ``hook_pattern`` (or the scores, queries, values) must change the
  output, by the same amount on both backends.

Backend-specific tests skip where the installed TransformerLens has no hooked backend (transformer-lens 4).
"""

from __future__ import annotations

import pytest
import torch

import interp
from interp.backends import available_backends
from interp.errors import OptionError

needs_both = pytest.mark.skipif("hooked" not in available_backends(),
                                reason="transformer-lens 4 has no HookedTransformer: nothing to compare with")

#: Hook names the suite's methods read or edit (grep of interp/ and analyses/).
DECODER_HOOKS = (
    "blocks.{l}.hook_resid_pre", "blocks.{l}.hook_resid_mid", "blocks.{l}.hook_resid_post", "blocks.{l}.hook_attn_out",
    "blocks.{l}.hook_mlp_out", "blocks.{l}.attn.hook_q", "blocks.{l}.attn.hook_k", "blocks.{l}.attn.hook_v",
    "blocks.{l}.attn.hook_z", "blocks.{l}.attn.hook_pattern", "blocks.{l}.attn.hook_attn_scores",
    "blocks.{l}.ln1.hook_scale", "ln_final.hook_scale", "unembed.hook_out",
)
ROTARY_HOOKS = ("blocks.{l}.attn.hook_rot_q", "blocks.{l}.attn.hook_rot_k")
ENCODER_HOOKS = ("blocks.{l}.hook_resid_pre", "blocks.{l}.hook_resid_post", "blocks.{l}.hook_normalized_resid_post",
                 "blocks.{l}.attn.hook_z", "blocks.{l}.attn.hook_pattern", "blocks.{l}.attn.hook_v")


def _pair(name: str):
    return interp.load_model(name, backend="hooked"), interp.load_model(name, backend="bridge")


def _available(name: str):
    """Every backend the installed TransformerLens offers (the bridge alone under transformer-lens 4)."""
    return [interp.load_model(name, backend=b) for b in available_backends()]


def _batch(lm):
    return lm.tokenize(["The cat sat on the mat, and the cat sat again.", "A dog ran."])


def _names(name: str, lm) -> list[str]:
    templates = ENCODER_HOOKS if lm.is_encoder else DECODER_HOOKS + (ROTARY_HOOKS if lm.facts.positional == "rotary" else ())
    return [t.format(l=layer) for t in templates for layer in range(lm.n_layers) if "{l}" in t] + \
        [t for t in templates if "{l}" not in t]


@needs_both
@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama", "tiny-bert"])
def test_every_hook_the_methods_use_fires_at_the_same_point_on_both_backends(name):
    """#1317: same activation under the same name; masked (padded) entries are ignored."""
    hooked, bridge = _pair(name)
    batch = _batch(hooked)
    names = [n for n in _names(name, hooked) if n in hooked.hook_names()]
    assert names and set(names) <= bridge.hook_names()
    a, b = hooked.capture(batch, names), bridge.capture(batch, names)
    real = batch.attention_mask.bool()
    for n in names:
        left, right = a[n], b[n]
        assert left.shape == right.shape, n
        if n.endswith(("hook_pattern", "hook_attn_scores")):  # [batch, head, query, key]
            keep = real[:, None, :, None] & real[:, None, None, :]
            left, right = left.masked_select(keep.expand_as(left)), right.masked_select(keep.expand_as(right))
            finite = torch.isfinite(left)
            assert torch.equal(finite, torch.isfinite(right)), n
            left, right = left[finite], right[finite]
        elif left.dim() >= 2 and left.shape[:2] == real.shape:
            left, right = left[real], right[real]
        assert torch.allclose(left, right, atol=2e-5, rtol=1e-4), (n, float((left - right).abs().max()))


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama", "tiny-bert"])
def test_hooks_receive_the_name_they_were_installed_under(name):
    lm = interp.load_model(name)
    seen: list[str] = []
    names = ["blocks.1.hook_resid_pre", "blocks.0.attn.hook_z", "blocks.1.hook_resid_post"]
    with lm.hooks([(n, lambda x, hook: seen.append(hook.name)) for n in names]):
        lm.forward(_batch(lm), return_type=None)
    assert sorted(seen) == sorted(names)
    assert lm.active_hook_count() == 0


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_gradients_through_hook_z_agree_and_match_a_finite_difference(name):
    """#1559: ∂logit/∂z by autograd on both backends, and a central difference on the bridge."""
    grads = {}
    batch = _batch(interp.load_model(name))
    target = (0, 8, 5)  # batch row, position, token

    for lm in _available(name):
        store: dict[str, torch.Tensor] = {}

        def keep(z, hook, store=store):
            z = z.detach().requires_grad_(True)
            store["z"] = z
            return z

        with torch.enable_grad():
            logits = lm.forward(batch, fwd_hooks=[("blocks.0.attn.hook_z", keep)])
            (grad,) = torch.autograd.grad(logits[target], store["z"])
        grads[lm.backend] = grad
    assert grads["bridge"].abs().max() > 1e-4  # the logit depends on z, so the comparison can fail
    if "hooked" in grads:
        assert torch.allclose(grads["hooked"], grads["bridge"], atol=1e-5, rtol=1e-3)

    bridge = interp.load_model(name, backend="bridge")
    step, index = 1e-3, (0, 8, 1, 3)  # a coordinate of head 1's z at the target position

    def logit_with(delta: float) -> float:
        def nudge(z, hook):
            z = z.clone()
            z[index] += delta
            return z

        with torch.no_grad():
            return float(bridge.forward(batch, fwd_hooks=[("blocks.0.attn.hook_z", nudge)])[target].double())

    finite = (logit_with(step) - logit_with(-step)) / (2 * step)
    assert finite == pytest.approx(float(grads["bridge"][index]), rel=2e-2, abs=1e-4)


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
@pytest.mark.parametrize("hook", ["attn.hook_pattern", "attn.hook_attn_scores", "attn.hook_q", "attn.hook_v"])
def test_edits_change_the_output_by_the_same_amount(name, hook):
    """#1740: editing the pattern (uniform over allowed keys), the scores, queries or values of layer 1."""
    def edit(x, hook):
        if hook.name.endswith("hook_pattern"):
            allowed = (x > 0).to(x.dtype)
            return allowed / allowed.sum(-1, keepdim=True).clamp(min=1)
        return x * 0.3

    outputs = {}
    batch = _batch(interp.load_model(name))
    real = batch.attention_mask.bool()
    for lm in _available(name):
        with torch.no_grad():
            clean = lm.forward(batch)
            edited = lm.forward(batch, fwd_hooks=[(f"blocks.1.{hook}", edit)])
        outputs[lm.backend] = (clean, edited)
        assert float((edited - clean)[real].abs().max()) > 1e-3, lm.backend  # the edit reaches the output
    if "hooked" not in outputs:
        return
    change_h = (outputs["hooked"][1] - outputs["hooked"][0])[real]
    change_b = (outputs["bridge"][1] - outputs["bridge"][0])[real]
    assert torch.allclose(change_h, change_b, atol=1e-4)


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_resume_from_every_layer_equals_the_full_pass(name):
    lm = interp.load_model(name)
    batch = _batch(lm)
    real = batch.attention_mask.bool()
    with torch.no_grad():
        full = lm.forward(batch)
        for start in range(lm.n_layers):
            resid = lm.capture(batch, [f"blocks.{start}.hook_resid_pre"])[f"blocks.{start}.hook_resid_pre"]
            resumed = lm.forward(residual=resid, start_at_layer=start, attention_mask=batch.attention_mask)
            assert float((resumed - full)[real].abs().max()) < 1e-4, start
            final = lm.forward(residual=resid, start_at_layer=start, attention_mask=batch.attention_mask,
                               stop_at_layer=lm.n_layers)
            assert float((lm.resid_to_logits(final) - full)[real].abs().max()) < 1e-4, start


def test_hooks_are_removed_on_exceptions_and_contexts_nest(tiny_llama):
    batch = _batch(tiny_llama)

    def boom(x, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        tiny_llama.forward(batch, fwd_hooks=[("blocks.0.hook_resid_pre", boom)])
    assert tiny_llama.active_hook_count() == 0
    with tiny_llama.hooks([("blocks.0.hook_resid_pre", lambda x, hook: x)]):
        with tiny_llama.hooks([("blocks.1.hook_resid_pre", lambda x, hook: x)]):
            assert tiny_llama.active_hook_count() == 2
        assert tiny_llama.active_hook_count() == 1  # the inner context removed its own hook only
    assert tiny_llama.active_hook_count() == 0


def test_unknown_hook_names_are_one_line_option_errors(tiny_gpt2):
    with pytest.raises(OptionError, match=r"unknown hook name\(s\) \['blocks.9.hook_z'\]") as info:
        with tiny_gpt2.hooks([("blocks.9.hook_z", lambda x, hook: x)]):
            pass
    assert "\n" not in str(info.value)


def test_hook_result_is_on_only_while_a_hook_listens(tiny_gpt2):
    """Per-head results without callers toggling config; the sum of the heads' results plus b_O is the output."""
    store = {}
    names = ["blocks.1.attn.hook_result", "blocks.1.hook_attn_out"]
    batch = _batch(tiny_gpt2)
    with torch.no_grad(), tiny_gpt2.hooks([(n, lambda x, hook: store.__setitem__(hook.name, x)) for n in names]):
        tiny_gpt2.forward(batch, return_type=None)
    total = store[names[0]].sum(dim=2) + tiny_gpt2.head_weights(1).b_O
    assert torch.allclose(total, store[names[1]], atol=1e-5)
    store.clear()
    with torch.no_grad(), tiny_gpt2.hooks([("blocks.1.hook_attn_out", lambda x, hook: None)]):
        tiny_gpt2.forward(batch, return_type=None)
    assert tiny_gpt2.active_hook_count() == 0


def test_kv_cached_decoding_equals_a_full_forward_on_both_backends():
    """The cached decode step against a full forward of the whole sequence (left padding in the first call)."""
    for lm in _available("tiny-llama"):
        rows = [lm.encode("abcdef"), lm.encode("xy")]
        width = max(len(r) for r in rows)
        tokens = torch.tensor([[lm.pad_token_id] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        cache = lm.new_kv_cache(2)
        first = lm.decode_step(tokens, mask, cache)
        nxt = first.argmax(-1)
        second = lm.decode_step(nxt[:, None], torch.ones(2, 1, dtype=torch.long), cache)
        for row in range(2):
            seq = rows[row] + [int(nxt[row])]
            with torch.no_grad():
                full = lm.forward(lm.pad([seq]))
            assert torch.allclose(full[0, -2], first[row], atol=1e-4), lm.backend
            assert torch.allclose(full[0, -1], second[row], atol=1e-4), lm.backend


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_block_by_block_weight_processing_equals_the_bridges_own_bit_for_bit(name):
    """``process_weights_by_block`` (the bridge backend's loader) against ``TransformerBridge.process_weights``
    on the same weights: every processed tensor identical, and processing really happened (the folded norm
    gains are 1, the unembedding is centred over the vocabulary)."""
    import functools
    import warnings

    from transformer_lens.model_bridge import TransformerBridge

    from interp.backends.bridge_weights import process_weights_by_block
    from interp.models.tiny import tiny_source

    source = tiny_source(name)
    states = []
    for ours in (False, True):
        hf = source.build_hf(torch.float32, {})
        hf.set_attn_implementation("eager")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bridge = TransformerBridge.boot_transformers(source.tl_name or source.name, hf_model=hf,
                                                         tokenizer=source.tokenizer, dtype=torch.float32, device="cpu")
            raw = {k: v.detach().clone() for k, v in bridge.state_dict().items()}
            if ours:
                bridge.process_weights = functools.partial(process_weights_by_block, bridge)
            bridge.enable_compatibility_mode(disable_warnings=True)
        states.append({k: v.detach().clone() for k, v in bridge.state_dict().items()})
    theirs, mine = states
    assert theirs.keys() == mine.keys()
    assert all(torch.equal(theirs[k], mine[k]) for k in theirs), [k for k in theirs if not torch.equal(theirs[k], mine[k])]
    assert torch.equal(mine["blocks.1.ln1.weight"], torch.ones_like(mine["blocks.1.ln1.weight"]))
    assert raw["unembed.weight"].mean(0).abs().max() > 1e-4  # the test models' norm gains start at 1, so
    assert mine["unembed.weight"].mean(0).abs().max() < 1e-6  # centring the unembedding shows processing ran
