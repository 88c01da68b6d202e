"""The multilingual corpus for language features and SAE training: written text plus installed catalogs.

Two sources, both offline (nothing is downloaded):

* **Shipped, written for this project** (``interp/data``): ``parallel_sentences.jsonl`` — 72 everyday
  sentences, each in English, French, Spanish and German (58 marked ``discovery``, 14 ``heldout``), used to
  find language features on matched sentences; ``steering_prompts_en.txt`` — 40 English sentence openings
  that are never used for discovery, on which steering is evaluated; ``steering_tuning_prompts_en.txt`` —
  36 more openings used only to choose steering settings (never to report them);
  ``steering_test_prompts_en.txt`` — 40 openings for a blind test of the chosen settings.
* **Translation catalogs of installed software** (gettext ``.mo`` files of Debian packages under
  ``/usr/share/locale`` and Vim's ``lang`` folder): each catalog maps an English message to its translation,
  so one catalog gives real English text and real French/Spanish/German text written by translators.
  Messages shorter than ``min_words`` words are dropped (most are labels such as language names), format
  placeholders and menu accelerators are removed. Which catalogs are read is **pinned**: the shipped
  manifest ``interp/data/corpus_catalogs.json`` lists every file with its sha256 digest (the catalogs a
  fresh machine of the project's kind has; ``scripts/corpus_manifest.py`` writes it), and the message
  pairs of each language are checked against the manifest's fingerprint, so the corpus — and the SAEs
  trained on it — are the same on every such machine. A missing or different catalog is a one-line
  :class:`CorpusError` naming the file and its Debian package (``INTERP_CORPUS_CATALOGS=0`` selects the
  shipped-only corpus instead). Installing more packages no longer changes the corpus.

Examples:
    >>> from interp.corpus import parallel_sentences, steering_prompts
    >>> pairs = parallel_sentences("discovery")
    >>> len(pairs["en"]) == len(pairs["fr"])
    True
    >>> len(steering_prompts()) >= 20
    True
"""

from __future__ import annotations

import functools
import gettext
import hashlib
import json
import os
import random
import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interp.data import read_lines, shipped_path
from interp.errors import InterpUserError, OptionError


class CorpusError(InterpUserError):
    """A pinned translation catalog is missing or differs from the documented one."""

#: The pinned catalog list (paths, Debian packages, sha256 digests, per-language pair fingerprints).
CATALOG_MANIFEST = "corpus_catalogs.json"

#: Languages of the shipped parallel sentences (ISO 639-1).
PARALLEL_LANGUAGES: tuple[str, ...] = ("en", "fr", "es", "de")
LANGUAGE_NAMES = {"en": "English", "fr": "French", "es": "Spanish", "de": "German", "it": "Italian",
                  "pt": "Portuguese", "nl": "Dutch"}


def parallel_sentences(split: str | None = None) -> dict[str, list[str]]:
    """The shipped parallel sentences, by language: ``{"en": [...], "fr": [...], ...}`` (row-aligned).

    Args:
        split: ``"discovery"``, ``"heldout"`` or None for all.
    """
    if split not in (None, "discovery", "heldout"):
        raise OptionError(f"unknown split {split!r}: use 'discovery', 'heldout' or None")
    records = [json.loads(line) for line in read_lines(shipped_path("parallel_sentences.jsonl"))]
    chosen = [r for r in records if split is None or r["split"] == split]
    return {lang: [r[lang] for r in chosen] for lang in PARALLEL_LANGUAGES}


def steering_prompts() -> list[str]:
    """The 40 shipped English prompt openings used to evaluate steering (never used for discovery)."""
    return read_lines(shipped_path("steering_prompts_en.txt"))


def steering_tuning_prompts() -> list[str]:
    """36 further English openings, used only to confirm the steering settings the tuning screen picks.

    They are disjoint from :func:`steering_prompts` (and from the matched sentences), so adding them to the
    tuning set leaves the held-out prompts untouched.

    Examples:
        >>> from interp.corpus import steering_prompts, steering_tuning_prompts
        >>> set(steering_tuning_prompts()).isdisjoint(steering_prompts())
        True
    """
    return read_lines(shipped_path("steering_tuning_prompts_en.txt"))


def steering_test_prompts() -> list[str]:
    """40 English openings written after the language-steering protocol was fixed, for a blind test of the
    settings it chooses (the 28 held-out steering prompts had been seen during its development).

    Examples:
        >>> from interp.corpus import steering_prompts, steering_test_prompts, steering_tuning_prompts
        >>> set(steering_test_prompts()).isdisjoint(steering_prompts() + steering_tuning_prompts())
        True
    """
    return read_lines(shipped_path("steering_test_prompts_en.txt"))


# ----------------------------------------------------------------------------------------------------
# Translation catalogs of installed software
# ----------------------------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"%(\([^)]*\))?[-#0 +]*\d*(\.\d+)?[hlLqjzt]*[diouxXeEfFgGcrsa%]|\{[^{}]*\}|<[^<>]*>|\$\{?\w+\}?")
_SPACES = re.compile(r"\s+")


def catalog_roots() -> list[Path]:
    """Folders searched for gettext catalogs by :func:`installed_catalog_files` (existing ones only)."""
    roots = [Path(sys.prefix) / "share" / "locale", Path("/usr/share/locale"), Path("/usr/local/share/locale")]
    roots += sorted(Path("/usr/share/vim").glob("vim*/lang")) if Path("/usr/share/vim").is_dir() else []
    for site in {Path(p) for p in sys.path if p.endswith("site-packages")}:
        if site.is_dir():
            roots += [p for p in site.glob("*/locale") if p.is_dir()]
            roots += [p for p in site.glob("*/*/locale") if p.is_dir()]
    seen: set[Path] = set()
    unique = []
    for root in roots:
        resolved = root.resolve()
        if resolved.is_dir() and resolved not in seen:
            seen.add(resolved)
            unique.append(resolved)
    return unique


def installed_catalog_files(language: str) -> list[Path]:
    """Every ``.mo`` catalog installed on this machine for ``language`` (``fr`` also matches ``fr_FR`` …),
    sorted — what ``scripts/corpus_manifest.py`` chooses from; the corpus reads :func:`catalog_files`."""
    files: set[Path] = set()
    for root in catalog_roots():
        for folder in (language, f"{language}_*"):
            files.update(root.glob(f"{folder}/LC_MESSAGES/*.mo"))
    return sorted(files)


@functools.lru_cache(maxsize=1)
def catalog_manifest() -> dict[str, Any]:
    """The shipped pinned-catalog manifest (``interp/data/corpus_catalogs.json``)."""
    return json.loads(shipped_path(CATALOG_MANIFEST).read_text(encoding="utf-8"))


def catalog_files(language: str) -> list[Path]:
    """The pinned catalogs of ``language``, each checked against its documented sha256 digest.

    Raises :class:`CorpusError` (one line, naming the file and its Debian package) when one is missing or
    different; a language the manifest does not cover has no catalogs.
    """
    entry = catalog_manifest()["languages"].get(language)
    if entry is None:
        return []
    files = []
    for item in entry["files"]:
        path = Path(item["path"])
        if not path.is_file():
            raise CorpusError(
                f"the pinned translation catalog {path} (Debian package {item['package']}) is missing, so the SAE "
                "corpus would not be the documented one: install that package, or set INTERP_CORPUS_CATALOGS=0 "
                "for the shipped-only corpus")
        if _digest(path) != item["sha256"]:
            raise CorpusError(
                f"the translation catalog {path} differs from the pinned one (package {item['package']} has another "
                "version), so the SAE corpus would not be the documented one: set INTERP_CORPUS_CATALOGS=0 for "
                "the shipped-only corpus")
        files.append(path)
    return files


@functools.lru_cache(maxsize=1024)
def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def clean_message(text: str) -> str:
    """Drop format placeholders, markup and menu accelerators; collapse whitespace."""
    text = _PLACEHOLDER.sub(" ", text)
    text = text.replace("_", "").replace("&", "")
    return _SPACES.sub(" ", text).strip()


def catalog_pairs(language: str, *, min_words: int = 5) -> tuple[list[tuple[str, str]], list[str]]:
    """(English message, translation) pairs from the pinned catalogs of ``language``, cleaned and
    deduplicated, with the list of files read; the pairs are checked against the manifest's fingerprint."""
    files = catalog_files(language)
    pairs = catalog_pairs_from(files, min_words=min_words)
    entry = catalog_manifest()["languages"].get(language, {})
    if files and min_words == 5 and _pairs_digest(pairs) != entry.get("pairs_sha256"):
        raise CorpusError(
            f"the {language} catalog messages do not match the documented fingerprint (the catalogs are the pinned "
            "ones, so their parsing changed): set INTERP_CORPUS_CATALOGS=0 for the shipped-only corpus")
    return pairs, [str(p) for p in files]


def _pairs_digest(pairs: list[tuple[str, str]]) -> str:
    return hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode("utf-8")).hexdigest()


def catalog_pairs_from(files: Sequence[Path], *, min_words: int = 5) -> list[tuple[str, str]]:
    """(English message, translation) pairs of the given ``.mo`` files, cleaned, deduplicated, sorted."""
    pairs: dict[str, str] = {}
    for path in files:
        try:
            with path.open("rb") as handle:
                catalog: dict[Any, Any] = gettext.GNUTranslations(handle)._catalog  # type: ignore[attr-defined]
        except (OSError, ValueError, UnicodeDecodeError, KeyError):
            continue
        for key, value in catalog.items():
            source = key[0] if isinstance(key, tuple) else key
            if not source or not isinstance(value, str) or not isinstance(source, str):
                continue
            english, translated = clean_message(source), clean_message(value)
            if len(translated.split()) < min_words or len(english.split()) < min_words or translated == english:
                continue
            pairs.setdefault(english, translated)
    return sorted(pairs.items())


# ----------------------------------------------------------------------------------------------------
# The training corpus
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    """Texts for SAE training, shuffled, with per-language counts.

    Attributes:
        texts: the documents (one message or sentence each), languages interleaved.
        languages: the language of each text.
        stats: per language: documents, words, tokens (when a tokenizer was given) and sources.
        fingerprint: sha256 of the texts (identifies the corpus in an SAE's cache key).
    """

    texts: list[str]
    languages: list[str]
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    fingerprint: str = ""

    def card(self) -> str:
        """A small markdown table of documents, words and tokens per language."""
        lines = ["| language | documents | words | tokens | sources |", "| --- | --- | --- | --- | --- |"]
        for lang, s in self.stats.items():
            lines.append(f"| {lang} | {s['documents']} | {s['words']} | {s.get('tokens', '?')} | "
                         f"{', '.join(s['sources'])} |")
        return "\n".join(lines)


def build_corpus(
    languages: Sequence[str] = PARALLEL_LANGUAGES,
    *,
    tokens_per_language: int | None = 60_000,
    tokenizer: Any = None,
    min_words: int = 5,
    include_heldout: bool = False,
    catalogs: bool | None = None,
    seed: int = 0,
) -> Corpus:
    """Assemble the multilingual training corpus from the shipped sentences and installed catalogs.

    English text comes from the catalogs' source messages, the English side of the parallel sentences and
    the shipped English paragraphs (``sinks_prompts.txt``). Each language is capped at
    ``tokens_per_language`` tokens (words × 1.6 when no tokenizer is given) so that no language dominates.
    The held-out parallel sentences and the steering prompts are left out unless ``include_heldout``.
    ``catalogs=False`` (or the environment variable ``INTERP_CORPUS_CATALOGS=0`` when ``catalogs`` is None)
    uses the shipped text only — the same corpus on every machine. A language for which no catalog is
    installed falls back to the shipped sentences with a warning naming the Debian packages that provide
    catalogs (see the data card in ``interp/data/README.md``).

    Examples:
        >>> corpus = build_corpus(("en", "fr"), tokens_per_language=2000)
        >>> sorted(set(corpus.languages))
        ['en', 'fr']
    """
    unknown = [lang for lang in languages if not re.fullmatch(r"[a-z]{2}", lang)]
    if unknown:
        raise OptionError(f"languages must be ISO 639-1 codes such as en, fr, es, de; got {unknown}")
    rng = random.Random(seed)
    parallel = parallel_sentences(None if include_heldout else "discovery")
    pools: dict[str, list[str]] = {lang: [] for lang in languages}
    sources: dict[str, list[str]] = {lang: [] for lang in languages}
    for lang in languages:
        if lang in parallel:
            pools[lang].extend(parallel[lang])
            sources[lang].append("interp/data/parallel_sentences.jsonl")
    if "en" in pools:
        pools["en"].extend(read_lines(shipped_path("sinks_prompts.txt")))
        sources["en"].append("interp/data/sinks_prompts.txt")
    if catalogs is None:
        catalogs = os.environ.get("INTERP_CORPUS_CATALOGS", "1") != "0"
    english_from_catalogs: list[str] = []
    without_catalogs: list[str] = []
    files_read: dict[str, int] = {lang: 0 for lang in languages}
    for lang in languages:
        if lang == "en" or not catalogs:
            continue
        pairs, used = catalog_pairs(lang, min_words=min_words)
        pools[lang].extend(t for _, t in pairs)
        english_from_catalogs.extend(e for e, _ in pairs)
        files_read[lang] = len(used)
        if used:
            sources[lang].append(f"{len(used)} gettext catalogs")
        if not pairs:
            without_catalogs.append(lang)
    if without_catalogs:
        warnings.warn(
            f"the pinned catalog list has no catalogs for {without_catalogs}: the corpus for these languages is "
            "only the shipped parallel sentences (about 1k tokens each)",
            stacklevel=2,
        )
    if "en" in pools and english_from_catalogs:
        pools["en"].extend(sorted(set(english_from_catalogs)))
        sources["en"].append("source messages of the same catalogs")

    def count(text: str) -> int:
        if tokenizer is None:
            return int(len(text.split()) * 1.6) + 1
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1

    texts: list[str] = []
    labels: list[str] = []
    stats: dict[str, dict[str, Any]] = {}
    for lang in languages:
        # Shipped sentences first (always kept), then the catalogs in a seeded random order.
        shipped = [t for t in pools[lang][: len(parallel.get(lang, []))]]
        rest = pools[lang][len(shipped):]
        rng.shuffle(rest)
        chosen: list[str] = []
        tokens = 0
        for text in shipped + rest:
            if tokens_per_language is not None and tokens >= tokens_per_language:
                break
            chosen.append(text)
            tokens += count(text)
        texts.extend(chosen)
        labels.extend([lang] * len(chosen))
        stats[lang] = {"documents": len(chosen), "words": sum(len(t.split()) for t in chosen),
                       "tokens" if tokenizer is not None else "tokens_estimated": tokens, "sources": sources[lang],
                       "catalog_files": files_read[lang]}
        if tokenizer is None:
            stats[lang]["tokens"] = f"~{tokens}"
    order = list(range(len(texts)))
    rng.shuffle(order)
    texts = [texts[i] for i in order]
    labels = [labels[i] for i in order]
    digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()
    return Corpus(texts=texts, languages=labels, stats=stats, fingerprint=digest)
