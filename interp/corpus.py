"""The multilingual corpus for language features and SAE training: written text, installed catalogs, prose.

Three sources, all offline (nothing is downloaded at import or when the corpus is built):

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
* **Natural prose from Debian documentation packages** (:mod:`interp.prose`): the LibreOffice help
  (``libreoffice-help-en-us``, ``-fr``, ``-es``, ``-de``) and the Debian Reference (``debian-reference-en``,
  ``-fr``, ``-es``, ``-de``), fetched once with ``python -m interp.prose fetch`` (the setup script does it) into
  the user's cache folder and pinned by ``interp/data/prose_manifest.json`` (sha256 of each ``.deb`` and
  fingerprints of the extracted paragraphs). :func:`prose_paragraphs` gives a language's paragraphs (train or
  held-out split), :func:`parallel_prose` the help paragraphs aligned across the four languages. The SAE corpus
  is mostly this prose (see :func:`build_corpus`); ``INTERP_CORPUS_PROSE=0`` leaves it out.

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
    """A pinned translation catalog or prose package is missing or differs from the documented one."""

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
    prose: bool | None = None,
) -> Corpus:
    """Assemble the multilingual training corpus from the shipped sentences, installed catalogs and prose.

    English text comes from the catalogs' source messages, the English side of the parallel sentences and
    the shipped English paragraphs (``sinks_prompts.txt``). Each language is capped at
    ``tokens_per_language`` tokens (words × 1.6 when no tokenizer is given) so that no language dominates.
    The held-out parallel sentences and the steering prompts are left out unless ``include_heldout``.
    ``catalogs=False`` (or the environment variable ``INTERP_CORPUS_CATALOGS=0`` when ``catalogs`` is None)
    uses the shipped text only — the same corpus on every machine. A language for which no catalog is
    installed falls back to the shipped sentences with a warning naming the Debian packages that provide
    catalogs (see the data card in ``interp/data/README.md``).

    **With prose** (``prose=True``; the default unless ``INTERP_CORPUS_PROSE=0``, and off by default in the
    shipped-only corpus ``catalogs=False`` / ``INTERP_CORPUS_CATALOGS=0``), the train split of
    :func:`prose_paragraphs` is the main part of each language and the texts above are the minor part. The
    shares are fixed, not tuned: every language gets the same token budget ``T`` (``tokens_per_language``,
    lowered to what the language with the least prose can fill, or exactly that when None); the minor part —
    the shipped sentences in order, then the catalog messages (and for English the shipped paragraphs) in a
    seeded random order — takes at most :data:`PROSE_MINOR_SHARE` (20%) of ``T``, and prose paragraphs in a
    seeded random order fill the rest up to ``T`` (a paragraph that would overshoot is passed over for a
    shorter one). So every language has the same number of tokens within about one short paragraph, and at
    least 80% of them are natural prose. Held-out prose (:func:`prose_paragraphs` ``split="heldout"``,
    :func:`parallel_prose`) is never included, whatever ``include_heldout`` says. Prose that is not fetched
    or differs from the pinned packages is a one-line :class:`CorpusError` naming the command that fetches
    it; ``INTERP_CORPUS_PROSE=0`` builds the corpus without prose (with a warning), and ``prose=False`` gives
    exactly the corpus of the versions before prose (same texts, same fingerprint).

    Examples:
        >>> corpus = build_corpus(("en", "fr"), tokens_per_language=2000, prose=False)
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

    if prose is None:
        setting = os.environ.get("INTERP_CORPUS_PROSE")
        prose = catalogs if setting is None else setting != "0"
        if setting == "0" and catalogs:
            warnings.warn("INTERP_CORPUS_PROSE=0: the SAE corpus is built without the pinned prose (shipped "
                          "sentences and catalog messages only, the corpus of the versions before prose)",
                          stacklevel=2)
    if prose:
        return _corpus_with_prose(languages, pools, sources, files_read,
                                  {lang: len(parallel.get(lang, [])) for lang in languages},
                                  tokens_per_language=tokens_per_language, tokenizer=tokenizer, count=count, rng=rng)

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
    return _shuffled_corpus(texts, labels, stats, rng)


# ----------------------------------------------------------------------------------------------------
# Natural prose (interp.prose)
# ----------------------------------------------------------------------------------------------------

#: In a corpus with prose, the most of each language's token budget that the shipped sentences and the
#: catalog messages take together (the rest is prose).
PROSE_MINOR_SHARE = 0.2
#: How many prose paragraphs the filling passes over looking for one that fits the budget before stopping.
_PROSE_FIT_TRIES = 50


def _shuffled_corpus(texts: list[str], labels: list[str], stats: dict[str, dict[str, Any]], rng: random.Random) -> Corpus:
    """Interleave the languages in a seeded order and fingerprint the result (sha256 of the texts)."""
    order = list(range(len(texts)))
    rng.shuffle(order)
    texts = [texts[i] for i in order]
    labels = [labels[i] for i in order]
    digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()
    return Corpus(texts=texts, languages=labels, stats=stats, fingerprint=digest)


def prose_paragraphs(language: str, split: str = "train") -> list[str]:
    """The pinned prose paragraphs of ``language`` (``en``, ``fr``, ``es`` or ``de``), one per item.

    LibreOffice help paragraphs first, then Debian Reference paragraphs, in page order, deduplicated.
    ``split="heldout"`` is a fixed ~10% of the help pages and book sections (the same groups in every
    language), never used for training; ``"train"`` is the rest, with no held-out text in it. Raises
    :class:`CorpusError` when the prose is not fetched (``python -m interp.prose fetch``) or differs from
    the pinned packages.

    Examples:
        >>> from interp.prose import prose_available
        >>> texts = prose_paragraphs("fr", "heldout") if prose_available() else ["x"]  # fetched by the setup
        >>> len(texts) > 0
        True
    """
    from interp.prose import PROSE_LANGUAGES, prose_splits

    if split not in ("train", "heldout"):
        raise OptionError(f"unknown split {split!r}: use 'train' or 'heldout'")
    if language not in PROSE_LANGUAGES:
        raise OptionError(f"no pinned prose for {language!r}: the prose languages are {', '.join(PROSE_LANGUAGES)}")
    return list(prose_splits()["languages"][language][split])


def parallel_prose(split: str = "heldout") -> dict[str, list[str]]:
    """LibreOffice help paragraphs aligned across languages: ``{"en": [...], "fr": [...], "es": [...],
    "de": [...]}``, row ``i`` the same paragraph (same page, same paragraph id) in each language.

    ``split="heldout"`` (the default) comes from the held-out help pages only (none of its texts is in the
    training corpus); ``"train"`` from the others. Raises :class:`CorpusError` like :func:`prose_paragraphs`.
    """
    from interp.prose import prose_splits

    if split not in ("train", "heldout"):
        raise OptionError(f"unknown split {split!r}: use 'train' or 'heldout'")
    return {lang: list(rows) for lang, rows in prose_splits()["parallel"][split].items()}


def _corpus_with_prose(languages: Sequence[str], pools: dict[str, list[str]], sources: dict[str, list[str]],
                       files_read: dict[str, int], shipped_counts: dict[str, int], *, tokens_per_language: int | None,
                       tokenizer: Any, count: Any, rng: random.Random) -> Corpus:
    """The corpus with prose as each language's main part (see :func:`build_corpus` for the shares)."""
    from interp.prose import PROSE_LANGUAGES, package_sources

    with_prose = [lang for lang in languages if lang in PROSE_LANGUAGES]
    without = [lang for lang in languages if lang not in PROSE_LANGUAGES]
    if without:
        warnings.warn(f"there is no pinned prose for {without}: their part of the corpus is the shipped sentences "
                      "and catalog messages only", stacklevel=3)
    counts: dict[str, int] = {}

    def cost(text: str) -> int:
        if text not in counts:
            counts[text] = count(text)
        return counts[text]

    minor: dict[str, list[str]] = {}
    paragraphs: dict[str, list[str]] = {}
    for lang in languages:
        shipped = pools[lang][: shipped_counts[lang]]
        rest = pools[lang][shipped_counts[lang]:]
        rng.shuffle(rest)
        minor[lang] = shipped + rest
        paragraphs[lang] = prose_paragraphs(lang, "train") if lang in with_prose else []
        rng.shuffle(paragraphs[lang])
    def pick_minor(lang: str, cap: float) -> tuple[list[str], int]:
        chosen, tokens = [], 0
        for text in minor[lang]:
            if tokens + cost(text) > cap:
                break
            chosen.append(text)
            tokens += cost(text)
        return chosen, tokens

    # The common budget: what was asked, lowered to what the language with the least prose can fill (its
    # prose plus the minor part that budget allows; a few rounds settle the fixed point from above).
    available = {lang: sum(cost(t) for t in paragraphs[lang]) for lang in with_prose}
    budget: float = float("inf") if tokens_per_language is None else float(tokens_per_language)
    if with_prose:
        budget = min(budget, *(available[lang] / (1 - PROSE_MINOR_SHARE) for lang in with_prose))
        for _ in range(5):
            budget = min(budget, *(available[lang] + pick_minor(lang, PROSE_MINOR_SHARE * budget)[1]
                                   for lang in with_prose))
    texts: list[str] = []
    labels: list[str] = []
    stats: dict[str, dict[str, Any]] = {}
    for lang in languages:
        chosen, minor_tokens = pick_minor(lang, PROSE_MINOR_SHARE * budget if lang in with_prose else budget)
        prose_tokens = 0
        prose_documents = 0
        misses = 0
        for text in paragraphs[lang]:
            if minor_tokens + prose_tokens >= budget or misses >= _PROSE_FIT_TRIES:
                break
            if minor_tokens + prose_tokens + cost(text) > budget:
                misses += 1
                continue
            chosen.append(text)
            prose_tokens += cost(text)
            prose_documents += 1
        texts.extend(chosen)
        labels.extend([lang] * len(chosen))
        tokens = minor_tokens + prose_tokens
        stats[lang] = {"documents": len(chosen), "words": sum(len(t.split()) for t in chosen),
                       "tokens" if tokenizer is not None else "tokens_estimated": tokens,
                       "sources": sources[lang] + (package_sources(lang) if lang in with_prose else []),
                       "catalog_files": files_read[lang], "prose_documents": prose_documents,
                       "prose_tokens": prose_tokens, "prose_share": round(prose_tokens / max(tokens, 1), 3)}
        if tokenizer is None:
            stats[lang]["tokens"] = f"~{tokens}"
    return _shuffled_corpus(texts, labels, stats, rng)
