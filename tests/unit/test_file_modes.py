"""Written files follow the user's umask like any file the user writes: reports, parquet tables and cache
folders get ``0666`` / ``0777`` minus the umask, not the private ``0600`` / ``0700`` of a temporary file or folder."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from interp.cache import build_checked_cache, cache_is_valid
from interp.results import Result, tidy_frame

MODES = [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)]


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    previous: list[int] = []

    def set_mask(mask: int) -> None:
        old = os.umask(mask)
        if not previous:
            previous.append(old)

    yield set_mask
    if previous:
        os.umask(previous[0])


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(("mask", "file_mode", "folder_mode"), MODES, ids=["umask022", "umask077", "umask002"])
def test_reports_and_tables_follow_the_umask(mask, file_mode, folder_mode, tmp_path, umask):
    result = Result(analysis="x", frame=tidy_frame([{"metric": "m", "value": 1.0}]), metadata={"model": {"name": "m"}})
    umask(mask)
    html = result.to_html(tmp_path / "out" / "m" / "x.html")
    table = result.to_parquet(tmp_path / "out" / "m" / "x.parquet")
    assert (oct(mode(html)), oct(mode(table))) == (oct(file_mode), oct(file_mode))
    assert oct(mode(tmp_path / "out" / "m")) == oct(folder_mode)  # the folders made on the way too
    assert pd.read_parquet(table)["value"].tolist() == [1.0]
    assert sorted(p.name for p in html.parent.iterdir()) == ["x.html", "x.parquet"]  # no temporary file left


@pytest.mark.parametrize(("mask", "file_mode", "folder_mode"), MODES, ids=["umask022", "umask077", "umask002"])
def test_cache_folders_follow_the_umask(mask, file_mode, folder_mode, tmp_path, umask):
    def build(tmp):
        (tmp / "weights.bin").write_bytes(b"\x00" * 16)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "config.json").write_text("{}")
        return {"note": "test"}

    umask(mask)
    folder = build_checked_cache(tmp_path / "cache" / "demo", build)
    assert cache_is_valid(folder)
    assert oct(mode(folder)) == oct(folder_mode)
    assert oct(mode(folder / "sub")) == oct(folder_mode)
    for name in ("weights.bin", "sub/config.json", "manifest.json"):
        assert oct(mode(folder / name)) == oct(file_mode), name
