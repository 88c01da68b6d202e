"""The predictions the explanation-agreement analysis explains: shipped cloze tasks and the user's own rows.

Tasks: ``capitals`` (factual recall, :func:`interp.tasks.capitals_task`), ``induction`` (repeated random
tokens, :func:`interp.tasks.induction_task`), ``sentiment`` and ``agreement`` (``explanation_tasks.json``,
with its data card in ``interp/data/README.md``) for decoders; ``masked`` for encoders. A ``.jsonl`` file
of ``{"prompt", "target", "contrast"}`` rows gives the user's own (``target``/``contrast`` optional).

Examples:
    >>> import interp
    >>> lm = interp.load_model("tiny-gpt2")
    >>> examples, skipped = explanation_examples(lm, "induction", max_examples=2)
    >>> len(examples), examples[0].task, skipped
    (2, 'induction', 0)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp.attribution.token_attribution import Prompt, Target, single_token_id
from interp.data import shipped_path
from interp.errors import OptionError, PromptError
from interp.models import LoadedModel
from interp.tasks import capitals_task, induction_task

DECODER_TASKS: tuple[str, ...] = ("capitals", "induction", "sentiment", "agreement")
ENCODER_TASKS: tuple[str, ...] = ("masked",)
_FORMAT = 'a .jsonl file of {"prompt": ..., "target": ..., "contrast": ...} rows (target and contrast optional)'


@dataclass(frozen=True)
class ExplainedExample:
    """One prediction to explain: the prompt (text or token ids), its target and the task it belongs to."""

    task: str
    prompt: Prompt
    target: Target


def _shipped_rows(task: str) -> list[dict[str, Any]]:
    return json.loads(shipped_path("explanation_tasks.json").read_text(encoding="utf-8"))[task]


def _file_rows(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise PromptError(f"cannot read the task file {str(path)!r} ({error.strerror}): give {_FORMAT}") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise PromptError(f"{path.name} line {number} is not JSON: give {_FORMAT}") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise PromptError(f"{path.name} line {number} has no non-empty 'prompt': give {_FORMAT}")
        rows.append(row)
    if not rows:
        raise PromptError(f"{path.name} has no rows: give {_FORMAT}")
    return rows


def _row_target(lm: LoadedModel, row: dict[str, Any], strict: bool) -> Target | None:
    """The row's target, or None when a shipped answer is not one token of this model (skipped)."""
    target, contrast = row.get("target"), row.get("contrast")
    try:
        if target is None:
            return None
        if contrast is None:
            return single_token_id(lm, target)
        return single_token_id(lm, target), single_token_id(lm, contrast)
    except PromptError:
        if strict:
            raise
        return "skip"


def explanation_examples(lm: LoadedModel, task: str, *, max_examples: int = 8,
                         seed: int = 0) -> tuple[list[ExplainedExample], int]:
    """The examples of ``task`` (a name or a ``.jsonl`` path) for ``lm``, and how many shipped rows were
    skipped because an answer is not a single token of this model."""
    if max_examples < 1:
        raise OptionError(f"max_examples must be at least 1, got {max_examples}")
    path = Path(task)
    if task not in DECODER_TASKS + ENCODER_TASKS:
        if path.suffix != ".jsonl" or not path.exists():
            raise OptionError(f"unknown task {task!r}: choose from {', '.join(DECODER_TASKS + ENCODER_TASKS)} "
                              f"or give {_FORMAT}")
        examples = []
        for row in _file_rows(path)[:max_examples]:
            examples.append(ExplainedExample(path.stem, row["prompt"], _row_target(lm, row, strict=True)))
        return examples, 0
    if lm.is_encoder != (task in ENCODER_TASKS):
        kind = "an encoder (it predicts masked tokens)" if lm.is_encoder else "a decoder (it predicts the next token)"
        accepted = ENCODER_TASKS if lm.is_encoder else DECODER_TASKS
        raise OptionError(f"task {task!r} does not fit {lm.name}, {kind}: choose from {', '.join(accepted)} or a file")
    if task == "induction":
        built = induction_task(lm, n_sequences=max_examples, half_length=8, seed=seed)
        return [ExplainedExample(task, list(e.tokens), (int(e.correct), int(e.incorrect)))  # type: ignore[arg-type]
                for e in built.examples], 0
    if task == "capitals":
        built = capitals_task(lm)
        chosen = built.examples[:max_examples]
        return [ExplainedExample(task, e.text, (int(e.correct), int(e.incorrect)))  # type: ignore[arg-type]
                for e in chosen], 0
    examples, skipped = [], 0
    for row in _shipped_rows(task):
        target = _row_target(lm, row, strict=False)
        if target == "skip":
            skipped += 1
            continue
        if len(examples) < max_examples:
            examples.append(ExplainedExample(task, row["prompt"], target))
    return examples, skipped


def default_tasks(lm: LoadedModel) -> tuple[str, ...]:
    """The shipped tasks that fit ``lm``."""
    return ENCODER_TASKS if lm.is_encoder else DECODER_TASKS
