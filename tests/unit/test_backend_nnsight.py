"""The ``nnsight`` backend against the bridge backend on the same Hugging Face test model, unprocessed.

nnsight runs the raw checkpoint (no TransformerLens weight processing), so the reference is the bridge
backend with every processing flag off: the same coordinates, computed by TransformerLens's hook points
instead of nnsight's module and ``.source`` events. Every TransformerLens name the nnsight backend offers
must give the same activation, every writable one the same change of the output when edited, and the
gradients must match a finite difference. Skipped where nnsight is not installed (the transformer-lens 4
environment).
"""

from __future__ import annotations

import pytest
import torch

import interp
from interp.errors import OptionError, UnknownModelError

pytest.importorskip("nnsight")

RAW = {"fold_ln": False, "center_writing_weights": False, "center_unembed": False, "fold_value_biases": False}
NAMES = ["tiny-gpt2", "tiny-llama"]


def _pair(name: str):
    return interp.load_model(name, backend="nnsight"), interp.load_model(name, backend="bridge", processing=RAW)


def _batch(lm):
    return lm.tokenize(["The cat sat on the mat, and the cat sat again.", "A dog ran."])


@pytest.mark.parametrize("name", NAMES)
def test_every_hook_name_gives_the_bridges_activation(name):
    nn, bridge = _pair(name)
    assert nn.backend == "nnsight" and not any(nn.info.processing.values())
    batch = _batch(nn)
    names = sorted(nn.hook_names())
    assert {"blocks.0.attn.hook_pattern", "blocks.1.attn.hook_result", "ln_final.hook_scale"} <= set(names)
    assert set(names) <= bridge.hook_names()
    with torch.no_grad():
        a, b = nn.capture(batch, names), bridge.capture(batch, names)
    real = batch.attention_mask.bool()
    for n in names:
        left, right = a[n], b[n]
        assert left.shape == right.shape, n
        if n.endswith(("hook_pattern", "hook_attn_scores")):
            keep = real[:, None, :, None] & real[:, None, None, :]
            left, right = left.masked_select(keep.expand_as(left)), right.masked_select(keep.expand_as(right))
            finite = torch.isfinite(left)
            assert torch.equal(finite, torch.isfinite(right)), n  # masked scores are −inf on both
            left, right = left[finite], right[finite]
        elif left.dim() >= 2 and left.shape[:2] == real.shape:
            left, right = left[real], right[real]
        assert torch.allclose(left, right, atol=2e-5, rtol=1e-4), (n, float((left - right).abs().max()))
    with torch.no_grad():
        assert torch.allclose(nn.forward(batch)[real], bridge.forward(batch)[real], atol=1e-5)


EDITS = ["attn.hook_pattern", "attn.hook_attn_scores", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z",
         "attn.hook_result", "hook_resid_pre", "hook_attn_out", "hook_mlp_out", "hook_resid_post"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("hook", EDITS)
def test_edits_change_the_output_by_the_bridges_amount(name, hook):
    def edit(x, hook):
        if hook.name.endswith("hook_pattern"):
            allowed = (x > 0).to(x.dtype)
            return allowed / allowed.sum(-1, keepdim=True).clamp(min=1)
        if hook.name.endswith("hook_result"):
            x = x.clone()
            x[:, :, 1] = 0  # one head ablated
            return x
        if hook.name.endswith("hook_attn_scores"):
            return x * 0.3  # masked scores stay −inf
        return x * 0.3 + x.roll(1, dims=-1) * 0.2  # not a pure rescaling, which a following norm would undo

    batch = _batch(interp.load_model(name, backend="nnsight"))
    real = batch.attention_mask.bool()
    changes = []
    for lm in _pair(name):
        with torch.no_grad():
            clean = lm.forward(batch)
            edited = lm.forward(batch, fwd_hooks=[(f"blocks.1.{hook}", edit)])
        changes.append((edited - clean)[real])
        assert lm.active_hook_count() == 0
    assert float(changes[0].abs().max()) > 1e-3  # the edit reaches the output, so the comparison can fail
    assert torch.allclose(changes[0], changes[1], atol=1e-4), float((changes[0] - changes[1]).abs().max())


def test_rotary_query_edit_and_embedding_edit_reach_the_output():
    nn, bridge = _pair("tiny-llama")
    batch = _batch(nn)
    real = batch.attention_mask.bool()
    for hook in ("blocks.0.attn.hook_rot_q", "blocks.0.attn.hook_rot_k", "hook_embed"):
        changes = []
        for lm in (nn, bridge):
            with torch.no_grad():
                changes.append((lm.forward(batch, fwd_hooks=[(hook, lambda x, hook: x * 0.5)]) - lm.forward(batch))[real])
        assert float(changes[0].abs().max()) > 1e-3, hook
        assert torch.allclose(changes[0], changes[1], atol=1e-4), hook


@pytest.mark.parametrize("name", NAMES)
def test_gradients_through_hook_z_match_a_finite_difference_and_backward_hooks_edit_them(name):
    nn = interp.load_model(name, backend="nnsight")
    batch = _batch(nn)
    target, index, step = (0, 8, 5), (0, 8, 1, 3), 1e-3
    store = {}

    def keep(z, hook):
        z = z.detach().requires_grad_(True)
        store["z"] = z
        return z

    with torch.enable_grad():
        logits = nn.forward(batch, fwd_hooks=[("blocks.0.attn.hook_z", keep)])
        (grad,) = torch.autograd.grad(logits[target], store["z"])

    def logit_with(delta: float) -> float:
        def nudge(z, hook):
            z = z.clone()
            z[index] += delta
            return z

        with torch.no_grad():
            return float(nn.forward(batch, fwd_hooks=[("blocks.0.attn.hook_z", nudge)])[target].double())

    finite = (logit_with(step) - logit_with(-step)) / (2 * step)
    assert abs(float(grad[index])) > 1e-4
    assert finite == pytest.approx(float(grad[index]), rel=2e-2, abs=1e-4)

    # a backward hook sees ∂/∂(resid_pre of block 1) in TransformerLens's shape and can rescale it
    seen = {}

    def grads_of(scale: float):
        def on_grad(g, hook):
            seen[hook.name] = g.shape
            return g * scale

        embeds = nn.W_E.detach().clone().requires_grad_(True)
        with torch.enable_grad(), nn.hooks([("hook_embed", lambda x, hook: embeds[batch.tokens])],
                                           bwd_hooks=[("blocks.1.hook_resid_pre", on_grad)]):
            out = nn.forward(batch)[target]
            (g,) = torch.autograd.grad(out, embeds)
        return g

    plain, doubled = grads_of(1.0), grads_of(2.0)
    assert seen["blocks.1.hook_resid_pre"] == (2, batch.tokens.shape[1], nn.d_model)
    assert torch.allclose(doubled, 2 * plain, atol=1e-6) and float(plain.abs().max()) > 1e-5
    assert nn.active_hook_count() == 0


@pytest.mark.parametrize("name", NAMES)
def test_resume_and_stop_equal_the_full_pass(name):
    nn = interp.load_model(name, backend="nnsight")
    batch = _batch(nn)
    real = batch.attention_mask.bool()
    with torch.no_grad():
        full = nn.forward(batch)
        for start in range(nn.n_layers):
            resid = nn.forward(batch, stop_at_layer=start) if start else \
                nn.capture(batch, ["blocks.0.hook_resid_pre"])["blocks.0.hook_resid_pre"].clone()
            resumed = nn.forward(residual=resid, start_at_layer=start, attention_mask=batch.attention_mask)
            assert float((resumed - full)[real].abs().max()) < 1e-4, start
        final = nn.forward(batch, stop_at_layer=nn.n_layers)
        assert float((nn.resid_to_logits(final) - full)[real].abs().max()) < 1e-4


def test_kv_cached_decoding_with_a_hook_equals_a_full_forward():
    nn = interp.load_model("tiny-llama", backend="nnsight")
    halve = [("blocks.1.hook_resid_post", lambda x, hook: x * 0.5)]
    rows = [nn.encode("abcdef"), nn.encode("xy")]
    width = max(len(r) for r in rows)
    tokens = torch.tensor([[nn.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    cache = nn.new_kv_cache(2)
    with nn.hooks(halve):
        first = nn.decode_step(tokens, mask, cache)
        nxt = first.argmax(-1)
        second = nn.decode_step(nxt[:, None], torch.ones(2, 1, dtype=torch.long), cache)
    for row in range(2):
        with torch.no_grad():
            full = nn.forward(nn.pad([rows[row] + [int(nxt[row])]]), fwd_hooks=halve)
        assert torch.allclose(full[0, -2], first[row], atol=1e-4)
        assert torch.allclose(full[0, -1], second[row], atol=1e-4)


def test_weights_and_norms_give_the_bridges_logits():
    nn, bridge = _pair("tiny-llama")
    for layer in range(nn.n_layers):
        a, b = nn.head_weights(layer), bridge.head_weights(layer)
        for field in ("W_Q", "W_K", "W_V", "W_O", "b_O"):
            assert torch.allclose(getattr(a, field), getattr(b, field), atol=1e-6), field
    assert torch.allclose(nn.W_U, bridge.W_U) and torch.allclose(nn.W_E, bridge.W_E)
    batch = _batch(nn)
    with torch.no_grad():
        final = nn.forward(batch, stop_at_layer=nn.n_layers)
        assert torch.allclose(nn.resid_to_logits(final), bridge.resid_to_logits(final), atol=1e-5)


def test_bad_uses_are_one_line_errors():
    nn = interp.load_model("tiny-llama", backend="nnsight")
    batch = _batch(nn)
    with pytest.raises(OptionError, match="can be read but not edited") as info:
        nn.forward(batch, fwd_hooks=[("blocks.0.ln1.hook_scale", lambda x, hook: x * 2)])
    assert "\n" not in str(info.value) and nn.active_hook_count() == 0
    with pytest.raises(RuntimeError, match="boom"):
        nn.forward(batch, fwd_hooks=[("blocks.0.hook_resid_pre", lambda x, hook: (_ for _ in ()).throw(RuntimeError("boom")))])
    assert nn.active_hook_count() == 0
    with pytest.raises(UnknownModelError, match="encoder") as info:
        interp.load_model("tiny-bert", backend="nnsight")
    assert "\n" not in str(info.value)
    twin = nn.native_model()  # the unprocessed bridge over the same checkpoint, for sae-lens
    assert type(twin).__name__ == "TransformerBridge"
