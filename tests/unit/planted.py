"""Tiny models with mechanisms planted by hand, so the right answer is known by construction.

Mechanisms are planted into the Hugging Face weights of a fresh test model before a backend wraps it
(``interp.load_model(..., edit=fn, reuse=False)``), so every backend sees the same planted model and no
loaded or shared model is ever edited.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import interp
from interp.models import LoadedModel

#: Residual dimensions reserved for the sink directions a (position 0), b (every token), c (the secondary position).
SINK_DIMS = (10, 11, 12)


def fresh_tiny_gpt2(seed: int = 0, edit: Callable[[Any], None] | None = None) -> LoadedModel:
    return interp.load_model("tiny-gpt2", seed=seed, edit=edit, reuse=False)


def sink_edit(*, bos_layer: int = 0, bos_head: int = 2, secondary_layer: int = 1, secondary_position: int = 5,
              strength: float = 12.0) -> Callable[[Any], None]:
    """An ``edit=`` for a GPT-2 Hugging Face model that plants a first-token sink head and a secondary sink.

    Three residual directions are reserved: ``a`` marks position 0 (written by ``wpe[0]``), ``c`` marks
    ``secondary_position``, and ``b`` is present in every token embedding. Head ``bos_head`` of layer
    ``bos_layer`` has queries reading ``b`` and keys reading ``a``: every query's top score is on position 0.
    Every head of ``secondary_layer`` has queries reading ``b`` and keys reading ``c``: every later query
    attends to that position.

    GPT-2 layout: ``c_attn.weight`` is a Conv1D ``[d_model, 3·d_model]`` used as ``x @ W`` (columns
    ``[0, d)`` queries, ``[d, 2d)`` keys; head ``h`` owns columns ``h·d_head … (h+1)·d_head`` of each block).
    The backends then apply TransformerLens's processing (fold_ln, centering of the writing weights): the
    planted strength is shifted by the centring only by ``strength / d_model`` and the layer norms are the
    Hugging Face initial ones (gain 1, bias 0), so the mechanism survives unchanged in effect.
    """
    a, b, c = SINK_DIMS

    def plant(hf: Any) -> None:
        wte, wpe = hf.transformer.wte.weight, hf.transformer.wpe.weight
        d_model = wte.shape[1]
        d_head = d_model // hf.config.n_head
        dims = list(SINK_DIMS)
        wte[:, dims] = 0.0  # (tied to the unembedding: only these three columns of it change)
        wpe[:, dims] = 0.0
        wte[:, b] = strength
        wpe[0, a] = strength
        wpe[secondary_position, c] = strength

        def read(layer: int, head: int, query_dim: int, key_dim: int) -> None:
            attn = hf.transformer.h[layer].attn
            q_cols = slice(head * d_head, (head + 1) * d_head)
            k_cols = slice(d_model + head * d_head, d_model + (head + 1) * d_head)
            for cols, dim in ((q_cols, query_dim), (k_cols, key_dim)):
                attn.c_attn.weight[:, cols] = 0.0
                attn.c_attn.bias[cols] = 0.0
                attn.c_attn.weight[dim, cols] = 1.0

        read(bos_layer, bos_head, b, a)
        for head in range(hf.config.n_head):
            read(secondary_layer, head, b, c)

    return plant


def plant_sinks(*, seed: int = 0, bos_layer: int = 0, bos_head: int = 2, secondary_layer: int = 1,
                secondary_position: int = 5, strength: float = 12.0) -> LoadedModel:
    """A fresh tiny GPT-2 (on the backend under test) with the sinks of :func:`sink_edit` planted."""
    edit = sink_edit(bos_layer=bos_layer, bos_head=bos_head, secondary_layer=secondary_layer,
                     secondary_position=secondary_position, strength=strength)
    return fresh_tiny_gpt2(seed, edit)
