"""A tiny GPT-2 with five head roles planted by hand, so the head atlas's right answer is known by construction.

The model is a Hugging Face ``GPT2LMHeadModel`` (2 layers × 4 heads, d_model 256, d_head 64, byte tokenizer,
tied embeddings, MLPs switched off) wrapped by :func:`interp.models.from_hf` on the backend under test. Its
residual stream is split into subspaces:

* ``T`` (dims 0–63): the token embedding (seeded Gaussian, the same for every position);
* ``P`` (dims 64–95): 16 (cos, sin) pairs of the position, ``p_j(k) = a·(cos θ_j k, sin θ_j k)``;
* ``BOS`` (dim 96): set by the position-0 embedding only; ``ONE`` (dim 97): a constant in every token embedding;
* ``S`` (dims 128–175): written by the previous-token head: the first 48 dims of ``T`` of the previous token.

Planted heads (every other weight keeps Hugging Face's seeded initialisation, so the other heads are random):

* **0.0 previous-token**: query ``R(−θ)·p(q)``, key ``p(k)``: the score is ``Σ_j cos θ_j (q − 1 − k)``, largest
  at ``k = q − 1``; its OV copies ``T[:48]`` of the attended token into ``S``.
* **0.1 duplicate-token**: query and key read ``T[:48]`` (a token matches itself), a high-frequency position
  term penalises the current position, and a key bonus on ``BOS`` catches queries with no earlier copy.
* **0.2 copying** / **0.3 copy-suppression**: QK random; OV = ``±ε·I`` on ``T`` (the full OV circuit is
  ``±ε Ê Eᵀ``, positive / negative semi-definite on the token set).
* **1.0 induction** (with 0.0): query reads ``T[:48]`` of its token, key reads ``S`` (the previous token's
  ``T[:48]``), plus the ``BOS`` bonus: it attends to the token after an earlier copy of the current one.
* **1.1 positional decoy**: attends a fixed ``POSITIONAL_OFFSET`` = 19 tokens back (the same rotation trick as
  0.0). On ``BOS, R, R[:-1]`` with ``|R| = 20`` that is exactly the induction target, so its raw induction
  score is high; the null (the same sequences with the first copy replaced) must keep it from the label.
* **1.3 successor**: OV = ``pinv(Ê_in) E_out`` for the byte tokenizer's ordinal tokens (digits 1–9, letters
  A–Z): each item's normalised embedding is mapped to its successor's embedding (the tied unembedding).

Head 1.2 stays random.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from interp.models import LoadedModel

D_MODEL, N_HEADS, D_HEAD = 256, 4, 64
T = list(range(0, 64))
MATCH = T[:48]
P = list(range(64, 96))
BOS_DIM, ONE_DIM = 96, 97
S = list(range(128, 176))
#: Periods of the position pairs: spread so that Σ cos peaks only at a zero offset.
PERIODS = [2.3, 2.9, 3.7, 4.3, 5.3, 6.1, 7.3, 8.9, 11.0, 13.0, 17.0, 23.0, 31.0, 47.0, 71.0, 113.0]

#: The planted role of each head (layer, head) → role; 1.1 is the positional decoy, 1.2 is random.
PLANTED: dict[tuple[int, int], str] = {
    (0, 0): "previous-token",
    (0, 1): "duplicate-token",
    (0, 2): "copying",
    (0, 3): "copy-suppression",
    (1, 0): "induction",
    (1, 3): "successor",
}
POSITIONAL_DECOY = (1, 1)
#: The decoy's offset: ``half_length − 1`` of the atlas's default repeated sequences (|R| = 20).
POSITIONAL_OFFSET = 19
#: The byte tokenizer's ordinal sequences (single tokens): digits 1–9 and letters A–Z.
ORDINALS = ("123456789", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _columns(block: int, head: int) -> slice:
    """Columns of ``c_attn.weight`` (Conv1D, ``x @ W``) of Q (block 0), K (1) or V (2) of ``head``."""
    start = block * D_MODEL + head * D_HEAD
    return slice(start, start + D_HEAD)


def plant(hf: Any, *, strength: float = 1.0) -> None:
    """Write the planted mechanism into a fresh GPT-2 of the shape above (in place, under no_grad)."""
    generator = torch.Generator().manual_seed(1234)
    wte, wpe = hf.transformer.wte.weight, hf.transformer.wpe.weight
    n_vocab, n_pos = wte.shape[0], wpe.shape[0]
    wte.zero_()
    wpe.zero_()
    wte[:, T] = 1.4 * torch.randn(n_vocab, len(T), generator=generator)
    wte[:, ONE_DIM] = 2.0
    amplitude = 2.8
    positions = torch.arange(n_pos, dtype=torch.float32)
    for j, period in enumerate(PERIODS):
        theta = 2 * math.pi / period
        wpe[:, P[2 * j]] = amplitude * torch.cos(theta * positions)
        wpe[:, P[2 * j + 1]] = amplitude * torch.sin(theta * positions)
    wpe[0, BOS_DIM] = 8.0
    for block in hf.transformer.h:  # MLPs off: the residual holds embeddings and head outputs only
        block.mlp.c_proj.weight.zero_()
        block.mlp.c_proj.bias.zero_()
        block.attn.c_attn.bias.zero_()
        block.attn.c_proj.bias.zero_()

    def qk(layer: int, head: int) -> tuple[torch.Tensor, torch.Tensor]:
        attn = hf.transformer.h[layer].attn
        w_q, w_k = attn.c_attn.weight[:, _columns(0, head)], attn.c_attn.weight[:, _columns(1, head)]
        w_q.zero_()
        w_k.zero_()
        return w_q, w_k

    def ov(layer: int, head: int, reads: list[int], writes: list[int], gain: float) -> None:
        attn = hf.transformer.h[layer].attn
        w_v = attn.c_attn.weight[:, _columns(2, head)]
        w_o = attn.c_proj.weight[head * D_HEAD:(head + 1) * D_HEAD]
        w_v.zero_()
        w_o.zero_()
        for i, (read, write) in enumerate(zip(reads, writes, strict=True)):
            w_v[read, i] = 1.0
            w_o[i, write] = gain

    def look_back(layer: int, head: int, offset: int) -> None:
        """Query rotated back by ``offset`` positions in every pair: the score peaks at ``k = q − offset``."""
        w_q, w_k = qk(layer, head)
        for j, period in enumerate(PERIODS):
            theta = 2 * math.pi / period * offset
            c, s = P[2 * j], P[2 * j + 1]
            w_q[c, 2 * j], w_q[s, 2 * j] = math.cos(theta), math.sin(theta)
            w_q[c, 2 * j + 1], w_q[s, 2 * j + 1] = -math.sin(theta), math.cos(theta)
            w_k[c, 2 * j], w_k[s, 2 * j + 1] = 1.0, 1.0
        w_q *= 4.0 * strength

    # 0.0 previous-token; its OV writes the attended token's T[:48] into S.
    look_back(0, 0, 1)
    ov(0, 0, MATCH, S, 1.0)

    # 0.1 duplicate-token: token match, minus the current position, plus a BOS bonus.
    w_q, w_k = qk(0, 1)
    for i, dim in enumerate(MATCH):
        w_q[dim, i], w_k[dim, i] = 1.0 * strength, 1.0
    for j in range(7):  # the 7 highest-frequency pairs: Σ cos peaks sharply at offset 0
        c, s = P[2 * j], P[2 * j + 1]
        w_q[c, 48 + 2 * j], w_k[c, 48 + 2 * j] = -2.5 * strength, 1.0
        w_q[s, 48 + 2 * j + 1], w_k[s, 48 + 2 * j + 1] = -2.5 * strength, 1.0
    w_q[ONE_DIM, 62], w_k[BOS_DIM, 62] = 4.5 * strength, 1.0

    # 0.2 copying, 0.3 copy suppression: OV = ±ε I on the token subspace (QK left random).
    ov(0, 2, T, T, 0.05)
    ov(0, 3, T, T, -0.05)

    # 1.0 induction: query reads its token, key reads the previous token (written into S by 0.0), BOS bonus.
    w_q, w_k = qk(1, 0)
    for i, (dim, prev) in enumerate(zip(MATCH, S, strict=True)):
        w_q[dim, i], w_k[prev, i] = 1.0 * strength, 1.0
    w_q[ONE_DIM, 48], w_k[BOS_DIM, 48] = 3.0 * strength, 1.0

    # 1.1 positional decoy.
    look_back(*POSITIONAL_DECOY, POSITIONAL_OFFSET)

    # 1.3 successor: the normalised embedding of each ordinal item → its successor's embedding.
    from interp.models.tiny import byte_tokenizer

    tokenizer = byte_tokenizer()
    inputs, outputs = [], []
    for sequence in ORDINALS:
        ids = [tokenizer(ch, add_special_tokens=False)["input_ids"][0] for ch in sequence]
        inputs += ids[:-1]
        outputs += ids[1:]
    embed = wte[inputs].double()
    embed = embed - embed.mean(-1, keepdim=True)
    embed = embed / embed.pow(2).mean(-1, keepdim=True).sqrt()
    mapping = torch.linalg.pinv(embed) @ wte[outputs].double()  # [d_model, d_model], rank len(inputs) ≤ d_head
    u, sigma, vh = torch.linalg.svd(mapping)
    rank = len(inputs)
    attn = hf.transformer.h[1].attn
    w_v = attn.c_attn.weight[:, _columns(2, 3)]
    w_o = attn.c_proj.weight[3 * D_HEAD:4 * D_HEAD]
    w_v.zero_()
    w_o.zero_()
    w_v[:, :rank] = (u[:, :rank] * sigma[:rank]).float()
    w_o[:rank] = vh[:rank].float()


def planted_model(*, seed: int = 0, backend: str | None = None, strength: float = 1.0) -> LoadedModel:
    """The planted model on ``backend`` (default: the backend under test)."""
    import transformers

    from interp.models import from_hf
    from interp.models.tiny import BYTE_VOCAB, byte_tokenizer

    config = transformers.GPT2Config(
        n_layer=2, n_embd=D_MODEL, n_head=N_HEADS, n_inner=4 * D_MODEL, n_positions=256, vocab_size=BYTE_VOCAB,
        activation_function="gelu_new", bos_token_id=0, eos_token_id=1, pad_token_id=2,
        initializer_range=0.8 / math.sqrt(D_MODEL), attn_implementation="eager")
    config.architectures = ["GPT2LMHeadModel"]
    torch.manual_seed(seed)
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        plant(hf, strength=strength)
    return from_hf(hf, byte_tokenizer(), name=f"planted-heads-{seed}", backend=backend)


#: Natural-text prompts for the planted model (bytes; some repeated words for the duplicate-token head).
PROMPTS = [
    "the cat sat on the mat and the dog sat on the log",
    "a quick brown fox jumps over the lazy dog again and again",
    "she sells sea shells by the sea shore every summer",
    "one two three four five six seven eight nine ten",
    "planted heads make the right answer known by construction",
    "rain in spain falls mainly on the plain, said the teacher",
]
