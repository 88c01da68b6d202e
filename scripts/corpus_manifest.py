"""Write interp/data/corpus_catalogs.json: the exact gettext catalogs the SAE corpus reads, with digests.

The list is what a fresh machine of the project's kind has *before* the setup script runs (the setup's
`apt-get install chromium` brings libgtk-3-common's catalogs, which changed the corpus between a machine
that had run the setup and one that had not). Catalogs owned by the packages named with --exclude-packages
(default: those the setup's chromium install added, read from /var/log/apt/history.log) are left out.

    python scripts/corpus_manifest.py            # rewrite the manifest from this machine's catalogs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interp.corpus import LANGUAGE_NAMES, catalog_pairs_from, installed_catalog_files  # noqa: E402


def chromium_packages() -> set[str]:
    log = Path("/var/log/apt/history.log")
    if not log.is_file():
        return set()
    text = log.read_text()
    match = re.search(r"Commandline: apt-get install[^\n]*chromium\n(?:Requested-By[^\n]*\n)?Install: ([^\n]*)", text)
    if not match:
        return set()
    return {re.sub(r":\w+$", "", item.split(" (")[0].strip()) for item in match.group(1).split("),") if item.strip()}


def owner(path: Path) -> str:
    done = subprocess.run(["dpkg", "-S", str(path)], capture_output=True, text=True)
    return done.stdout.split(":")[0].strip() if done.returncode == 0 else "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--languages", default="fr,es,de")
    parser.add_argument("--exclude-packages", default=None, help="comma-separated Debian packages to leave out")
    args = parser.parse_args()
    excluded = set(args.exclude_packages.split(",")) if args.exclude_packages else chromium_packages()
    manifest = {"about": "gettext catalogs read by interp.corpus (see the data card in interp/data/README.md)",
                "excluded_packages": sorted(excluded), "languages": {}}
    for lang in args.languages.split(","):
        entries = []
        for path in installed_catalog_files(lang):
            package = owner(path)
            if package in excluded:
                continue
            entries.append({"path": str(path), "package": package,
                            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
        pairs = catalog_pairs_from([Path(e["path"]) for e in entries])
        manifest["languages"][lang] = {
            "name": LANGUAGE_NAMES.get(lang, lang), "files": entries, "pairs": len(pairs),
            "pairs_sha256": hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode("utf-8")).hexdigest(),
        }
        print(f"{lang}: {len(entries)} catalogs, {len(pairs)} message pairs")
    out = Path(__file__).resolve().parents[1] / "interp" / "data" / "corpus_catalogs.json"
    out.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
