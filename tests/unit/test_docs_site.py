"""The documentation site: ``mkdocs build --strict`` succeeds, and the built pages work offline.

The site is built from the repository's ``mkdocs.yml`` into a temporary folder, as ``make test`` builds it. Its
pages must reference nothing on the network (no web fonts, no CDN scripts or stylesheets), and opened from
``file://`` in a real browser (Debian's chromium driven by selenium through chromium-driver, network off — the
driver of ``test_viewer.py``) they must show the navigation, navigate, search, and request nothing over http(s).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_viewer import browser, open_page, requested_urls  # noqa: F401 - browser: the shared driver

ROOT = Path(__file__).resolve().parents[2]
# Hosts a theme or plugin would load fonts, scripts or styles from when it is not configured for offline use.
REMOTE_ASSET_HOSTS = ("fonts.googleapis.com", "fonts.gstatic.com", "unpkg.com", "cdn.jsdelivr.net", "cdnjs.cloudflare.com")
# Elements that make the browser fetch their URL when the page loads.
FETCHING_TAGS = re.compile(r"<(?:script|img|iframe|source|audio|video)\b[^>]*\bsrc=[\"']?(?:https?:)?//|"
                           r"<link\b[^>]*\bhref=[\"']?(?:https?:)?//", re.IGNORECASE)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    missing = [name for name in ("mkdocs", "material", "mkdocstrings") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"the docs tools are not installed in this environment ({', '.join(missing)}); "
                    "they are in the dev extra of .venv")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return out


def test_strict_build_writes_every_page_of_the_navigation(site):
    for page in ("index.html", "getting-started.html", "analyses/index.html", "analyses/attention-sinks.html",
                 "benchmarks.html", "data.html", "verification.html", "troubleshooting.html", "examples.html",
                 "contributing.html", "changelog.html", "reference/index.html"):
        assert (site / page).is_file(), page
    # The changelog page is CHANGELOG.md, included by the snippets extension; the reference links to #doctests.
    assert "Unreleased" in (site / "changelog.html").read_text(encoding="utf-8")
    assert 'id="doctests"' in (site / "contributing.html").read_text(encoding="utf-8")
    # The offline plugin inlines the search index as a script instead of fetching JSON from a server.
    assert (site / "search" / "search_index.js").is_file()


def test_no_page_or_stylesheet_references_the_network(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 20
    for path in pages + sorted(site.rglob("*.css")):
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(site)
        match = FETCHING_TAGS.search(text)
        assert match is None, f"{name} loads {match.group(0)!r} from the network"
        for host in REMOTE_ASSET_HOSTS:
            assert host not in text, f"{name} references {host}"
        # The theme's bundle loads mermaid from unpkg when a page has a mermaid diagram: none may have one.
        assert 'class="mermaid"' not in text, f"{name} has a mermaid diagram (mermaid.js would come from a CDN)"


@pytest.mark.browser
def test_pages_open_offline_with_navigation_and_search_and_fetch_nothing(browser, site):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    def nav_links() -> dict[str, object]:
        links = browser.find_elements(By.CSS_SELECTOR, "nav.md-nav--primary a.md-nav__link")
        return {link.text.strip(): link for link in links if link.is_displayed() and link.text.strip()}

    requested: list[str] = []
    page = site / "analyses" / "attention-sinks.html"
    open_page(browser, page)
    assert "attention-sinks" in browser.find_element(By.TAG_NAME, "h1").text
    shown = nav_links()
    for name in ("Home", "Getting started", "Analyses", "Benchmarks", "Troubleshooting"):
        assert name in shown, f"the navigation does not show {name!r}; it shows {sorted(shown)}"
    # The theme's only other remote script is a ResizeObserver polyfill, fetched when the browser lacks one.
    assert browser.execute_script("return typeof ResizeObserver") == "function"
    requested += requested_urls(browser)

    shown["Getting started"].click()
    WebDriverWait(browser, 30).until(expected_conditions.title_contains("Getting started"))
    assert browser.current_url == (site / "getting-started.html").as_uri()
    requested += requested_urls(browser)

    # Search runs offline: the index is inlined and the worker runs through the vendored iframe-worker shim.
    box = WebDriverWait(browser, 30).until(
        expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, "input.md-search__input")))
    box.click()
    box.send_keys("induction")
    WebDriverWait(browser, 60).until(
        lambda driver: driver.find_elements(By.CSS_SELECTOR, ".md-search-result__item"))
    box.send_keys(Keys.ESCAPE)
    requested += requested_urls(browser)

    assert page.as_uri() in requested, "the performance log recorded no requests: the check below would be empty"
    remote = [url for url in requested if url.startswith(("http:", "https:"))]
    assert remote == [], f"the site asked the network for {remote}"
    errors = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], f"the pages' scripts failed: {errors}"
