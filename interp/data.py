"""Prompt sets and tasks the suite ships, and readers for the user's own files.

Every shipped file has a data card in ``interp/data/README.md`` (source, licence, size).

Examples:
    >>> from interp.data import default_prompts
    >>> len(default_prompts())
    64
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

from interp.errors import PromptError

DATA_DIR = Path(str(files("interp").joinpath("data")))


def shipped_path(name: str) -> Path:
    """Path of a file shipped in ``interp/data``."""
    return DATA_DIR / name


def default_prompts() -> list[str]:
    """The shipped default prompt set: 64 original English paragraphs (see the data card)."""
    return read_lines(shipped_path("sinks_prompts.txt"))


def read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_prompts(path: str | Path) -> list[str]:
    """Read a prompt file: one prompt per line, or JSONL whose objects have a ``text`` field.

    Raises :class:`PromptError` (one line, naming the accepted formats) when the file is missing,
    unreadable, malformed or empty.
    """
    file = Path(path).expanduser()
    accepted = "a UTF-8 text file with one prompt per line, or JSONL with a 'text' field per line"
    if not file.is_file():
        raise PromptError(f"prompts file {str(file)!r} does not exist or is not a file: give {accepted}")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PromptError(f"cannot read prompts file {str(file)!r} ({type(error).__name__}): give {accepted}") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise PromptError(f"prompts file {str(file)!r} is empty: give {accepted}")
    if file.suffix.lower() in (".jsonl", ".json") or lines[0].lstrip().startswith("{"):
        prompts = []
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise PromptError(f"{file.name} line {number} is not valid JSON: give {accepted}") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise PromptError(f"{file.name} line {number} has no string 'text' field: give {accepted}")
            if record["text"].strip():
                prompts.append(record["text"])
        if not prompts:
            raise PromptError(f"prompts file {str(file)!r} holds no non-empty 'text' values: give {accepted}")
        return prompts
    return [line.strip() for line in lines]
