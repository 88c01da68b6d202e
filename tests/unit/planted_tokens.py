"""Tiny GPT-2 models whose token dependence is known by construction, for the token-attribution tests.

Edits follow :mod:`tests.unit.planted`: they change a fresh test model's Hugging Face weights before a
backend wraps it, so every backend sees the same planted model.
"""

from __future__ import annotations

from typing import Any

from interp.models import LoadedModel
from tests.unit.planted import fresh_tiny_gpt2

#: Residual dimensions reserved for the position codes: q (every position) and c (the deciding position).
QUERY_DIM, KEY_DIM = 60, 61
#: The token dimensions the planted head copies (its value and output read and write these).
COPY_DIMS = range(16)


def decider_edit(*, position: int = 1, head: int = 0, gain: float = 100.0, strength: float = 12.0) -> Any:
    """Plant a model whose prediction is decided by the token at ``position``.

    Every block's output is silenced (MLP and attention output projections zero) except head ``head`` of
    layer 0. Its query reads a code every position carries and its key a code only ``position`` carries
    (both in the position embeddings, so no token changes where it looks): every later query attends to
    ``position``. Its value copies the first 16 token-embedding dimensions and its output writes them back
    ``gain`` times larger, so the last position's residual is dominated by the deciding token's embedding
    and the tied unembedding predicts (nearly) that token. The tokens between contribute nothing.
    """

    def plant(hf: Any) -> None:
        wte, wpe = hf.transformer.wte.weight, hf.transformer.wpe.weight
        d_model = wte.shape[1]
        d_head = d_model // hf.config.n_head
        wte[:, [QUERY_DIM, KEY_DIM]] = 0.0
        wpe[:, [QUERY_DIM, KEY_DIM]] = 0.0
        wpe[:, QUERY_DIM] = strength
        wpe[position, KEY_DIM] = strength
        for layer, block in enumerate(hf.transformer.h):
            block.mlp.c_proj.weight.zero_()
            block.mlp.c_proj.bias.zero_()
            block.attn.c_proj.bias.zero_()
            for h in range(hf.config.n_head):
                rows = slice(h * d_head, (h + 1) * d_head)
                if layer != 0 or h != head:
                    block.attn.c_proj.weight[rows, :] = 0.0
        attn = hf.transformer.h[0].attn
        q_cols = slice(head * d_head, (head + 1) * d_head)
        k_cols = slice(d_model + head * d_head, d_model + (head + 1) * d_head)
        v_cols = slice(2 * d_model + head * d_head, 2 * d_model + (head + 1) * d_head)
        for cols in (q_cols, k_cols, v_cols):
            attn.c_attn.weight[:, cols] = 0.0
            attn.c_attn.bias[cols] = 0.0
        attn.c_attn.weight[QUERY_DIM, q_cols.start] = 1.0
        attn.c_attn.weight[KEY_DIM, k_cols.start] = 1.0
        out_rows = slice(head * d_head, (head + 1) * d_head)
        attn.c_proj.weight[out_rows, :] = 0.0
        for i in COPY_DIMS:
            attn.c_attn.weight[i, v_cols.start + i] = 1.0
            attn.c_proj.weight[out_rows.start + i, i] = gain

    return plant


def uniform_edit() -> Any:
    """Plant uniform attention: every query and key weight and bias zero, so every score is equal and each
    query spreads its attention evenly over the positions it can see."""

    def plant(hf: Any) -> None:
        d_model = hf.transformer.wte.weight.shape[1]
        for block in hf.transformer.h:
            block.attn.c_attn.weight[:, :2 * d_model] = 0.0
            block.attn.c_attn.bias[:2 * d_model] = 0.0

    return plant


def plant_decider(position: int = 1, head: int = 0) -> LoadedModel:
    return fresh_tiny_gpt2(edit=decider_edit(position=position, head=head))


def plant_uniform() -> LoadedModel:
    return fresh_tiny_gpt2(edit=uniform_edit())
