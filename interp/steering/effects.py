"""What a direction does to the output: language token sets, the residual norm, and output scores.

Features chosen by what *activates* them (input features) steer poorly; features whose amplification has a
recognisable effect on the output steer well (Arad, Mueller & Belinkov 2025, arXiv 2505.20063;
docs/analyses/language-steering.md). This module measures the effect:

* :func:`language_token_sets`: the tokens of a language, those much more frequent in its text than in the
  text of every other language of the corpus (the rule is in the docstring);
* :func:`residual_norm`: the mean norm of ``blocks.L.hook_resid_post`` over ordinary text (non-BOS tokens),
  the unit in which edits are sized so that strengths compare across features and layers;
* :func:`logit_lens_scores`: for every direction at once, the share of the language's tokens among the
  ``top_k`` tokens the direction promotes through the final norm and unembedding (cheap, approximate);
* :func:`output_scores`: for candidate directions, one batched forward pass from the edited layer on with
  ``x ← x + s·r̄·û`` at every position of English prompts: the shift of the next-token probability mass on
  the language's tokens at the last position (the score selection uses).

Examples:
    >>> import interp, torch
    >>> from interp.steering.effects import output_scores, residual_norm
    >>> lm = interp.load_model("tiny-gpt2")
    >>> r = residual_norm(lm, 1, ["the cat sat on the mat"])
    >>> r > 0
    True
    >>> scores = output_scores(lm, 1, torch.eye(lm.d_model)[:3], torch.tensor([5, 6]), ["the cat"], strength=0.5,
    ...                        norm=r)
    >>> tuple(scores.shift.shape)
    (3,)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import OptionError
from interp.models import LoadedModel

#: Letters a token needs to count as a word piece of a language (punctuation and digits never count).
MIN_LETTERS = 2


def language_token_sets(
    lm: LoadedModel, texts_by_language: Mapping[str, Sequence[str]], *, min_count: int = 3, min_ratio: float = 4.0,
    min_letters: int | None = None,
) -> dict[str, Int[Tensor, " n"]]:
    """Token ids typical of each language: counted over ``texts_by_language`` (every text encoded without
    BOS), a token belongs to language L when it has at least ``min_letters`` letters (default
    :data:`MIN_LETTERS`, 2), occurs at least ``min_count`` times
    in L's text and its rate there (count per token of L's text) is at least ``min_ratio`` times its largest
    rate in any other language's text (add-one smoothed). Special tokens never count; nor do punctuation,
    digits and single letters (French's ’ is far more frequent in French text, and a feature that writes
    apostrophes would otherwise score as French).

    Examples:
        >>> import interp
        >>> lm = interp.load_model("tiny-gpt2")   # a byte tokenizer: bytes are tokens
        >>> texts = {"en": ["aaa bbb"] * 3, "xx": ["zzz qqq"] * 3}
        >>> language_token_sets(lm, texts, min_ratio=2)["xx"].tolist()   # one letter each: none qualifies
        []
        >>> sorted(lm.token_strings(language_token_sets(lm, texts, min_ratio=2, min_letters=1)["xx"].tolist()))
        ['q', 'z']
    """
    if len(texts_by_language) < 2:
        raise OptionError("language token sets need text in at least two languages")
    special = set(getattr(lm.tokenizer, "all_special_ids", []) or [])
    counts: dict[str, Counter[int]] = {}
    totals: dict[str, int] = {}
    for lang, texts in texts_by_language.items():
        counter: Counter[int] = Counter()
        for text in texts:
            counter.update(t for t in lm.encode(text, prepend_bos=False) if t not in special)
        counts[lang] = counter
        totals[lang] = max(1, sum(counter.values()))
    out: dict[str, Tensor] = {}
    for lang, counter in counts.items():
        others = [other for other in counts if other != lang]
        chosen = []
        for token, n in counter.items():
            if n < min_count:
                continue
            rate = n / totals[lang]
            other_rate = max((counts[o][token] + 1) / totals[o] for o in others)
            if rate >= min_ratio * other_rate:
                chosen.append(token)
        strings = lm.token_strings(chosen) if chosen else []
        letters = MIN_LETTERS if min_letters is None else min_letters
        words = [t for t, text in zip(chosen, strings, strict=True) if sum(ch.isalpha() for ch in text) >= letters]
        out[lang] = torch.tensor(sorted(words), dtype=torch.long)
    return out


@torch.inference_mode()
def residual_norm(lm: LoadedModel, layer: int, texts: Sequence[str], *, batch_size: int = 16) -> float:
    """Mean L2 norm of ``blocks.{layer}.hook_resid_post`` over the non-BOS, non-padding tokens of ``texts``
    (BOS is left out: its residual is orders of magnitude larger on many models)."""
    if not 0 <= layer < lm.n_layers:
        raise OptionError(f"layer must be in 0..{lm.n_layers - 1} for {lm.name}, got {layer}")
    total, count = 0.0, 0
    for start in range(0, len(texts), batch_size):
        batch = lm.tokenize(list(texts[start:start + batch_size]))
        resid = lm.forward(batch, stop_at_layer=layer + 1).float()
        mask = batch.attention_mask.to(resid.device).bool().clone()
        if lm.bos_token_id is not None:
            mask &= batch.tokens.to(resid.device) != lm.bos_token_id
        norms = resid.norm(dim=-1)[mask]
        total += float(norms.sum())
        count += int(norms.numel())
    if count == 0:
        raise OptionError("no non-BOS tokens to measure the residual norm on")
    return total / count


@torch.inference_mode()
def logit_lens_scores(
    lm: LoadedModel, directions: Float[Tensor, "n d_model"], token_set: Int[Tensor, " m"], *, top_k: int = 50,
    chunk: int = 128,
) -> Float[Tensor, " n"]:
    """Share of ``token_set`` among the ``top_k`` tokens each unit direction promotes when read straight
    through the final norm and the unembedding (the logit lens: exact for the last layer only)."""
    member = torch.zeros(lm.d_vocab, dtype=torch.bool)
    member[token_set] = True
    shares = []
    for start in range(0, directions.shape[0], chunk):
        unit = directions[start:start + chunk].to(lm.device, torch.float32)
        unit = unit / unit.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        logits = lm.resid_to_logits(unit)
        top = logits.topk(top_k, dim=-1).indices.cpu()
        shares.append(member[top].float().mean(-1))
    return torch.cat(shares)


@dataclass(frozen=True)
class OutputScores:
    """Next-token effect of each direction (one row per direction).

    Attributes:
        shift: mean over prompts of the change in probability mass on the language's tokens at the last
            position, edit on minus off (the output score).
        mass: that mass with the edit on (mean over prompts).
        top1: share of prompts whose most likely next token is one of the language's tokens, edit on.
        base_mass: the mass without any edit (mean over prompts).
        strength: the edit size used, as a fraction of ``norm``.
        norm: the residual norm ``r̄`` the edits were sized with.
    """

    shift: Float[Tensor, " n"]
    mass: Float[Tensor, " n"]
    top1: Float[Tensor, " n"]
    base_mass: float
    strength: float
    norm: float


@torch.inference_mode()
def output_scores(
    lm: LoadedModel, layer: int, directions: Float[Tensor, "n d_model"], token_set: Int[Tensor, " m"],
    prompts: Sequence[str], *, strength: float, norm: float, chunk_rows: int = 64,
) -> OutputScores:
    """Amplify each direction (``x ← x + strength·norm·û`` at every position of ``blocks.{layer}.hook_resid_post``)
    over ``prompts`` and measure the next-token probability mass on ``token_set`` at the last position.

    One forward pass per chunk of (direction, prompt) rows, resumed from the cached residual at ``layer`` (the
    blocks before it run once), with the unembedding only at the last position. The directions are a batch
    dimension, so hundreds of candidates cost seconds on a CPU for a small model.
    """
    if not prompts:
        raise OptionError("output scores need at least one prompt")
    if not 0 <= layer < lm.n_layers:
        raise OptionError(f"layer must be in 0..{lm.n_layers - 1} for {lm.name}, got {layer}")
    batch = lm.tokenize(list(prompts))
    resid = lm.forward(batch, stop_at_layer=layer + 1)  # [prompt, pos, d_model], the input of block layer+1
    mask = batch.attention_mask.to(resid.device)
    last = (batch.lengths - 1).to(resid.device)
    n_prompts = resid.shape[0]
    member = torch.zeros(lm.d_vocab, dtype=torch.bool, device=resid.device)
    member[token_set.to(resid.device)] = True

    def last_probs(final: Tensor, rows: Tensor) -> Tensor:
        picked = final[torch.arange(final.shape[0], device=final.device), last[rows]]
        return torch.softmax(lm.resid_to_logits(picked).float(), dim=-1)

    def finish(x: Tensor, m: Tensor) -> Tensor:
        if layer + 1 >= lm.n_layers:
            return x
        return lm.forward(start_at_layer=layer + 1, residual=x, attention_mask=m, stop_at_layer=lm.n_layers)

    prompt_rows = torch.arange(n_prompts, device=resid.device)
    base = last_probs(finish(resid, mask), prompt_rows)
    base_mass = base[:, member].sum(-1)
    unit = directions.to(resid.device, resid.dtype)
    unit = unit / unit.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    n = unit.shape[0]
    mass = torch.zeros(n)
    top1 = torch.zeros(n)
    per_chunk = max(1, chunk_rows // n_prompts)
    for start in range(0, n, per_chunk):
        members = unit[start:start + per_chunk]  # [c, d]
        c = members.shape[0]
        x = resid[None] + (strength * norm) * members[:, None, None, :]  # [c, prompt, pos, d]
        x = x.reshape(c * n_prompts, *resid.shape[1:])
        rows = prompt_rows.repeat(c)
        probs = last_probs(finish(x, mask.repeat(c, 1)), rows)
        on = probs[:, member].sum(-1).reshape(c, n_prompts)
        best = member[probs.argmax(-1)].float().reshape(c, n_prompts)
        mass[start:start + c] = on.mean(1).cpu()
        top1[start:start + c] = best.mean(1).cpu()
    base_mean = float(base_mass.mean())
    return OutputScores(shift=mass - base_mean, mass=mass, top1=top1, base_mass=base_mean, strength=strength,
                        norm=norm)


__all__ = ["MIN_LETTERS", "OutputScores", "language_token_sets", "logit_lens_scores", "output_scores", "residual_norm"]
