"""Remote execution on NDIF (https://ndif.us): each pass of the ``nnsight`` backend as one nnsight request.

``load_model(ID, backend="nnsight", remote=True)`` builds the model on the meta device from its
configuration (no weights are loaded here) and sends every pass to the NDIF server that serves ``ID``,
through nnsight's own :class:`~nnsight.intervention.backends.remote.RemoteBackend`: the pass's trace body
(:func:`_remote_pass`, the same event walk the local backend runs) and the hooks it calls are pickled by
value, the server runs them on its copy of the model, and what comes back is what the hooks kept (their
closures' accumulators, reduced on the server; see :mod:`interp.backends.hook_state`) plus the logits or
the stopping residual when the caller asked for them. Activations the hooks do not keep never travel.

What a remote model cannot do, each refused in one line: backward hooks and gradients (the backward pass
would run on the caller's side of a finished request), resuming from a layer (it swaps the model's
blocks), KV-cached generation (the cache would live on the server between requests), reading weights
(they stay on the server), and handing a TransformerLens model to a peer library (sae-lens).

The API key comes from ``NDIF_API_KEY`` (or nnsight's own configuration) and the host from ``NDIF_HOST``
(default ``https://api.ndif.us``). Without a network, without a key, with a rejected key or a model the
server does not serve, the run stops with a :class:`~interp.errors.RemoteExecutionError` (one line,
exit 2 on the command line).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from interp.backends.hook_state import export, merge, shipped, versions
from interp.backends.nnsight import _interleave, _module
from interp.errors import OptionError, RemoteExecutionError

DEFAULT_HOST = "https://api.ndif.us"
#: Packages an NDIF server has installed: anything else a hook uses is shipped by value.
SERVER_PACKAGES = frozenset({"torch", "numpy", "transformers", "accelerate", "einops", "nnsight", "builtins"})


#: Analyses a remote model cannot run, and why (docs/concepts/backends.md has the same table).
NOT_REMOTE = {
    "head-importance": "its gradient importance and attribution patching differentiate through the pass, and the "
                       "autograd graph of a remote pass stays on the server",
    "explanation-agreement": "its gradient attributions (saliency, integrated gradients, SHAP) differentiate through "
                             "the embeddings, and the autograd graph of a remote pass stays on the server",
    "language-steering": "it trains a sparse autoencoder with sae-lens, which reads activations through a "
                         "TransformerLens model built on the weights, and the weights stay on the server",
}


def check_remote_analysis(name: str) -> None:
    """One line (an :class:`~interp.errors.OptionError`) when analysis ``name`` cannot run on a remote model."""
    if name in NOT_REMOTE:
        runnable = ", ".join(sorted(n for n in _analysis_names() if n not in NOT_REMOTE))
        raise OptionError(f"{name} cannot run remotely: {NOT_REMOTE[name]}; run it without --remote (remote "
                          f"analyses: {runnable})")


def _analysis_names() -> list[str]:
    from interp.registry import analysis_names

    return list(analysis_names())


@dataclass
class Traffic:
    """Bytes sent and received by a model's remote requests (compressed, as on the wire)."""

    requests: int = 0
    sent: int = 0
    received: int = 0
    per_request: list[tuple[int, int]] = field(default_factory=list)

    def add(self, sent: int, received: int) -> None:
        self.requests += 1
        self.sent += sent
        self.received += received
        self.per_request.append((sent, received))


@functools.cache
def _measured(base: type) -> type:
    """``base`` (nnsight's RemoteBackend or a subclass) recording each request's payload and result sizes."""

    class Measured(base):  # type: ignore[misc, valid-type]
        traffic: Traffic
        last_sent = 0

        def _serialize(self, tracer: Any) -> bytes:
            blob = super()._serialize(tracer)
            self.last_sent = len(blob)
            return blob

        def finalize(self, content: bytes) -> Any:
            self.traffic.add(self.last_sent, len(content))
            return super().finalize(content)

    return Measured


class Remote:
    """The remote side of one model: which server, which key, and how a pass goes there.

    ``transport``, when given, is an nnsight ``RemoteBackend`` subclass used instead of nnsight's own (the
    tests' stand-in server replaces only its network calls); it is built with the same arguments.
    """

    def __init__(self, model_id: str | None = None, *, host: str | None = None, api_key: str | None = None,
                 transport: type | None = None) -> None:
        self.model_id = model_id or ""  # load_model fills it in: the model's hub id
        self.host = host or os.environ.get("NDIF_HOST") or DEFAULT_HOST
        self.api_key = api_key if api_key is not None else os.environ.get("NDIF_API_KEY")
        self.transport = transport
        self.traffic = Traffic()
        self.weights = Traffic()  # the weight reads (fetch), apart from the passes
        self._fetched: set[str] = set()

    def snapshot(self) -> tuple[int, int, int, int, int]:
        return (self.traffic.requests, self.traffic.sent, self.traffic.received, self.weights.requests,
                self.weights.received)

    def provenance(self, since: tuple[int, int, int, int, int] | None = None) -> dict[str, Any]:
        """Where the passes ran and what travelled (since ``since``, a :meth:`snapshot`), for a result's metadata."""
        now = self.snapshot()
        base = since or (0, 0, 0, 0, 0)
        requests, sent, received, weight_requests, weight_bytes = (a - b for a, b in zip(now, base, strict=True))
        return {"host": self.host, "model_id": self.model_id, "requests": requests, "bytes_sent": sent,
                "bytes_received": received, "weight_requests": weight_requests, "weight_bytes_received": weight_bytes}

    def check_key(self) -> None:
        if self.transport is None and not self.api_key:
            from nnsight import CONFIG

            self.api_key = CONFIG.API.APIKEY or None
            if not self.api_key:
                raise RemoteExecutionError("remote execution on NDIF needs an API key: set NDIF_API_KEY (a key from "
                                           "https://login.ndif.us), or run without --remote")

    def backend(self, model_key: str) -> Any:
        from nnsight.intervention.backends.remote import RemoteBackend

        cls = _measured(self.transport or RemoteBackend)
        backend = cls(model_key, host=self.host, api_key=self.api_key or "")
        backend.traffic = self.traffic
        return backend

    def run(self, root: Any, inputs: dict[str, Any], steps: list[Any], stop_event: Any, want_logits: bool) -> dict[str, Any]:
        """Run one pass remotely; the hooks' state merged back; ``{"stop": …, "logits": …}`` as asked."""
        import nnsight

        if any(backward for _, hooks, _ in steps for _, _, _, backward in hooks):
            raise OptionError(refusal("backward hooks (gradients)", "the backward pass would run on this side of a "
                                       "finished request"))
        fns = [fn for _, hooks, _ in steps for _, _, fn, _ in hooks]
        order = shipped(fns)
        if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad
                                           for t in [*order, *(r for _, _, r in steps)]):
            raise OptionError(refusal("differentiating through a pass (a hook's tensor requires grad)",
                                      "the pass's autograd graph stays on the server; the returned tensors have none"))
        _ship_by_value(fns)
        self.check_key()
        with _remote_errors(self.host, self.model_id), _quiet_status():
            backend = self.backend(_model_key(root, self.model_id))
            with root.trace(inputs, backend=backend) as tracer:
                kept = nnsight.save({})
                _remote_pass(root, tracer, steps, stop_event, want_logits, order, kept)
        merge(order, kept.pop("state"))
        return kept

    def fetch(self, root: Any, hf: Any, path: str) -> None:
        """Read the parameters and buffers of module ``path`` from the server into the meta model ``hf`` (once)."""
        import nnsight

        if path in self._fetched:
            return
        self.check_key()
        probe = {"input_ids": torch.zeros((1, 1), dtype=torch.long), "attention_mask": torch.ones((1, 1), dtype=torch.long)}
        module = _module(root, path)
        with _remote_errors(self.host, self.model_id), _quiet_status():
            backend = self.backend(_model_key(root, self.model_id))
            backend.traffic = self.weights
            with root.trace(probe, backend=backend) as tracer:
                tensors = nnsight.save({})
                _read_tensors(module, tracer, tensors)
        target = hf.get_submodule(path)
        for name, loaded in tensors.items():
            with torch.inference_mode(False):  # loaded inside a caller's inference_mode: gradients need a normal tensor
                tensor = loaded.clone()
            owner_name, _, leaf = name.rpartition(".")
            owner = target.get_submodule(owner_name) if owner_name else target
            if leaf in owner._parameters:
                owner._parameters[leaf] = torch.nn.Parameter(tensor, requires_grad=False)
            else:
                owner._buffers[leaf] = tensor
        self._fetched.add(path)


def _read_tensors(envoy: Any, tracer: Any, out: dict[str, Any]) -> None:
    """A request's body: the module's parameters and buffers as they are on the server."""
    module = envoy._module
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        out[name] = tensor.detach().clone()
    tracer.stop()


def _remote_pass(root: Any, tracer: Any, steps: list[Any], stop_event: Any, want_logits: bool, order: list[Any],
                 kept: dict[str, Any]) -> None:
    """The trace body a request carries (runs on the server, pickled by value): the pass's event walk, then what
    the hooks' objects (``order``, :func:`~interp.backends.hook_state.shipped`) hold, in ``kept["state"]``."""
    before = versions(order)
    for path in {path for (path, what), _, _ in steps if what.startswith("op:")}:
        # nnsight rewrites a forward for ``.source`` when first asked, which must be before the module runs; the
        # local backend does it at load, a server that has not met this ``.source`` yet does it here
        _ = _module(root, path).source
    _interleave(root, steps, stop_event, want_logits, kept)
    kept["state"] = export(order, before)
    if not want_logits:
        tracer.stop()


def refusal(what: str, why: str) -> str:
    return (f"{what} cannot run on a remote model ({why}); run this analysis locally (without --remote) or on a "
            "model loaded with backend='nnsight' without remote=True")


def _ship_by_value(fns: list[Any]) -> None:
    """Register the packages the hooks come from (``interp`` and the caller's own) to be pickled by value:
    the server has none of them."""
    from cloudpickle import register_pickle_by_value
    from cloudpickle.cloudpickle import _PICKLE_BY_VALUE_MODULES

    roots = {"interp"}
    for fn in fns:
        for obj in (fn, *shipped([fn])):
            module = getattr(obj, "__module__", None) or getattr(type(obj), "__module__", None)
            if isinstance(module, str):
                roots.add(module.split(".")[0])
    for root in sorted(roots - SERVER_PACKAGES - set(sys.stdlib_module_names) - {"__main__"}):
        if root in sys.modules and root not in _PICKLE_BY_VALUE_MODULES:
            register_pickle_by_value(sys.modules[root])


@contextlib.contextmanager
def _quiet_status() -> Iterator[None]:
    """nnsight draws a live status line on the terminal for each request; the suite's progress bars say enough."""
    from nnsight import CONFIG

    saved = CONFIG.APP.REMOTE_LOGGING
    CONFIG.APP.REMOTE_LOGGING = False
    try:
        yield
    finally:
        CONFIG.APP.REMOTE_LOGGING = saved


@contextlib.contextmanager
def _remote_errors(host: str, model_id: str) -> Iterator[None]:
    """nnsight's and the network's failures as one line each."""
    from nnsight.intervention.backends.remote import RemoteError

    try:
        yield
    except RemoteError as error:
        raise RemoteExecutionError(_server_said(str(error), host, model_id)) from None
    except _Unshippable as error:
        raise OptionError(refusal(str(error), "it would have to be sent to the server with the pass")) from None
    except OSError as error:  # websocket and httpx connection failures derive from OSError
        raise RemoteExecutionError(f"NDIF ({host}) could not be reached ({type(error).__name__}: {error}): check "
                                   "the network, or run without --remote") from None
    except Exception as error:
        if _network_failure(error):
            raise RemoteExecutionError(f"NDIF ({host}) could not be reached ({type(error).__name__}): check the "
                                       "network, or run without --remote") from None
        raise


def _model_key(root: Any, model_id: str) -> str:
    """nnsight's key for the model (its canonical hub id, asked of the Hugging Face hub once per process)."""
    try:
        return root.to_model_key()
    except Exception as error:  # noqa: BLE001 - offline, unreachable, unknown id: all one line
        raise RemoteExecutionError(f"nnsight names a model on NDIF by its canonical hub id, and the Hugging Face hub "
                                   f"could not be asked for {model_id!r} ({type(error).__name__}): check the network "
                                   "and the model id, or run without --remote") from None


def _network_failure(error: Exception) -> bool:
    module = type(error).__module__ or ""
    return module.startswith(("websocket", "httpx", "httpcore", "requests", "urllib3"))


def _server_said(description: str, host: str, model_id: str) -> str:
    text = " ".join(description.split())
    lower = text.lower()
    if "api key" in lower or "api-key" in lower or "unauthorized" in lower or "401" in lower or "403" in lower:
        return f"NDIF ({host}) rejected the API key ({text}): set NDIF_API_KEY to a key from https://login.ndif.us"
    if "model" in lower and any(w in lower for w in ("not", "unknown", "unavailable", "no deployment")):
        return (f"NDIF ({host}) does not serve {model_id} ({text}): see https://nnsight.net/status for the models "
                "it serves, or run without --remote")
    return f"the NDIF request for {model_id} failed: {text}"


class _Unshippable(Exception):
    """Raised while pickling a request when it would carry something that cannot or must not travel."""


def refuse_shipping(what: str) -> Callable[..., Any]:
    """A ``__reduce_ex__`` that refuses to pickle (the model object must not be sent with a request)."""

    def reduce(*_: Any) -> Any:
        raise _Unshippable(what)

    return reduce
