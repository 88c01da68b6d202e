"""The natural-prose part of the SAE corpus (interp.prose, interp.corpus): extraction, pinning, splits, shares.

The extraction, the fetch (with a fake ``apt-get`` serving a tiny ``.deb`` built here), the manifest checks
and the corpus shares run on inline samples and need nothing fetched. The checks on the real packages need
``python -m interp.prose fetch`` (the setup does it as root): without it they skip, except under
``INTERP_REQUIRE_MODELS=1`` (``make test``), where they fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import warnings

import pytest

from interp import corpus, prose
from interp.corpus import CorpusError

# build_corpus's fingerprints before prose existed (the pinned catalogs are checked by sha256, so these do
# not depend on the machine): prose=False must keep them, and so every cached SAE's key.
SHIPPED_ONLY_FINGERPRINT = "eaa8ac568a80c7a14059e33f3cab2baae354e08d6ded662f520b0b9c738d7822"
EN_FR_2000_FINGERPRINT = "09553aef6ea482155be627935eb22f379053106fad55a766971ce63bb220fc7b"


def _require(available: bool, message: str) -> None:
    if available:
        return
    if os.environ.get("INTERP_REQUIRE_MODELS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _catalogs_installed() -> bool:
    try:
        corpus.catalog_files("fr")
    except CorpusError:
        return False
    return True


def require_prose() -> None:
    _require(prose.prose_available(), "the pinned prose packages are not fetched: run `python -m interp.prose fetch` "
                                      "(or `bash scripts/setup.sh` as root)")


# ----------------------------------------------------------------------------------------------------
# Extraction
# ----------------------------------------------------------------------------------------------------

HELP_PAGE = """<!DOCTYPE html><html lang="en-US"><head><title>Title</title><meta charset="utf-8"></head><body>
<header><p>Help header text that is long enough to be a sentence but lives in the page's header.</p></header>
<div id="DisplayArea">
<h1 id="hd_id1">Turning Off Automatic URL Recognition</h1>
<p id="par_id2" class="paragraph" dir="auto">When you enter text,   LibreOffice automatically recognizes a
word that may be a <a href="x.html">URL</a> and replaces the word with a hyperlink, using direct formatting.</p>
<table><tr><td><p id="par_id3" class="tablecontentintable">A cell with enough words in it to pass the length
filter if it were not inside a table of this page.</p></td></tr></table>
<p id="par_id4" class="paragraph" dir="auto">Use the shortcut <span class="switchinline"><span hidden="true"
id="MACx_1" class="MAC"><span class="keycode">Command</span></span><span hidden="true" id="defaultx_1"><span
class="keycode">Ctrl</span></span></span> + F to open the toolbar where you can search for any text in the document.</p>
<p id="par_id5" class="paragraph" dir="auto">Choose <span class="menuitem">Tools - Options - LibreOffice Writer -
Formatting Aids - Display Formatting - Hidden Characters - Fields</span> here.</p>
<div class="embedded"><p class="embedded" id="par_id6">Choose the menu entry that opens the dialog of this page when
you want to change the settings that it shows for the current document.</p></div>
<div class="note"><div class="notetext"><p id="par_id7" dir="auto">The changes apply only to the current
document, so you have to repeat them in every other document where you want the same look.</p></div></div>
<p id="par_id8" class="paragraph"><img src="x.png" alt="icon">Short line.</p>
</div></body></html>"""


def test_help_pages_keep_only_prose_paragraphs_with_their_ids() -> None:
    found = dict(prose.extract_help_html(HELP_PAGE))
    assert list(found) == ["par_id2", "par_id4", "par_id7", "par_id8"]  # no heading, table, menu path, embedded
    assert found["par_id2"].startswith("When you enter text, LibreOffice automatically recognizes a word")
    assert "  " not in found["par_id2"] and "\n" not in found["par_id2"]  # whitespace collapsed
    assert found["par_id4"].startswith("Use the shortcut Ctrl + F to open")  # the default variant, not macOS's
    assert found["par_id8"] == "Short line."  # extracted, then dropped by is_prose (too short)
    kept = [key for key, text in prose.extract_help_html(HELP_PAGE) if prose.is_prose(text, "en")]
    assert kept == ["par_id2", "par_id4", "par_id7"]


XHP_PAGE = """<?xml version="1.0" encoding="UTF-8"?>
<helpdocument version="1.0"><meta><topic id="x"><title>Title</title></topic></meta><body>
<paragraph role="heading" id="hd_id1" level="1">Saving Documents Automatically</paragraph>
<paragraph role="paragraph" id="par_id2"><ahelp hid=".">The program can save a copy of every open document
at regular intervals</ahelp>, so that you lose little work when the computer stops responding.</paragraph>
<paragraph role="code" id="par_id3">Sub Main MsgBox "this line is code and it is not prose at all" End Sub</paragraph>
<table id="t1"><tablerow><tablecell><paragraph role="paragraph" id="par_id4">A table cell that has enough words
to look like a sentence but belongs to a table on this page.</paragraph></tablecell></tablerow></table>
<paragraph role="paragraph" id="par_id5">To change the interval, choose <switchinline select="sys"><caseinline
select="MAC"><menuitem>LibreOffice - Preferences</menuitem></caseinline><defaultinline><menuitem>Tools -
Options</menuitem></defaultinline></switchinline> and type the number of minutes that should pass between saves.</paragraph>
</body></helpdocument>"""


def test_xhp_sources_keep_role_paragraph_outside_tables() -> None:
    found = dict(prose.extract_xhp(XHP_PAGE))
    assert list(found) == ["par_id2", "par_id5"]
    assert found["par_id2"].startswith("The program can save a copy of every open document at regular")
    assert "Tools - Options" in found["par_id5"] and "Preferences" not in found["par_id5"]
    assert all(prose.is_prose(text, "en") for text in found.values())


BOOK_PAGE = """<?xml version="1.0" encoding="UTF-8"?><html xmlns="http://www.w3.org/1999/xhtml"><head>
<title>Chapitre 2. Gestion des paquets</title></head><body><div class="chapter">
<div class="titlepage"><h1 class="title"><a id="_gestion"></a>Gestion des paquets</h1></div>
<div class="toc"><p>Table des matières où chaque titre de section est répété pour la navigation dans le document.</p></div>
<div class="section"><div class="titlepage"><h2 class="title"><a id="_prerequis"></a>Prérequis</h2></div>
<p>Le système de gestion des paquets de Debian est très puissant, mais il faut le comprendre un peu avant de
l’utiliser pour les serveurs de production de votre entreprise.</p>
<pre class="screen">$ sudo apt-get install aptitude et une longue ligne de commande qui ne sera pas gardée</pre>
<div class="table"><table><tr><td><p>Une cellule de tableau assez longue pour ressembler à une phrase complète de ce document.</p></td></tr></table></div>
<p>Lancez <code class="literal">apt-get update</code> puis <code class="literal">apt-get dist-upgrade --yes
--no-install-recommends</code> pour la mise à jour.</p>
<div class="section"><h3 class="title"><a id="_precautions"></a>Précautions</h3>
<ul><li class="listitem"><p>Ne mélangez pas les paquets de plusieurs versions de Debian sur la même machine, car les
dépendances entre les paquets peuvent alors casser le système.</p></li></ul></div></div>
<div class="navfooter"><p>Chapitre précédent et chapitre suivant avec leurs titres complets pour la navigation.</p></div>
</div></body></html>"""


def test_book_pages_keep_paragraphs_with_their_section_outside_code_tables_and_navigation() -> None:
    found = prose.extract_docbook_html(BOOK_PAGE)
    assert [key for key, _ in found] == ["_prerequis", "_precautions"]  # the code-heavy one is dropped too
    assert all(prose.is_prose(text, "fr") for _, text in found)
    assert found[0][1].endswith("de votre entreprise.")


@pytest.mark.parametrize(("text", "language", "kept"), [
    ("The program saves a copy of every open document at regular intervals, so that little work is lost.", "en",
     True),
    ("Le programme enregistre une copie de chaque document ouvert à intervalles réguliers, pour ne rien perdre.",
     "fr", True),
    ("Le programme enregistre une copie de chaque document ouvert à intervalles réguliers, pour ne rien perdre.",
     "es", False),  # the wrong language
    ("El programa guarda una copia de cada documento abierto a intervalos regulares, para que no se pierda nada.",
     "es", True),
    ("Das Programm speichert in regelmäßigen Abständen eine Kopie jedes geöffneten Dokuments, damit nichts verloren "
     "geht.", "de", True),
    ("The program saves a copy of every open document.", "en", False),  # too short
    ("The program saves a copy of every open document at regular intervals so that little work is lost", "en",
     False),  # no sentence end
    ("Run /usr/bin/foo --bar=1 /etc/foo.conf $HOME/x_y ~/z and then the rest of the words in the line.", "en",
     False),  # paths and options
    (" ".join(["word"] * 130) + ".", "en", False),  # too long
])
def test_is_prose(text: str, language: str, kept: bool) -> None:
    assert prose.is_prose(text, language) is kept


# ----------------------------------------------------------------------------------------------------
# Splits and parallel rows (synthetic extraction)
# ----------------------------------------------------------------------------------------------------


def _groups(held: bool, count: int) -> list[str]:
    names = (f"text/page{i}.html" for i in range(10_000))
    return [n for n in names if prose.heldout_group(n) == held][:count]


def _fake_entries() -> list[dict[str, str]]:
    return [{"name": f"{source}-{lang}", "language": lang, "source": source}
            for source in ("libreoffice-help", "debian-reference") for lang in prose.PROSE_LANGUAGES]


def test_tables_align_help_paragraphs_and_keep_held_out_groups_apart() -> None:
    pages = _groups(False, 3) + _groups(True, 2)
    extracted: dict[str, list[list[str]]] = {}
    for lang in prose.PROSE_LANGUAGES:
        rows = [[page, f"par_id{i}", f"{lang} text {page} {i}"] for page in pages for i in range(3)]
        if lang == "fr":
            rows = [r for r in rows if r[1] != "par_id2"]  # missing in French: not a parallel row
            rows[0][2] = f"en text {pages[0]} 0"  # untranslated: dropped from French, and from the rows
        extracted[f"libreoffice-help-{lang}"] = rows
        extracted[f"debian-reference-{lang}"] = [[f"ch01#{s}", "", f"{lang} book {s}"] for s in ("_a", "_b", "_c")]
    extracted["debian-reference-de"].append(["ch01#_d", "", "en book _a"])  # untranslated book paragraph
    tables = prose.build_tables(extracted, _fake_entries())
    parallel = tables["parallel"]
    assert len(parallel["train"]["en"]) == 3 * 2 - 1 and len(parallel["heldout"]["en"]) == 2 * 2
    for split in ("train", "heldout"):
        rows = parallel[split]
        assert {len(rows[lang]) for lang in prose.PROSE_LANGUAGES} == {len(rows["en"])}
        for i, english in enumerate(rows["en"]):
            for lang in ("fr", "es", "de"):
                assert rows[lang][i] == english.replace("en text", f"{lang} text", 1)  # same page, same id
    languages = tables["languages"]
    assert f"en text {pages[0]} 0" not in languages["fr"]["train"]
    assert "en book _a" not in languages["de"]["train"] + languages["de"]["heldout"]
    for lang, split in languages.items():
        assert set(split["train"]).isdisjoint(split["heldout"])
        for text in split["heldout"]:
            group = text.split()[2]
            assert prose.heldout_group(group if group.startswith("text/") else f"ch01#{group}"), (lang, text)


def test_the_held_out_split_is_about_a_tenth_of_the_groups() -> None:
    share = sum(prose.heldout_group(f"text/shared/page{i}.html") for i in range(5000)) / 5000
    assert 0.08 < share < 0.12


# ----------------------------------------------------------------------------------------------------
# Fetch and pinning (a fake apt-get serving a tiny .deb; no network)
# ----------------------------------------------------------------------------------------------------


@pytest.fixture()
def fake_archive(tmp_path, monkeypatch):
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed (not a Debian system)")
    tree = tmp_path / "pkg"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text("Package: fake-doc-fr\nVersion: 1.0\nArchitecture: all\n"
                                             "Maintainer: Nobody <nobody@example.org>\nDescription: test\n")
    (tree / "usr" / "share" / "doc" / "fake").mkdir(parents=True)
    (tree / "usr" / "share" / "doc" / "fake" / "page.html").write_text("<p>Bonjour.</p>")
    debs = tmp_path / "debs"
    debs.mkdir()
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(debs / "fake-doc-fr.deb")],
                   check=True, capture_output=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    apt = bin_dir / "apt-get"
    apt.write_text('#!/bin/sh\nfor a in "$@"; do n=${a%%=*}; if [ -f "$FAKE_DEBS/$n.deb" ]; then '
                   'cp "$FAKE_DEBS/$n.deb" "./${n}_1.0_all.deb"; fi; done\n')
    apt.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DEBS", str(debs))
    digest = hashlib.sha256((debs / "fake-doc-fr.deb").read_bytes()).hexdigest()
    return {"name": "fake-doc-fr", "version": "1.0", "sha256": digest}


def test_fetch_checks_the_digest_and_renames_a_complete_tree_into_place(fake_archive, tmp_path, monkeypatch) -> None:
    root = tmp_path / "cache" / "prose"
    bad = {**fake_archive, "sha256": "0" * 64}
    with pytest.raises(CorpusError, match=r"fake-doc-fr \(1\.0\) has sha256 .* not the pinned 000000000000") as info:
        prose.fetch_prose_packages([bad], root=root)
    assert "\n" not in str(info.value)
    assert list(root.iterdir()) == []  # nothing half-written
    folders = prose.fetch_prose_packages([fake_archive], root=root)
    assert folders == [root / "fake-doc-fr"] and sorted(p.name for p in root.iterdir()) == ["fake-doc-fr"]
    assert (root / "fake-doc-fr" / "usr" / "share" / "doc" / "fake" / "page.html").read_text() == "<p>Bonjour.</p>"
    assert prose.installed_marker("fake-doc-fr", root)["sha256"] == fake_archive["sha256"]
    # Already there and matching: not downloaded again (the fake archive is gone).
    monkeypatch.setenv("FAKE_DEBS", str(tmp_path / "nowhere"))
    assert prose.fetch_prose_packages([fake_archive], root=root) == folders


def test_a_missing_or_different_package_is_a_one_line_error_naming_it(fake_archive, tmp_path, monkeypatch) -> None:
    root = tmp_path / "prose"
    entry = {**fake_archive, "language": "fr", "source": "libreoffice-help", "licence": "MPL-2.0"}
    monkeypatch.setattr(prose, "package_entries", lambda: [entry])
    with pytest.raises(CorpusError, match=r"fake-doc-fr \(1\.0\) is not fetched.*python -m interp\.prose fetch.*"
                                          r"INTERP_CORPUS_PROSE=0") as info:
        prose.check_packages(root)
    assert "\n" not in str(info.value)
    assert not prose.prose_available(root)
    prose.fetch_prose_packages([entry], root=root)
    assert prose.check_packages(root) == [root / "fake-doc-fr"]
    monkeypatch.setattr(prose, "package_entries", lambda: [{**entry, "version": "2.0", "sha256": "1" * 64}])
    with pytest.raises(CorpusError, match=r"fake-doc-fr \(1\.0\) differs from the pinned one \(2\.0") as info:
        prose.check_packages(root)
    assert "\n" not in str(info.value)


def test_the_manifest_pins_eight_packages_with_digests_and_licences() -> None:
    manifest = prose.prose_manifest()
    names = [e["name"] for e in manifest["packages"]]
    assert sorted(names) == sorted([f"libreoffice-help-{x}" for x in ("en-us", "fr", "es", "de")]
                                   + [f"debian-reference-{x}" for x in ("en", "fr", "es", "de")])
    for entry in manifest["packages"]:
        assert re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]) and re.fullmatch(r"[0-9a-f]{64}",
                                                                                entry["paragraphs_sha256"])
        assert entry["licence"] == {"libreoffice-help": "MPL-2.0", "debian-reference": "GPL-2+"}[entry["source"]]
    assert set(manifest["languages"]) == set(prose.PROSE_LANGUAGES)
    assert manifest["parallel"]["heldout_rows"] >= 300
    assert manifest["extract_version"] == prose.EXTRACT_VERSION


def test_extraction_that_no_longer_matches_the_manifest_is_refused(tmp_path, monkeypatch) -> None:
    """A package that is the pinned one but extracts to other paragraphs (the parser changed): one line."""
    entry = {"name": "fake-doc-fr", "language": "fr", "source": "debian-reference", "version": "1.0",
             "sha256": "2" * 64, "licence": "GPL-2+", "paragraphs_sha256": "3" * 64}
    folder = tmp_path / "fake-doc-fr"
    folder.mkdir()
    (folder / "interp-prose.json").write_text(json.dumps({"version": "1.0", "sha256": "2" * 64}))
    monkeypatch.setattr(prose, "package_entries", lambda: [entry])
    monkeypatch.setattr(prose, "prose_manifest", lambda: {"packages": [entry], "languages": {}, "parallel": {}})
    prose._tables_at.cache_clear()  # noqa: SLF001 - a fresh read of this folder
    with pytest.raises(CorpusError, match=r"extracted from fake-doc-fr does not match the documented fingerprint"):
        prose.prose_splits(tmp_path)
    prose._tables_at.cache_clear()  # noqa: SLF001


# ----------------------------------------------------------------------------------------------------
# The corpus with and without prose
# ----------------------------------------------------------------------------------------------------


def test_the_corpus_without_prose_is_the_one_before_prose(monkeypatch) -> None:
    monkeypatch.delenv("INTERP_CORPUS_PROSE", raising=False)
    monkeypatch.delenv("INTERP_CORPUS_CATALOGS", raising=False)
    assert corpus.build_corpus(catalogs=False).fingerprint == SHIPPED_ONLY_FINGERPRINT  # prose follows catalogs
    assert corpus.build_corpus(catalogs=False, prose=False).fingerprint == SHIPPED_ONLY_FINGERPRINT
    _require(_catalogs_installed(), "the pinned translation catalogs are not installed")
    built = corpus.build_corpus(("en", "fr"), tokens_per_language=2000, prose=False)
    assert built.fingerprint == EN_FR_2000_FINGERPRINT
    monkeypatch.setenv("INTERP_CORPUS_PROSE", "0")
    with pytest.warns(UserWarning, match="INTERP_CORPUS_PROSE=0"):
        assert corpus.build_corpus(("en", "fr"), tokens_per_language=2000).fingerprint == EN_FR_2000_FINGERPRINT


def _synthetic_splits() -> dict:
    rng = random.Random(0)
    words = {"en": "the house of a river and the light in this town", "fr": "la maison de la rivière et le jour",
             "es": "la casa del río y el día en una ciudad", "de": "das haus am fluss und der tag in einer stadt"}
    languages = {}
    for lang, vocabulary in words.items():
        pool = vocabulary.split()

        def make(n: int, tag: str, pool: list[str] = pool, lang: str = lang) -> list[str]:
            return [f"{tag} {lang} {i} " + " ".join(rng.choices(pool, k=rng.randint(15, 60))) + "." for i in range(n)]

        languages[lang] = {"train": make(300, "train"), "heldout": make(40, "heldout")}
    parallel = {"train": {lang: languages[lang]["train"][:50] for lang in words},
                "heldout": {lang: languages[lang]["heldout"][:30] for lang in words}}
    return {"languages": languages, "parallel": parallel}


@pytest.mark.parametrize("tokens", [4000, 20_000, None])
def test_prose_is_the_main_part_balanced_across_languages_and_never_held_out(tokens, monkeypatch) -> None:
    splits = _synthetic_splits()
    monkeypatch.setattr(prose, "prose_splits", lambda root=None: splits)
    monkeypatch.setattr(prose, "package_sources", lambda lang: [f"fake-{lang} 1.0 (MPL-2.0)"])
    built = corpus.build_corpus(tokens_per_language=tokens, catalogs=False, prose=True)
    totals = {lang: s["tokens_estimated"] for lang, s in built.stats.items()}
    assert max(totals.values()) <= 1.1 * min(totals.values()), totals
    if tokens is not None:
        assert all(0.9 * tokens <= t <= tokens for t in totals.values()), totals
    for lang, s in built.stats.items():
        assert s["prose_tokens"] >= 0.75 * s["tokens_estimated"]  # the minor part is at most a quarter
        assert f"fake-{lang} 1.0 (MPL-2.0)" in s["sources"]
    texts = set(built.texts)
    for lang in prose.PROSE_LANGUAGES:
        assert texts.isdisjoint(splits["languages"][lang]["heldout"])
        assert texts.isdisjoint(splits["parallel"]["heldout"][lang])
    again = corpus.build_corpus(tokens_per_language=tokens, catalogs=False, prose=True)
    assert again.fingerprint == built.fingerprint
    assert corpus.build_corpus(tokens_per_language=tokens, catalogs=False, prose=True, seed=1).fingerprint != \
        built.fingerprint


def test_prose_splits_reject_unknown_names() -> None:
    with pytest.raises(corpus.OptionError, match="unknown split"):
        corpus.prose_paragraphs("fr", "test")
    with pytest.raises(corpus.OptionError, match="no pinned prose for 'it'"):
        corpus.prose_paragraphs("it")
    with pytest.raises(corpus.OptionError, match="unknown split"):
        corpus.parallel_prose("dev")


# ----------------------------------------------------------------------------------------------------
# The real packages (fetched by the setup)
# ----------------------------------------------------------------------------------------------------


def test_real_prose_splits_are_disjoint_and_sized_as_documented() -> None:
    require_prose()
    manifest = prose.prose_manifest()
    for lang in prose.PROSE_LANGUAGES:
        train, held = corpus.prose_paragraphs(lang, "train"), corpus.prose_paragraphs(lang, "heldout")
        assert set(train).isdisjoint(held)
        assert len(train) == manifest["languages"][lang]["train_paragraphs"] > 5000
        assert len(held) == manifest["languages"][lang]["heldout_paragraphs"] > 500
        assert all(prose.MIN_WORDS <= len(t.split()) <= prose.MAX_WORDS for t in train + held)


def test_real_parallel_rows_are_aligned() -> None:
    require_prose()
    rows = corpus.parallel_prose("heldout")
    assert len(rows["en"]) >= 300 and {len(v) for v in rows.values()} == {len(rows["en"])}
    ratios_ok = numbers_ok = 0
    for i, english in enumerate(rows["en"]):
        digits = sorted(re.findall(r"\d+", english))
        for lang in ("fr", "es", "de"):
            other = rows[lang][i]
            assert other != english
            ratios_ok += 0.5 <= len(other.split()) / len(english.split()) <= 2.0
            numbers_ok += sorted(re.findall(r"\d+", other)) == digits
    checked = 3 * len(rows["en"])
    assert ratios_ok >= 0.97 * checked and numbers_ok >= 0.9 * checked
    held = {lang: set(corpus.prose_paragraphs(lang, "heldout")) for lang in prose.PROSE_LANGUAGES}
    assert all(set(rows[lang]) <= held[lang] for lang in prose.PROSE_LANGUAGES)


def test_real_corpus_with_prose_is_balanced_and_leaves_held_out_prose_out(monkeypatch) -> None:
    require_prose()
    _require(_catalogs_installed(), "the pinned translation catalogs are not installed")
    monkeypatch.delenv("INTERP_CORPUS_PROSE", raising=False)
    monkeypatch.delenv("INTERP_CORPUS_CATALOGS", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: prose and catalogs are both there
        built = corpus.build_corpus(tokens_per_language=20_000)
    totals = [s["tokens_estimated"] for s in built.stats.values()]
    assert max(totals) <= 1.1 * min(totals)
    assert all(s["prose_share"] >= 0.75 and any("libreoffice-help" in x for x in s["sources"])
               for s in built.stats.values())
    texts = set(built.texts)
    for lang in prose.PROSE_LANGUAGES:
        assert texts.isdisjoint(corpus.prose_paragraphs(lang, "heldout"))
