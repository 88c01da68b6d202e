"""Tiny models with mechanisms planted by hand, so the right answer is known by construction.

Weights are edited on a fresh model built for the test (never on a shared or loaded model).
"""

from __future__ import annotations

import torch

import interp
from interp.models import LoadedModel


def fresh_tiny_gpt2(seed: int = 0) -> LoadedModel:
    return interp.load_model("tiny-gpt2", seed=seed, reuse=False)


def plant_sinks(lm: LoadedModel, *, bos_layer: int = 0, bos_head: int = 2, secondary_layer: int = 1,
                secondary_position: int = 5, strength: float = 12.0) -> LoadedModel:
    """Plant a first-token sink head and a secondary sink on a fresh tiny GPT-2.

    Three residual directions are reserved: ``a`` marks position 0 (written by ``W_pos[0]``), ``c`` marks
    ``secondary_position``, and ``b`` is present in every token embedding. Head ``bos_head`` of layer
    ``bos_layer`` has queries reading ``b`` and keys reading ``a``: every query's top score is on position 0.
    Every head of ``secondary_layer`` has keys reading ``c``: every later query attends to that position.
    """
    model = lm.model
    d_head = model.cfg.d_head
    dirs = torch.tensor([10, 11, 12])  # residual dims used as the three directions a, b, c
    a, b, c = (int(d) for d in dirs)
    with torch.no_grad():
        model.embed.W_E[:, dirs] = 0.0
        model.pos_embed.W_pos[:, dirs] = 0.0
        model.embed.W_E[:, b] = strength
        model.pos_embed.W_pos[0, a] = strength
        model.pos_embed.W_pos[secondary_position, c] = strength
        ones = torch.ones(d_head)
        q = model.blocks[bos_layer].attn.W_Q
        k = model.blocks[bos_layer].attn.W_K
        q[bos_head].zero_()
        k[bos_head].zero_()
        q[bos_head, b] = ones
        k[bos_head, a] = ones
        q2 = model.blocks[secondary_layer].attn.W_Q
        k2 = model.blocks[secondary_layer].attn.W_K
        for head in range(model.cfg.n_heads):
            q2[head].zero_()
            k2[head].zero_()
            q2[head, b] = ones
            k2[head, c] = ones
    return lm
