"""Is a steered continuation coherent text of its language? A judge calibrated on natural text.

A continuation counts as **coherent** when the *unsteered* model finds it about as predictable as natural
text of that language and length: its mean per-token loss on the continuation alone (BOS, then the
continuation; the first token, which nothing predicts, is not scored) must not exceed the ``quantile``
(default 95th percentile) of the same loss on windows of natural text of the language with the same number
of tokens. The windows start at word boundaries inside held-out paragraphs (a continuation rarely starts a
sentence), so that the reference is a fragment too. Loops are very predictable, so this judge is combined
with the distinct-word rule, never used alone: coherent success = language success ∧ identifier confidence
≥ 0.5 ∧ at least half the words distinct ∧ coherent.

Examples:
    >>> import interp
    >>> from interp.steering.coherence import coherence_judge
    >>> lm = interp.load_model("tiny-gpt2")
    >>> judge = coherence_judge(lm, {"en": ["the cat sat on the mat and the dog slept by the door"] * 8},
    ...                         max_tokens=8)
    >>> judge.threshold("en", 6) > 0
    True
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from interp.errors import OptionError
from interp.models import LoadedModel

#: Continuations with fewer tokens than this are not judged coherent (too short to be text of a language).
MIN_TOKENS = 4


@torch.inference_mode()
def alone_losses(lm: LoadedModel, token_rows: Sequence[Sequence[int]], *, batch_size: int = 16) -> list[np.ndarray]:
    """Per-token loss of each row read alone (BOS prepended): token ``i ≥ 1`` of the row given BOS and tokens
    ``0..i-1``. Returns one array of ``len(row) − 1`` losses per row (empty for rows of under two tokens)."""
    out: list[np.ndarray] = [np.zeros(0)] * len(token_rows)
    bos = [lm.bos_token_id] if lm.bos_token_id is not None else []
    todo = [i for i, row in enumerate(token_rows) if len(row) >= 2]
    for start in range(0, len(todo), batch_size):
        members = todo[start:start + batch_size]
        rows = [bos + list(token_rows[i]) for i in members]
        batch = lm.pad(rows)
        logits = lm.forward(batch)
        log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        targets = batch.tokens[:, 1:].to(logits.device)
        picked = -log_probs.gather(-1, targets[..., None]).squeeze(-1).cpu().numpy()
        for j, i in enumerate(members):
            first = len(bos) + 1  # predicting row token 1 (position len(bos)+1) uses logits at len(bos)
            out[i] = picked[j, first - 1:len(rows[j]) - 1]
    return out


@dataclass(frozen=True)
class CoherenceJudge:
    """Per-language loss thresholds by continuation length (in tokens).

    Attributes:
        thresholds: ``thresholds[lang][n]`` is the ``quantile`` of the mean loss of the reference windows of
            ``n`` tokens (index 0 unused; lengths beyond the table use its last entry).
        quantile: the percentile used (0.95).
        windows: reference windows per language.
        reference_rate: per language, the share of reference windows (at their full length) the judge
            calls coherent: about ``quantile`` by construction, a check that the judge is what it says.
    """

    thresholds: dict[str, np.ndarray]
    quantile: float
    windows: dict[str, int] = field(default_factory=dict)

    def threshold(self, language: str, n_tokens: int) -> float:
        if language not in self.thresholds:
            raise OptionError(f"the coherence judge has no reference text for {language!r}: it has "
                              f"{', '.join(sorted(self.thresholds))}")
        table = self.thresholds[language]
        return float(table[min(max(n_tokens, MIN_TOKENS), len(table) - 1)])

    def losses(self, lm: LoadedModel, token_rows: Sequence[Sequence[int]]) -> list[float]:
        """Mean alone-loss of each continuation (NaN for under two tokens)."""
        return [float(x.mean()) if len(x) else float("nan") for x in alone_losses(lm, token_rows)]

    def judge(self, lm: LoadedModel, token_rows: Sequence[Sequence[int]], languages: Sequence[str]) -> tuple[list[bool], list[float]]:
        """(coherent, loss) per continuation, judged against the thresholds of ``languages[i]``."""
        losses = self.losses(lm, token_rows)
        verdicts = []
        for row, lang, loss in zip(token_rows, languages, losses, strict=True):
            ok = len(row) >= MIN_TOKENS and np.isfinite(loss) and loss <= self.threshold(lang, len(row))
            verdicts.append(bool(ok))
        return verdicts, losses


def coherence_judge(
    lm: LoadedModel, texts_by_language: Mapping[str, Sequence[str]], *, max_tokens: int = 24, quantile: float = 0.95,
    windows_per_text: int = 2, seed: int = 0,
) -> CoherenceJudge:
    """Calibrate a :class:`CoherenceJudge` on natural text of each language.

    From each text, ``windows_per_text`` windows of up to ``max_tokens`` tokens are taken: one from its start
    and the others from seeded word boundaries inside it. For every length ``n`` the threshold is the
    ``quantile`` of the windows' mean alone-loss over their first ``n`` tokens (windows shorter than ``n``
    do not count; when fewer than 20 reach ``n``, the previous length's threshold is kept).
    """
    if not 0 < quantile < 1:
        raise OptionError(f"quantile must be between 0 and 1; got {quantile}")
    rng = random.Random(seed)
    thresholds: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for lang, texts in texts_by_language.items():
        windows: list[list[int]] = []
        for text in texts:
            ids = lm.encode(text, prepend_bos=False)
            if len(ids) < MIN_TOKENS:
                continue
            starts = [0]
            strings = lm.token_strings(ids)
            boundaries = [i for i in range(1, len(ids) - MIN_TOKENS) if strings[i][:1] in (" ", "▁", "Ġ")]
            rng.shuffle(boundaries)
            starts += boundaries[:max(0, windows_per_text - 1)]
            windows += [ids[s:s + max_tokens] for s in starts]
        if not windows:
            raise OptionError(f"no reference text of at least {MIN_TOKENS} tokens for {lang!r}")
        losses = alone_losses(lm, windows)
        table = np.full(max_tokens + 1, np.nan)
        for n in range(2, max_tokens + 1):
            means = [float(x[:n - 1].mean()) for x, w in zip(losses, windows, strict=True) if len(w) >= n]
            if len(means) >= 20 or (n <= MIN_TOKENS and means):
                table[n] = float(np.quantile(means, quantile))
            else:
                table[n] = table[n - 1]
        table[:2] = table[2]
        thresholds[lang] = table
        counts[lang] = len(windows)
    return CoherenceJudge(thresholds=thresholds, quantile=quantile, windows=counts)


__all__ = ["MIN_TOKENS", "CoherenceJudge", "alone_losses", "coherence_judge"]
