"""Reports: self-contained, escaped, atomic; rendered by a real headless browser with the network off."""

from __future__ import annotations

import re
import shutil
import subprocess

import pandas as pd
import pytest

import interp
from interp.results import Result, atomic_write

EVIL = '<script>document.title="PWNED"</script><img src=x onerror="document.body.dataset.pwned=1">'


@pytest.fixture(scope="module")
def evil_result(tiny_gpt2):
    return interp.run("attention-sinks", tiny_gpt2, prompts=[EVIL + " and more text here", "A calm prompt."],
                      max_tokens=48, progress=False)


def test_prompt_text_is_escaped_everywhere(evil_result, tmp_path):
    page = evil_result.to_html(tmp_path / "r.html").read_text()
    assert "<script>document.title" not in page
    assert "<img src=x" not in page
    assert "&lt;script&gt;document.title" in page  # the metadata table shows it as text
    # Exactly the inlined plotly.js, one small script per figure and the attention viewer's code execute;
    # the viewer's data sits in one inert JSON script element.
    executable = re.findall(r"<script(?![^>]*application/json)", page)
    assert len(executable) == 1 + len(evil_result.figures) + len(evil_result.sections)
    assert page.count('<script type="application/json"') == len(evil_result.sections) == 1


def test_report_is_self_contained(evil_result, tmp_path):
    page = evil_result.to_html(tmp_path / "r.html").read_text()
    assert not re.search(r"<script[^>]+src=", page)
    assert not re.search(r"<link[^>]+href=[\"']https?:", page)
    assert "Plotly.newPlot" in page and len(page) > 3_000_000  # plotly.js inlined once


def test_metadata_and_notes_are_in_the_report(evil_result, tmp_path):
    page = evil_result.to_html(tmp_path / "r.html").read_text()
    for text in ("model.name", "tiny-gpt2", "seed", "versions.torch", "How to read this", "Gu et al"):
        assert text in page


def test_atomic_write_never_leaves_a_truncated_file(tmp_path, monkeypatch):
    import os

    target = tmp_path / "report.html"
    atomic_write(target, "old complete content")

    def interrupted(_fd):
        raise KeyboardInterrupt  # Ctrl-C after the bytes were written, before the rename

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, "new content " * 10_000)
    assert target.read_text() == "old complete content"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_parquet_round_trips_the_tidy_frame(evil_result, tmp_path):
    path = evil_result.to_parquet(tmp_path / "t.parquet")
    back = pd.read_parquet(path)
    assert list(back.columns[:6]) == ["layer", "head", "position", "token", "metric", "value"]
    assert len(back) == len(evil_result.frame)
    merged = back.query("metric == 'bos_attention'")["value"].to_numpy()
    assert (abs(merged - evil_result.metric("bos_attention")["value"].to_numpy()) < 1e-12).all()


def test_repr_html_renders_for_notebooks(evil_result):
    html = evil_result._repr_html_()
    assert "attention-sinks" in html and "<script>document.title" not in html


def test_empty_result_still_renders(tmp_path):
    result = Result(analysis="x", frame=pd.DataFrame({"metric": ["m"], "value": [1.0]}), metadata={"model": {"name": "<b>"}})
    page = result.to_html(tmp_path / "x.html").read_text()
    assert "&lt;b&gt;" in page


@pytest.mark.browser
def test_headless_browser_renders_figures_and_runs_no_prompt_script(evil_result, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (make test installs it)")
    path = evil_result.to_html(tmp_path / "report.html")
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
        # network off: every host resolves to nothing and every request goes to a dead proxy
        "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
        "--virtual-time-budget=8000", "--dump-dom", path.as_uri(),
    ]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    assert dom.count('class="main-svg"') >= len(evil_result.figures)  # every figure drew its SVG
    assert "PWNED" not in re.search(r"<title>(.*?)</title>", dom).group(1)
    assert "data-pwned" not in dom
