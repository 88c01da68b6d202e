"""Tasks for head-importance scores: token sequences with scored next-token targets and answer pairs.

A :class:`Task` is a list of examples. Each example has token ids (BOS first), the positions whose
next-token prediction is scored for the loss (``targets``: (position, token) pairs), and optionally an
answer position with a correct and an incorrect single-token answer (for the logit difference, the
last-position KL and accuracy) and a corrupted token sequence of the same length (for patching).

Shipped builders (data cards in ``interp/data/README.md``):

* :func:`induction_task` — repeated random tokens ``BOS, R, R[:-1]`` (Olsson et al. 2022): the loss is
  scored on the repeated half; the answer is ``R[-1]`` against a random token not in ``R``; the
  corrupted sequence replaces the first copy by fresh random tokens, so nothing repeats.
* :func:`capitals_task` — factual recall with a counterfactual prefix (Yu, Merullo & Pavlick 2023) built
  from ``interp/data/capitals.json``: "The capital of Poland is London. The capital of Poland is" with
  correct = the memorised capital, incorrect = the in-context city; the corrupted prompt states the true
  capital in the prefix.
* :func:`task_from_file` — the user's rows of (prompt, correct, incorrect[, corrupted]) as JSONL or CSV.

Examples:
    >>> import interp
    >>> from interp.tasks import induction_task
    >>> task = induction_task(interp.load_model("tiny-gpt2"), n_sequences=2, half_length=5)
    >>> len(task.examples), len(task.examples[0].tokens), len(task.examples[0].targets)
    (2, 10, 4)
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from interp.data import shipped_path
from interp.errors import OptionError, PromptError
from interp.models import LoadedModel, TokenBatch

TASK_NAMES: tuple[str, ...] = ("induction", "capitals")


@dataclass(frozen=True)
class TaskExample:
    """One scored sequence.

    Attributes:
        tokens: token ids, BOS first.
        targets: (position, token) pairs: the prediction at ``position`` is scored against ``token``.
        answer_position: where the answer is predicted (the last position), or None.
        correct / incorrect: single-token answer ids at ``answer_position``, or None.
        corrupted: a same-length corrupted token sequence for patching, or None.
        text: readable form of the prompt, for reports.
    """

    tokens: tuple[int, ...]
    targets: tuple[tuple[int, int], ...]
    answer_position: int | None = None
    correct: int | None = None
    incorrect: int | None = None
    corrupted: tuple[int, ...] | None = None
    text: str = ""


@dataclass(frozen=True)
class TaskTensors:
    """A task as padded tensors (``B`` examples, ``P`` targets at most per example)."""

    batch: TokenBatch
    corrupted: TokenBatch | None
    target_positions: Int[Tensor, "batch target"]
    target_tokens: Int[Tensor, "batch target"]
    target_mask: Bool[Tensor, "batch target"]
    answer_positions: Int[Tensor, " batch"] | None
    correct: Int[Tensor, " batch"] | None
    incorrect: Int[Tensor, " batch"] | None

    @property
    def has_answers(self) -> bool:
        return self.correct is not None


@dataclass(frozen=True)
class Task:
    """A named list of examples plus what built it."""

    name: str
    examples: tuple[TaskExample, ...]
    description: str = ""
    parameters: dict = field(default_factory=dict)
    half_length: int | None = None  # induction only: length of the repeated block R
    notes: tuple[str, ...] = ()

    @property
    def has_answers(self) -> bool:
        return all(e.correct is not None and e.incorrect is not None for e in self.examples)

    @property
    def has_corrupted(self) -> bool:
        return all(e.corrupted is not None for e in self.examples)

    def tensors(self, lm: LoadedModel) -> TaskTensors:
        """Pad the examples for ``lm`` (right padding, attention mask)."""
        if not self.examples:
            raise PromptError(f"task {self.name!r} has no examples: give at least one")
        rows = [list(e.tokens) for e in self.examples]
        batch = lm.pad(rows)
        corrupted = lm.pad([list(e.corrupted) for e in self.examples]) if self.has_corrupted else None  # type: ignore[arg-type]
        width = max(1, max(len(e.targets) for e in self.examples))
        positions = torch.zeros(len(rows), width, dtype=torch.long)
        tokens = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, example in enumerate(self.examples):
            for j, (position, token) in enumerate(example.targets):
                positions[i, j], tokens[i, j], mask[i, j] = position, token, True
        answers = None
        correct = incorrect = None
        if self.has_answers:
            answers = torch.tensor([e.answer_position for e in self.examples], dtype=torch.long)
            correct = torch.tensor([e.correct for e in self.examples], dtype=torch.long)
            incorrect = torch.tensor([e.incorrect for e in self.examples], dtype=torch.long)
        return TaskTensors(batch, corrupted, positions, tokens, mask, answers, correct, incorrect)


# ----------------------------------------------------------------------------------------------------
# Induction on repeated random tokens
# ----------------------------------------------------------------------------------------------------
_POOLS: dict[tuple[str, int], list[int]] = {}
_WORDLIKE = re.compile(r"^ ?[A-Za-z]{3,}$")


def ordinary_token_pool(lm: LoadedModel, limit: int = 30000) -> list[int]:
    """Token ids that decode to a plain word (``" word"`` or ``"word"``), else to one printable character.

    Random tokens for the induction task come from here, so that no special, unused or byte-fallback
    token ends up in the sequences.
    """
    key = (lm.name, id(lm.tokenizer))
    if key in _POOLS:
        return _POOLS[key]
    vocab = min(lm.d_vocab, limit)
    special = set(getattr(lm.tokenizer, "all_special_ids", []) or [])
    texts = lm.tokenizer.batch_decode([[i] for i in range(vocab)])
    pool = [i for i, t in enumerate(texts) if i not in special and _WORDLIKE.match(t)]
    if len(pool) < 64:  # byte-level tokenizers: single printable characters
        pool = [i for i, t in enumerate(texts) if i not in special and len(t) == 1 and t.isascii() and t.isprintable() and not t.isspace()]
    _POOLS[key] = pool
    return pool


def induction_task(lm: LoadedModel, *, n_sequences: int = 4, half_length: int = 12, seed: int = 0) -> Task:
    """Repeated random tokens: ``BOS, R, R[:-1]``, loss scored on the repeated half.

    The second copy's token ``R[k]`` (position ``half_length+1+k``) predicts ``R[k+1]``; the last of these
    predictions is the answer ``R[-1]``, against an incorrect token drawn outside ``R``.

    Examples:
        >>> import interp
        >>> task = induction_task(interp.load_model("tiny-gpt2"), n_sequences=1, half_length=4)
        >>> example = task.examples[0]
        >>> example.tokens[1:5] == example.tokens[5:8] + (example.correct,)
        True
    """
    if n_sequences < 1:
        raise OptionError(f"n_sequences must be at least 1, got {n_sequences}")
    if not 3 <= half_length <= (lm.info.n_ctx - 1) // 2:
        raise OptionError(f"half_length must be between 3 and {(lm.info.n_ctx - 1) // 2} for {lm.name}, got {half_length}")
    pool = ordinary_token_pool(lm)
    if len(pool) < 2 * half_length + 1:
        raise OptionError(f"{lm.name}'s vocabulary has only {len(pool)} ordinary tokens; use half_length ≤ {(len(pool) - 1) // 2}")
    bos = lm.bos_token_id
    prefix = [int(bos)] if bos is not None and lm.info.prepend_bos else []
    generator = torch.Generator().manual_seed(seed)
    pool_t = torch.tensor(pool)
    examples = []
    for _ in range(n_sequences):
        draw = pool_t[torch.randperm(len(pool), generator=generator)[: 2 * half_length + 1]].tolist()
        repeated, fresh, wrong = draw[:half_length], draw[half_length : 2 * half_length], draw[-1]
        tokens = prefix + repeated + repeated[:-1]
        start = len(prefix) + half_length  # position of the second copy's first token
        targets = tuple((start + k, repeated[k + 1]) for k in range(half_length - 1))
        examples.append(TaskExample(
            tokens=tuple(tokens), targets=targets, answer_position=len(tokens) - 1,
            correct=repeated[-1], incorrect=wrong, corrupted=tuple(prefix + fresh + repeated[:-1]),
            text="".join(lm.token_strings(tokens[len(prefix):])),
        ))
    return Task(
        name="induction", examples=tuple(examples), half_length=half_length,
        description=f"{n_sequences} sequences of {half_length} random tokens repeated once (loss on the repeated half)",
        parameters=dict(n_sequences=n_sequences, half_length=half_length, seed=seed),
    )


def induction_offsets(task: Task) -> tuple[int, int]:
    """(first position of the second copy, half length) for the induction-pattern scores."""
    if task.half_length is None:
        raise OptionError(f"task {task.name!r} is not an induction task")
    first = task.examples[0].targets[0][0]
    return first, task.half_length


# ----------------------------------------------------------------------------------------------------
# Capitals with a counterfactual prefix
# ----------------------------------------------------------------------------------------------------
def single_token(lm: LoadedModel, text: str) -> int | None:
    """The id of ``text`` if it is exactly one token (no BOS), else None."""
    ids = lm.encode(text, prepend_bos=False)
    return int(ids[0]) if len(ids) == 1 else None


def capitals_task(lm: LoadedModel, *, n_items: int | None = None) -> Task:
    """Factual recall against a counterfactual in-context answer (Yu, Merullo & Pavlick 2023).

    Rows whose capital or distractor is not a single token (with a leading space) for this tokenizer are
    left out; the Task's notes say how many.

    Examples:
        >>> import interp
        >>> # skipped: loads smollm2-135m (tiny-gpt2's byte tokenizer has no single-token capitals)
        >>> task = capitals_task(interp.load_model("smollm2-135m"))    # doctest: +SKIP
    """
    rows = json.loads(shipped_path("capitals.json").read_text(encoding="utf-8"))
    examples = []
    skipped = []
    for row in rows:
        country, capital, distractor = row["country"], row["capital"], row["distractor_city"]
        correct, incorrect = single_token(lm, " " + capital), single_token(lm, " " + distractor)
        clean = f"The capital of {country} is {distractor}. The capital of {country} is"
        corrupt = f"The capital of {country} is {capital}. The capital of {country} is"
        tokens, corrupted = lm.encode(clean), lm.encode(corrupt)
        if correct is None or incorrect is None or len(tokens) != len(corrupted):
            skipped.append(country)
            continue
        examples.append(TaskExample(
            tokens=tuple(tokens), targets=((len(tokens) - 1, correct),), answer_position=len(tokens) - 1,
            correct=correct, incorrect=incorrect, corrupted=tuple(corrupted), text=clean))
        if n_items is not None and len(examples) >= n_items:
            break
    if len(examples) < 2:
        raise PromptError(
            f"only {len(examples)} capitals rows have single-token answers for {lm.name}'s tokenizer: "
            "use another task (induction, or a task file)")
    notes = (f"{len(skipped)} capitals rows left out (answer not a single token): {', '.join(skipped[:10])}",) if skipped else ()
    return Task(
        name="capitals", examples=tuple(examples), notes=notes,
        description=f"{len(examples)} capitals prompts with a counterfactual prefix (correct = memorised capital, "
                    "incorrect = in-context city)",
        parameters=dict(n_items=n_items),
    )


# ----------------------------------------------------------------------------------------------------
# The user's own rows
# ----------------------------------------------------------------------------------------------------
_FILE_FORMAT = ("a JSONL file with 'prompt', 'correct', 'incorrect' (optional 'corrupted') per line, or a CSV with "
                "those column names")


def task_from_rows(lm: LoadedModel, rows: Sequence[dict], *, name: str = "user task") -> Task:
    """A task from (prompt, correct, incorrect[, corrupted]) rows; answers must be single tokens.

    Answers are used verbatim: include the leading space when the answer follows a space
    (``" Paris"``).

    Examples:
        >>> import interp
        >>> lm = interp.load_model("tiny-gpt2")
        >>> task = task_from_rows(lm, [{"prompt": "ab", "correct": "c", "incorrect": "d"}])
        >>> task.examples[0].correct == lm.encode("c", prepend_bos=False)[0]
        True
    """
    if not rows:
        raise PromptError(f"the task has no rows: give {_FILE_FORMAT}")
    examples = []
    for number, row in enumerate(rows, start=1):
        prompt = row.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise PromptError(f"row {number} has an empty or missing 'prompt': give {_FILE_FORMAT}")
        ids = {}
        for key in ("correct", "incorrect"):
            answer = row.get(key)
            if not isinstance(answer, str) or answer == "":
                raise PromptError(f"row {number} has no '{key}' answer: give {_FILE_FORMAT}")
            n = len(lm.encode(answer, prepend_bos=False))
            if n != 1:
                raise PromptError(
                    f"row {number}: the {key} answer {answer!r} is {n} tokens for {lm.name}; answers must be exactly "
                    "1 token (try a leading space or a shorter word)")
            ids[key] = single_token(lm, answer)
        tokens = lm.encode(prompt)
        corrupted = None
        if isinstance(row.get("corrupted"), str) and row["corrupted"].strip():
            corrupted = tuple(lm.encode(row["corrupted"]))
            if len(corrupted) != len(tokens):
                raise PromptError(
                    f"row {number}: the corrupted prompt has {len(corrupted)} tokens but the prompt has {len(tokens)}; "
                    "they must be the same length")
        examples.append(TaskExample(
            tokens=tuple(tokens), targets=((len(tokens) - 1, ids["correct"]),), answer_position=len(tokens) - 1,
            correct=ids["correct"], incorrect=ids["incorrect"], corrupted=corrupted, text=prompt))
    if any(e.corrupted is None for e in examples) and any(e.corrupted is not None for e in examples):
        raise PromptError("give a 'corrupted' prompt on every row or on none")
    return Task(name=name, examples=tuple(examples), description=f"{len(examples)} rows of (prompt, correct, incorrect)")


def task_from_file(lm: LoadedModel, path: str | Path) -> Task:
    """Read a task file (JSONL or CSV; see :func:`task_from_rows`)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise PromptError(f"task file {str(file)!r} does not exist: give {_FILE_FORMAT}")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PromptError(f"cannot read task file {str(file)!r} ({type(error).__name__}): give {_FILE_FORMAT}") from None
    rows: list[dict] = []
    if file.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        missing = {"prompt", "correct", "incorrect"} - set(reader.fieldnames or [])
        if missing:
            raise PromptError(f"{file.name} lacks column(s) {sorted(missing)}: give {_FILE_FORMAT}")
        rows = [dict(r) for r in reader]
    else:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise PromptError(f"{file.name} line {number} is not valid JSON: give {_FILE_FORMAT}") from None
            if not isinstance(record, dict):
                raise PromptError(f"{file.name} line {number} is not a JSON object: give {_FILE_FORMAT}")
            rows.append(record)
    return task_from_rows(lm, rows, name=file.stem)


def build_task(lm: LoadedModel, task: str | Path, *, n_sequences: int = 4, half_length: int = 12, seed: int = 0,
               n_items: int | None = None) -> Task:
    """``"induction"``, ``"capitals"``, or a path to a task file."""
    if task == "induction":
        return induction_task(lm, n_sequences=n_sequences, half_length=half_length, seed=seed)
    if task == "capitals":
        return capitals_task(lm, n_items=n_items)
    if isinstance(task, Path) or Path(str(task)).expanduser().suffix.lower() in (".jsonl", ".json", ".csv"):
        return task_from_file(lm, task)
    raise OptionError(f"unknown task {task!r}: choose {', '.join(TASK_NAMES)} or give a .jsonl/.csv task file")
