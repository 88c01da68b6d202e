"""What a pass's hooks hold, carried back from a pass that ran somewhere else (an NDIF server).

The suite's hooks keep what they measure in Python objects on the caller's side: a probe's reducer adds
to its accumulators, ``capture`` fills a dict. A remote pass runs *copies* of those hooks (nnsight ships
them by value), so what they gather is gathered on the server. This module brings it back:

* :func:`shipped` (on the caller's side, before the request) walks what the hooks hold (closure cells,
  default arguments, the objects bound methods and partials hold, and the dicts, lists and plain objects
  inside them) and lists every dict, list, object and tensor it meets. The list travels with the request;
  since a request is one pickle, the server's copy of a closure's dict *is* the list's entry there.
* :func:`export` (on the server, after the pass; pickled by value, so it needs nothing of ``interp``
  there) turns what each listed object holds now into plain data standard pickle can carry: listed
  objects are referred to by number, tensors left untouched travel as a marker, new objects travel whole
  (their class by module and name, rebuilt on the caller's side).
* :func:`merge` applies it on the caller's side, in place, so every alias of an accumulator sees the
  server's additions.

Reductions therefore happen on the server, inside the hooks, and only what the hooks keep comes back.
Models, nnsight envoys and other foreign objects are neither walked nor returned. Neither are module
globals, nor a rebound ``nonlocal`` (nnsight rebuilds a shipped function at module level, so a hook's
state must live in a container: a dict, a list or an object's attributes).

Examples:
    >>> import torch
    >>> def make_hook():
    ...     seen: dict[str, torch.Tensor] = {}
    ...     def hook(x, hook=None):
    ...         seen["sum"] = x.sum()
    ...     return hook, seen
    >>> hook, seen = make_hook()
    >>> order = shipped([hook])  # on the caller's side: travels with the request
    >>> server_hook, _ = make_hook()  # the server's copy: the same structure, its own objects
    >>> server_order = shipped([server_hook])
    >>> before = versions(server_order)
    >>> server_hook(torch.ones(3))
    >>> merge(order, export(server_order, before))
    >>> float(seen["sum"])
    3.0
"""

from __future__ import annotations

import contextlib
import functools
import sys
import types
from typing import Any

import torch
from torch import Tensor, nn

#: Markers of the plain form (strings and tuples only: the server has no ``interp`` to unpickle classes with).
_SAME = "\x00interp:same"  # a shipped tensor left as it was
_SKIP = "\x00interp:skip"  # something not carried (a model, an envoy, a generator …)
_REF = "\x00interp:ref"  # (marker, number): a shipped object (its own entry says what it holds now)
_OBJ = "\x00interp:obj"  # (marker, module, qualname, attributes): an object created on the server
_TUPLE = "\x00interp:tuple"  # (marker, [items])
_MAX_DEPTH = 12
#: Packages whose objects are opaque leaves: they are models, tokenizers, library state.
_OPAQUE_ROOTS = ("transformers", "nnsight", "tokenizers", "accelerate", "transformer_lens", "sae_lens", "tqdm")


def _roots(fn: Any) -> list[Any]:
    """The state a callable holds, in a fixed order."""
    if isinstance(fn, functools.partial):
        return [fn.func, *fn.args, *fn.keywords.values()]
    if isinstance(fn, types.MethodType):
        return [fn.__self__, fn.__func__]
    if isinstance(fn, types.FunctionType):
        cells: list[Any] = []
        for cell in fn.__closure__ or ():
            try:
                cells.append(cell.cell_contents)
            except ValueError:  # an empty cell (a name assigned later)
                cells.append(None)
        return [*cells, *(fn.__defaults__ or ()), *(fn.__kwdefaults__ or {}).values()]
    return []


_PLAIN = (dict, list, tuple, set, frozenset, str, bytes, int, float, complex, bool, type(None),
          functools.partial, types.MethodType, types.FunctionType)


def _opaque(obj: Any) -> bool:
    """A leaf the walk neither enters nor returns: a model, library state, a builtin object that is not data."""
    module = (type(obj).__module__ or "").split(".")[0]
    return isinstance(obj, nn.Module) or module in _OPAQUE_ROOTS or (module == "builtins" and not isinstance(obj, _PLAIN))


def _children(obj: Any) -> list[Any] | None:
    """What the walk goes into (None: a leaf)."""
    if isinstance(obj, Tensor) or _opaque(obj) or isinstance(obj, (str, bytes, int, float, complex, bool, type(None))):
        return None
    if isinstance(obj, dict):
        return list(obj.values())
    if isinstance(obj, (list, tuple)):
        return list(obj)
    if isinstance(obj, (functools.partial, types.MethodType, types.FunctionType)):
        return _roots(obj)
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return list(vars(obj).values())
    return None


def _numbered(obj: Any) -> bool:
    """Containers and tensors the server may change in place (tuples and functions are walked, not numbered)."""
    return isinstance(obj, (Tensor, dict, list)) or (
        hasattr(obj, "__dict__") and not isinstance(obj, (type, tuple, functools.partial, types.MethodType,
                                                          types.FunctionType)) and not _opaque(obj))


def shipped(fns: list[Any]) -> list[Any]:
    """Every dict, list, plain object and tensor reachable from ``fns`` (through closures, default arguments,
    partials and bound methods), in a fixed order: the list index is the object's number. It is taken on
    the caller's side and sent with the request, so the server's copies carry the same numbers (the
    request is one pickle: a closure's dict and its entry here are one object there too)."""
    order: list[Any] = []
    seen: set[int] = set()

    def walk(obj: Any, depth: int) -> None:
        if depth > _MAX_DEPTH or id(obj) in seen:
            return
        seen.add(id(obj))
        if _numbered(obj):
            order.append(obj)
        for kid in _children(obj) or ():
            walk(kid, depth + 1)

    for fn in fns:
        walk(fn, 0)
    return order


def versions(order: list[Any]) -> list[int]:
    """The in-place version counter of each shipped tensor (-1 for other objects), taken before the pass."""
    return [obj._version if isinstance(obj, Tensor) else -1 for obj in order]


def export(order: list[Any], before: list[int]) -> list[Any]:
    """What each object of ``order`` holds now, as plain data (see the module docstring); ``before`` is
    :func:`versions` of ``order`` taken before the pass. Runs on the server."""
    number = {id(obj): index for index, obj in enumerate(order)}

    def plain(obj: Any, depth: int) -> Any:
        if isinstance(obj, (str, bytes, int, float, complex, bool, type(None))):
            return obj
        index = number.get(id(obj))
        if index is not None:
            return (_REF, index)
        if depth > _MAX_DEPTH or _opaque(obj) or isinstance(obj, (functools.partial, types.MethodType,
                                                                      types.FunctionType)):
            return _SKIP
        if isinstance(obj, Tensor):
            return obj.detach()
        if isinstance(obj, tuple):
            return (_TUPLE, [plain(value, depth + 1) for value in obj])
        if isinstance(obj, (dict, list)) or (hasattr(obj, "__dict__") and not isinstance(obj, type)):
            return contents(obj, depth, new=True)
        if isinstance(obj, (set, frozenset)):
            return obj if all(isinstance(v, (str, int, float, bool, tuple)) for v in obj) else _SKIP
        module = type(obj).__module__ or ""
        return obj if module.split(".")[0] in ("torch", "numpy") else _SKIP

    def contents(obj: Any, depth: int, new: bool = False) -> Any:
        if isinstance(obj, dict):
            return {key: plain(value, depth + 1) for key, value in obj.items()
                    if isinstance(key, (str, bytes, int, float, bool, tuple, type(None)))}
        if isinstance(obj, list):
            return [plain(value, depth + 1) for value in obj]
        attrs = {key: plain(value, depth + 1) for key, value in vars(obj).items()}
        return (_OBJ, type(obj).__module__, type(obj).__qualname__, attrs) if new else attrs

    state: list[Any] = []
    for index, obj in enumerate(order):
        if isinstance(obj, Tensor):
            state.append(_SAME if obj._version == before[index] else obj.detach())
        else:
            state.append(contents(obj, 0))
    return state


def merge(order: list[Any], state: list[Any]) -> None:
    """Apply :func:`export`'s ``state`` to the caller's objects ``order`` (:func:`shipped` on this side), in
    place: every alias of an accumulator sees what the server added."""
    if len(state) != len(order):
        raise ValueError(f"the server returned the state of {len(state)} objects for {len(order)} shipped")

    def value_of(p: Any) -> Any:
        """The caller's value for plain ``p``; LookupError for something not carried."""
        if isinstance(p, str) and p in (_SAME, _SKIP):
            raise LookupError
        if isinstance(p, tuple) and p and isinstance(p[0], str):
            if p[0] == _REF:
                return order[p[1]]
            if p[0] == _TUPLE:
                return tuple(_kept(value_of, item) for item in p[1])
            if p[0] == _OBJ:
                # only a class of a module already imported here: a name from the server imports no new code
                cls: Any = sys.modules.get(p[1])
                if cls is None:
                    raise LookupError
                for part in p[2].split("."):
                    cls = getattr(cls, part)
                obj = cls.__new__(cls)
                for key, item in p[3].items():
                    with contextlib.suppress(LookupError):
                        object.__setattr__(obj, key, value_of(item))
                return obj
        if isinstance(p, dict):
            out: dict[Any, Any] = {}
            for key, item in p.items():
                with contextlib.suppress(LookupError):
                    out[key] = value_of(item)
            return out
        if isinstance(p, list):
            return [_kept(value_of, item) for item in p]
        return p

    for target, p in zip(order, state, strict=True):
        if isinstance(target, Tensor):
            if isinstance(p, Tensor):  # changed in place on the server (else the marker: unchanged)
                with torch.inference_mode(target.is_inference()):
                    target.copy_(p)
        elif isinstance(target, dict):
            for key in [k for k in target if k not in p]:
                del target[key]
            for key, item in p.items():
                with contextlib.suppress(LookupError):
                    target[key] = value_of(item)
        elif isinstance(target, list):
            target[:] = [_kept(value_of, item, target[i] if i < len(target) else None) for i, item in enumerate(p)]
        else:
            for key, item in p.items():
                with contextlib.suppress(LookupError):
                    new = value_of(item)
                    if getattr(target, key, None) is not new:
                        object.__setattr__(target, key, new)


def _kept(value_of: Any, item: Any, old: Any = None) -> Any:
    try:
        return value_of(item)
    except LookupError:
        return old
