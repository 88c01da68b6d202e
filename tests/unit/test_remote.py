"""Remote execution on NDIF, without a network: nnsight's own request path against a stand-in server.

Every request below is built and serialized by nnsight's ``RemoteBackend`` exactly as it would be sent to
NDIF; only the two network calls are replaced by a pipe to ``tests/ndif_server.py``, a separate process in
which ``interp`` cannot be imported, which loads the same checkpoint with nnsight and runs the request as an
NDIF deployment does. Its results must equal the local nnsight backend's (bit for bit: the same code runs on
the same weights). Also: the hook-state round trip on its own, and the one-line refusals and errors.
Skipped where nnsight is not installed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import interp
from interp.backends.hook_state import export, merge, shipped, versions
from interp.data import default_prompts
from interp.errors import OptionError, RemoteExecutionError

pytest.importorskip("nnsight")

import nnsight.modeling.huggingface as nnsight_hf  # noqa: E402

from tests.ndif_standin import stand_in  # noqa: E402

NAMES = ["tiny-llama", "tiny-gpt2"]


def _folder(root: Path, name: str) -> Path:
    """A test model saved as a Hugging Face checkpoint (what a server would serve)."""
    from interp.models import _source

    folder = root / name
    if not folder.exists():
        source = _source(name, 0, None)
        source.build_hf(torch.float32, {}).save_pretrained(folder)
        source.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """For each test model: the local nnsight backend and the remote one (stand-in server), on one checkpoint."""
    root = tmp_path_factory.mktemp("served")
    out = {}
    for name in NAMES:
        folder = _folder(root, name)
        connection = interp.Remote(transport=stand_in(folder))
        remote = interp.load_model(str(folder), backend="nnsight", remote=connection, reuse=False)
        nnsight_hf._ID_CACHE[connection.model_id] = connection.model_id  # the hub is not asked (offline)
        out[name] = (interp.load_model(str(folder), backend="nnsight", reuse=False), remote)
    return out


def _batch(lm):
    return lm.tokenize(["The cat sat on the mat, and the cat sat again.", "A dog ran."])


# -- the hook state round trip -----------------------------------------------------------------------
def _round_trip(make, run):
    """What a remote pass does to the hooks' state. ``make()`` builds a hook and the objects it holds; a second
    call stands for the server's copy (same structure, fresh objects, as a request's unpickled copy is)."""
    (hook, *caller) = make()
    (server_hook, *_) = make()
    order, server_order = shipped([hook]), shipped([server_hook])
    assert len(order) == len(server_order)
    before = versions(server_order)
    run(server_hook)
    merge(order, export(server_order, before))
    return caller


@dataclasses.dataclass
class _Counter:
    total: torch.Tensor
    seen: list[int]


def test_hook_state_comes_back_into_the_callers_objects_in_place():
    def make():
        store: dict[str, torch.Tensor] = {"old": torch.zeros(1)}
        counter = _Counter(torch.zeros(3), [])
        untouched = torch.arange(4.0)

        def hook(x, hook=None, counter=counter):
            store["sum"] = x.sum()
            store.pop("old", None)
            counter.total += x  # in place
            counter.seen.append(len(counter.seen))
            _ = untouched.sum()

        return hook, store, counter, untouched

    def run(hook):
        for _ in range(2):
            hook(torch.ones(3))

    store, counter, untouched = _round_trip(make, run)
    alias, keep_untouched = store, untouched
    assert alias is store and set(store) == {"sum"} and float(store["sum"]) == 3.0
    assert torch.equal(counter.total, torch.full((3,), 2.0)) and counter.seen == [0, 1]
    assert untouched is keep_untouched and torch.equal(untouched, torch.arange(4.0))


def test_objects_made_on_the_server_come_back_as_their_class():
    def make():
        made: list[object] = []

        def hook(x, hook=None):
            made.append(_Counter(x * 2, [1]))

        return hook, made

    (made,) = _round_trip(make, lambda hook: hook(torch.ones(2)))
    assert isinstance(made[0], _Counter) and torch.equal(made[0].total, torch.full((2,), 2.0))


# -- the stand-in server -------------------------------------------------------------------------------
def test_the_server_runs_requests_where_interp_cannot_be_imported(models):
    """Unregistered, ``interp``'s functions travel by reference, and the server cannot resolve them."""
    from cloudpickle import register_pickle_by_value, unregister_pickle_by_value

    import interp.backends.ndif as ndif

    _, remote = models["tiny-llama"]
    assert remote.capture(_batch(remote), ["blocks.0.hook_resid_post"])  # interp is registered by value now
    shipping = ndif._ship_by_value
    try:
        ndif._ship_by_value = lambda fns: None
        unregister_pickle_by_value(interp)
        with pytest.raises(RemoteExecutionError, match="interp"):
            remote.capture(_batch(remote), ["blocks.0.hook_resid_post"])
    finally:
        register_pickle_by_value(interp)
        ndif._ship_by_value = shipping
    assert remote.capture(_batch(remote), ["blocks.0.hook_resid_post"])  # and registered again, works


@pytest.mark.parametrize("name", NAMES)
def test_every_hook_name_and_the_logits_equal_the_local_run(models, name):
    local, remote = models[name]
    names = sorted(local.hook_names())
    batch = _batch(local)
    before = remote.remote.traffic.requests
    with torch.inference_mode():
        a, b = local.capture(batch, names), remote.capture(batch, names)
        assert torch.equal(local.forward(batch), remote.forward(batch))
    assert remote.remote.traffic.requests == before + 2  # one request per pass
    for n in names:
        assert torch.equal(a[n], b[n]), n


@pytest.mark.parametrize("name", NAMES)
def test_edits_stops_resumes_and_weights_equal_the_local_run(models, name):
    local, remote = models[name]
    batch = _batch(local)

    def edits(z, hook):
        return z * 0.5

    def head_edit(result, hook):
        result[:, :, 1] = 0
        return result

    def flat(pattern, hook):
        return torch.ones_like(pattern) / pattern.shape[-1]

    hooks = [("blocks.0.attn.hook_z", edits), ("blocks.1.attn.hook_result", head_edit),
             ("blocks.1.attn.hook_pattern", flat)]
    with torch.inference_mode():
        assert torch.equal(local.forward(batch, fwd_hooks=hooks), remote.forward(batch, fwd_hooks=hooks))
        middle = local.forward(batch, stop_at_layer=1)
        assert torch.equal(middle, remote.forward(batch, stop_at_layer=1))
        assert torch.equal(local.forward(batch, start_at_layer=1, residual=middle),
                           remote.forward(batch, start_at_layer=1, residual=middle))
        for lm in (local, remote):
            assert torch.equal(lm.final_norm(middle), local.final_norm(middle))
    weights = [local.head_weights(1), remote.head_weights(1)]
    for field in ("W_Q", "W_K", "W_V", "W_O", "b_O"):
        assert torch.equal(getattr(weights[0], field), getattr(weights[1], field)), field
    assert torch.equal(local.W_U, remote.W_U) and torch.equal(local.W_E, remote.W_E)
    assert remote.remote.weights.requests >= 3 and remote.remote.weights.received > 0


def test_generation_with_a_steering_hook_gives_the_local_tokens(models):
    from interp.generation import generate

    local, remote = models["tiny-llama"]

    def push(resid, hook):
        return resid + 0.5

    runs = [generate(lm, ["The cat", "A dog ran to the"], max_new_tokens=5, fwd_hooks=[("blocks.0.hook_resid_post", push)])
            for lm in (local, remote)]
    assert runs[0].token_ids == runs[1].token_ids


@pytest.mark.parametrize("analysis, options", [
    ("attention-sinks", dict(max_tokens=32)),
    ("svd-channels", dict(baseline_samples=10, sequences=2, half_length=10, heads=2, random_trials=1)),
])
def test_analyses_give_the_local_frame(models, analysis, options):
    local, remote = models["tiny-llama"]
    prompts = None if analysis == "svd-channels" else default_prompts()[:4]
    a = interp.run(analysis, local, prompts, progress=False, **options)
    b = interp.run(analysis, remote, prompts, progress=False, **options)
    assert a.frame.equals(b.frame)
    travelled = b.metadata["remote"]
    assert travelled["requests"] >= 1 and travelled["bytes_received"] > 0 and travelled["model_id"]


# -- what a remote model refuses, in one line ----------------------------------------------------------
def test_what_cannot_run_remotely_is_refused_in_one_line(models):
    _, remote = models["tiny-llama"]
    batch = _batch(remote)
    with pytest.raises(OptionError, match="backward hooks"):
        with remote.hooks(bwd_hooks=[("blocks.0.attn.hook_z", lambda g, hook: None)]):
            remote.forward(batch)
    gate = torch.ones(1, requires_grad=True)
    with pytest.raises(OptionError, match="differentiating through a pass"):
        remote.forward(batch, fwd_hooks=[("blocks.0.attn.hook_z", lambda z, hook: z * gate)])
    with pytest.raises(OptionError, match="holds the model object"):
        remote.forward(batch, fwd_hooks=[("blocks.0.attn.hook_z", lambda z, hook: z * remote.n_heads / remote.n_heads)])
    with pytest.raises(OptionError, match="sae-lens"):
        remote.native_model()
    with pytest.raises(OptionError, match="head-importance cannot run remotely.*remote analyses: attention-sinks"):
        interp.run("head-importance", remote, None)
    for error in (OptionError, RemoteExecutionError):
        assert "\n" not in str(error)


def test_bad_remote_setups_exit_2_with_one_line(monkeypatch, capsys, tmp_path):
    from interp.cli import main

    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    cases = [
        (["--backend", "bridge"], "runs on the nnsight backend, not 'bridge': add --backend nnsight"),
        ([], "needs an API key: set NDIF_API_KEY"),
    ]
    for extra, message in cases:
        assert main(["run", "attention-sinks", "--model", "tiny-llama", "--remote", "--out", str(tmp_path), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    monkeypatch.setenv("NDIF_API_KEY", "a-key")
    assert main(["run", "attention-sinks", "--model", "tiny-llama", "--remote", "--out", str(tmp_path)]) == 2
    assert "built in code, so no server has it" in capsys.readouterr().err


def test_no_network_and_server_refusals_are_one_line(models, monkeypatch, tmp_path):
    from nnsight.intervention.backends.remote import RemoteBackend
    from nnsight.schema.response import ResponseModel, Status

    folder = _folder(tmp_path, "tiny-llama")
    monkeypatch.setenv("NDIF_API_KEY", "a-key")
    unreachable = interp.Remote(host="http://127.0.0.1:9")  # nothing listens there: connection refused
    lm = interp.load_model(str(folder), backend="nnsight", remote=unreachable, reuse=False)
    with pytest.raises(RemoteExecutionError, match="could not be asked for"):  # offline: the hub id lookup
        lm.capture(_batch(lm), ["blocks.0.hook_resid_post"])
    nnsight_hf._ID_CACHE[unreachable.model_id] = unreachable.model_id
    with pytest.raises(RemoteExecutionError, match=r"NDIF \(http://127.0.0.1:9\) could not be reached"):
        lm.capture(_batch(lm), ["blocks.0.hook_resid_post"])

    for said, expected in [("Invalid API key.", "rejected the API key"),
                           ("Model key is not deployed on this cluster.", "does not serve"),
                           ("CUDA out of memory", "request for")]:
        class Refusing(RemoteBackend):
            def request(self, request, tracer, said=said):
                self._serialize(tracer)
                return self.handle(ResponseModel(id="x", status=Status.ERROR, description=said))

        lm = interp.load_model(str(folder), backend="nnsight", remote=interp.Remote(transport=Refusing), reuse=False)
        with pytest.raises(RemoteExecutionError, match=expected) as caught:
            lm.capture(_batch(lm), ["blocks.0.hook_resid_post"])
        assert said in str(caught.value) and "\n" not in str(caught.value)
