"""The user's cache directory and checked cache folders (converted checkpoints, tunes, trained SAEs).

A cache folder is built in a temporary sibling folder, gets a ``manifest.json`` with the size and sha256
digest of every file, and is renamed into place in one step; :func:`cache_is_valid` re-checks every digest,
so a missing, truncated or altered file makes the folder invalid and it is rebuilt.

Examples:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from interp.cache import build_checked_cache, cache_is_valid
    >>> root = Path(tempfile.mkdtemp())
    >>> folder = build_checked_cache(root / "demo", lambda tmp: (tmp / "a.txt").write_text("hi") and {})
    >>> cache_is_valid(folder)
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Bumped when the manifest's layout changes (older folders are then rebuilt).
CACHE_FORMAT_VERSION = 1


def cache_dir() -> Path:
    """The user's cache directory for converted checkpoints and trained artefacts.

    ``INTERP_CACHE_DIR`` overrides the platform default (``~/.cache/interp`` on Linux).

    Examples:
        >>> isinstance(cache_dir(), Path)
        True
    """
    override = os.environ.get("INTERP_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("interp"))


def model_cache_folder(kind: str, model_name: str) -> Path:
    """``cache_dir()/kind/<model name made safe for a folder>``: where artefacts of one model are cached.

    Examples:
        >>> model_cache_folder("saes", "org/model v2").name
        'org_model_v2'
    """
    safe_model = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in model_name)
    return cache_dir() / kind / safe_model


def sha256_file(path: Path) -> str:
    """Hex sha256 digest of a file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_is_valid(folder: Path) -> bool:
    """True when ``folder`` holds a complete manifest whose files all match their sizes and digests."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if manifest.get("format") != CACHE_FORMAT_VERSION or not manifest.get("files"):
        return False
    for relative, expected in manifest["files"].items():
        path = folder / relative
        if not path.is_file() or path.stat().st_size != expected["size"]:
            return False
        if sha256_file(path) != expected["sha256"]:
            return False
    return True


def build_checked_cache(folder: Path, build: Callable[[Path], dict[str, Any] | None]) -> Path:
    """Build a cache folder atomically.

    ``build(tmp)`` fills a temporary folder next to ``folder`` and may return extra manifest fields; a
    manifest of sha256 digests is written and the folder is renamed into place (replacing any invalid
    previous one). On any error, Ctrl-C included, the temporary folder is removed.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        extra = build(tmp) or {}
        files = {
            str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        manifest = {"format": CACHE_FORMAT_VERSION, "files": files, **extra}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        # mkdtemp makes the folder 0700; a cache folder should follow the user's umask like any other.
        from interp.results import current_umask

        os.chmod(tmp, 0o777 & ~current_umask())
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
