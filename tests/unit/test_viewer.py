"""The token-level attention viewer and the head-atlas page: data, escaping, errors, report sections, and a
real browser (Debian's chromium driven by selenium through chromium-driver, network off)."""

from __future__ import annotations

import json
import math
import re
import shutil

import numpy as np
import pandas as pd
import pytest

import interp
from interp.errors import OptionError, PromptError
from interp.results import Result
from interp.viewer import (
    SCALE,
    atlas_section_html,
    attention_viewer_html,
    capture_examples,
    examples_viewer_html,
    render_atlas_page,
    show_attention,
)
from tests.unit.atlas_fixture import made_up_atlas, synthetic_atlas

# Would set a flag (or the title) if any of it ran as script or markup, from a token, a prompt or the JSON.
EVIL = ('<script>window.__pwned=1;document.title="PWNED"</script></script><script>window.__pwned=3</script>'
        '<img src=x onerror="window.__pwned=2"><!--')
CALM = "The cat sat on the mat. The cat sat on the"


def viewer_data(page: str) -> list[dict]:
    return [json.loads(m) for m in re.findall(r'<script type="application/json" class="interp-attn-data">(.*?)</script>',
                                              page, flags=re.S)]


def atlas_data(page: str) -> dict:
    (raw,) = re.findall(r'<script type="application/json" class="interp-atlas-data">(.*?)</script>', page, flags=re.S)
    return json.loads(raw)


def executable_scripts(page: str) -> int:
    return len(re.findall(r"<script(?![^>]*application/json)", page))


def weight(data: dict, example: int, head_index: int, q: int, k: int) -> float:
    row = data["patterns"][example][head_index][q]
    return row[k] / data["scale"] if k < len(row) else 0.0


@pytest.fixture(scope="module")
def atlas(tiny_gpt2):
    return made_up_atlas(tiny_gpt2, [EVIL + " then text", CALM])


# ----------------------------------------------------------------------------------------------------
# Data and escaping
# ----------------------------------------------------------------------------------------------------
def test_viewer_escapes_every_token_and_prompt_and_round_trips_them():
    tokens = ["<bos>", "</script>", "<img src=x onerror=alert(1)>", "&amp;", "\n", ""]
    n = len(tokens)
    pattern = np.tril(np.ones((n, n)))
    pattern /= pattern.sum(-1, keepdims=True)
    page = attention_viewer_html(tokens, [[pattern]], prompt=EVIL, title="<b>title</b>")
    assert "</script>\"" not in page and "<img" not in page and "<!--" not in page and "<b>title" not in page
    assert "&lt;b&gt;title&lt;/b&gt;" in page
    assert executable_scripts(page) == 1  # the viewer's own code, once
    (data,) = viewer_data(page)
    assert data["examples"][0]["tokens"] == tokens and data["examples"][0]["prompt"] == EVIL
    assert data["examples"][0]["causal"] is True
    for q in range(n):
        assert len(data["patterns"][0][0][q]) == q + 1  # causal rows keep only their prefix
        for k in range(n):
            assert weight(data, 0, 0, q, k) == pytest.approx(pattern[q, k], abs=0.5 / SCALE)


def test_inlined_assets_cannot_end_or_open_a_script_element():
    from interp.viewer import _asset

    for name in ("attention_viewer.js", "head_atlas.js", "attention_viewer.css", "head_atlas.css"):
        text = _asset(name).lower()
        assert "</script" not in text and "<script" not in text and "<!--" not in text and "</style" not in text
        assert "http:" not in text and "https:" not in text and "url(" not in text  # nothing to fetch


def test_bidirectional_patterns_and_head_subsets():
    rng = np.random.default_rng(0)
    patterns = rng.dirichlet(np.ones(5), size=(2, 3, 5))  # [layer, head, q, k], every key seen
    page = attention_viewer_html([f"t{i}" for i in range(5)], patterns, heads=[(1, 2), (0, 1)])
    (data,) = viewer_data(page)
    assert data["heads"] == [[1, 2], [0, 1]] and data["initial"] == [0, 0]
    assert data["examples"][0]["causal"] is False
    for index, (layer, head) in enumerate([(1, 2), (0, 1)]):
        got = np.array([[weight(data, 0, index, q, k) for k in range(5)] for q in range(5)])
        np.testing.assert_allclose(got, patterns[layer, head], atol=0.5 / SCALE)


def test_bad_viewer_input_is_a_one_line_error():
    with pytest.raises(OptionError, match="shape"):
        attention_viewer_html(["a", "b", "c"], [[[[1.0, 0.0], [0.5, 0.5]]]])
    with pytest.raises(OptionError, match="no attention pattern for layer 3"):
        attention_viewer_html(["a"], [[[[1.0]]]], heads=[(3, 0)])
    with pytest.raises(OptionError, match="not among the heads"):
        examples_viewer_html([{"prompt": "a", "tokens": ["a"], "patterns": [[[[1.0]]]]}], initial=(0, 5))


def test_show_attention_holds_the_models_own_pattern(tiny_gpt2, tmp_path):
    prompt = "Hello <b>world</b> & friends"
    view = show_attention(tiny_gpt2, prompt, layer=1, head=2)
    ids = tiny_gpt2.encode(prompt)
    reference = tiny_gpt2.capture(tiny_gpt2.pad([ids]), ["blocks.1.attn.hook_pattern"])["blocks.1.attn.hook_pattern"][0]
    (data,) = viewer_data(view._repr_html_())
    start = data["heads"][data["initial"][1]]
    assert start == [1, 2] and data["examples"][0]["tokens"] == tiny_gpt2.token_strings(ids)
    index = data["heads"].index([1, 2])
    got = np.array([[weight(data, 0, index, q, k) for k in range(len(ids))] for q in range(len(ids))])
    np.testing.assert_allclose(got, reference[2].numpy(), atol=0.5 / SCALE + 1e-6)
    assert len(data["heads"]) == tiny_gpt2.n_layers * tiny_gpt2.n_heads  # every head can be picked
    assert view.n_tokens == (len(ids),) and "<b>world" not in view.html
    path = view.save(tmp_path / "attention.html")
    assert path.read_text().startswith("<!DOCTYPE html>") and "interp-attn" in path.read_text()


def test_show_attention_bad_input_is_one_line(tiny_gpt2):
    for kwargs, error, text in [({"layer": 2}, OptionError, "layer 2 is out of range: tiny-gpt2 has layers 0 to 1"),
                                ({"head": 4}, OptionError, "head 4 is out of range"),
                                ({"layer": -1}, OptionError, "out of range"),
                                ({"head": 1.5}, OptionError, "whole number"),
                                ({"max_tokens": 0}, OptionError, "at least 1")]:
        with pytest.raises(error, match=re.escape(text)) as caught:
            show_attention(tiny_gpt2, "hi", **kwargs)
        assert "\n" not in str(caught.value)
    for prompt in ("", "   ", []):
        with pytest.raises(PromptError, match="empty"):
            show_attention(tiny_gpt2, prompt)


def test_show_attention_from_the_command_line_exits_2_on_bad_input(tmp_path, capsys):
    from interp.cli import main

    def cli(*args):
        code = main(["attention", "--model", "tiny-gpt2", *args])
        return code, capsys.readouterr().err

    code, err = cli("--prompt", "hi", "--head", "9", "--out", str(tmp_path / "a.html"))
    assert code == 2 and err.strip().count("\n") == 0 and "head 9 is out of range" in err
    code, err = cli("--prompt", " ", "--out", str(tmp_path / "a.html"))
    assert code == 2 and "prompt is empty" in err
    code, err = cli("--prompt", "hi", "--out", str(tmp_path / "missing" / "deeper" / "a.html"))
    assert code == 2 and "does not exist" in err
    code, err = cli("--prompt", "<b>hi</b>", "--layer", "1", "--out", str(tmp_path / "a.html"))
    assert code == 0, err
    page = (tmp_path / "a.html").read_text()
    assert "interp-attn" in page and "<b>hi" not in page


def test_capture_examples_keeps_the_report_small(tiny_gpt2):
    long = "word " * 100
    examples = capture_examples(tiny_gpt2, [long, long, long, long], max_tokens=48)
    assert len(examples) == 3 and all(len(e["tokens"]) == 48 for e in examples)
    # a budget for one prompt of 20 tokens over 8 heads: prompts are dropped, then tokens
    budget = 8 * 20 * 21 // 2
    small = capture_examples(tiny_gpt2, [long, long], max_tokens=48, max_values=budget)
    assert len(small) == 1 and len(small[0]["tokens"]) == 20


# ----------------------------------------------------------------------------------------------------
# Report sections and the atlas page
# ----------------------------------------------------------------------------------------------------
def test_sinks_and_sparsity_reports_carry_the_viewer(tiny_gpt2, tmp_path):
    texts = [EVIL + " The quick brown fox jumps over the lazy dog near the river bank today.",
             "Attention heads often park their attention on the first token of a prompt, as sinks.",
             "Seven small boats sailed past the old lighthouse at dawn today while gulls circled.",
             "A fourth prompt that the viewer leaves out."]
    sinks = interp.run("attention-sinks", tiny_gpt2, prompts=texts, max_tokens=64, progress=False)
    sparsity = interp.run("attention-sparsity", tiny_gpt2, prompts=texts, progress=False, window=8, min_keys=4,
                          rank_prompts=2, budgets="0.5")
    for result in (sinks, sparsity):
        assert list(result.sections) == ["Attention, token by token"]
        page = result.to_html(tmp_path / f"{result.analysis}.html").read_text()
        (data,) = viewer_data(page)
        assert len(data["examples"]) == 3 and max(len(e["tokens"]) for e in data["examples"]) <= 48
        assert data["examples"][0]["prompt"] == texts[0]
        assert EVIL not in page and "<img src=x" not in page and "<script>window" not in page
        assert executable_scripts(page) == 1 + len(result.figures) + 1  # plotly, one per figure, the viewer
        assert page.index("Attention, token by token") < page.index("<h2>Figures</h2>")
    sink_heads = sinks.metric("bos_attention")
    top = sink_heads.loc[sink_heads["value"].idxmax()]
    (data,) = viewer_data(sinks.to_html(tmp_path / "s.html").read_text())
    assert data["heads"][data["initial"][1]] == [int(top["layer"]), int(top["head"])]  # starts on the strongest sink


def test_atlas_page_carries_the_atlas_numbers_and_escapes_the_prompts(atlas, tiny_gpt2):
    page = render_atlas_page(atlas)
    assert page.startswith("<!DOCTYPE html>") and "plotly" not in page.lower()
    assert "<script>window" not in page and "<img src=x" not in page
    assert executable_scripts(page) == 2  # the viewer and the atlas, nothing else
    data = atlas_data(page)
    for metric in atlas["metrics"]:
        for layer in range(tiny_gpt2.n_layers):
            for head in range(tiny_gpt2.n_heads):
                value = atlas["scores"][metric][layer][head]
                shown = data["scores"][metric][layer][head]
                assert (shown is None and math.isnan(value)) or shown == value  # full precision
    assert data["labels"] == atlas["labels"] and data["partners"] == atlas["partners"]
    assert data["initial"] in ([1, 1], [0, 0], [0, 3], [1, 0])  # the most confident labelled head
    (viewer,) = viewer_data(page)
    assert [e["prompt"] for e in viewer["examples"]] == [e["prompt"] for e in atlas["examples"]]
    assert len(viewer["heads"]) == tiny_gpt2.n_layers * tiny_gpt2.n_heads


def test_bad_atlas_dicts_are_refused_in_one_line(atlas):
    broken = dict(atlas)
    del broken["labels"]
    with pytest.raises(OptionError, match=r"lacks \['labels'\]"):
        render_atlas_page(broken)
    short = dict(atlas, scores=dict(atlas["scores"], induction=[[0.0]]))
    with pytest.raises(OptionError, match=r"scores\['induction'\] must be a \[layer\]\[head\] grid of 2 × 4"):
        render_atlas_page(short)


def test_a_result_with_an_atlas_section_keeps_its_provenance(atlas, tmp_path):
    result = Result(analysis="head-atlas", frame=pd.DataFrame({"metric": ["m"], "value": [1.0]}),
                    metadata={"model": {"name": "tiny-gpt2"}, "seed": 0, "atlas": atlas},
                    notes=("How to read it.",), sections={"Head atlas": atlas_section_html(atlas)})
    page = result.to_html(tmp_path / "atlas.html").read_text()
    assert "class=\"interp-atlas\"" in page and "plotly" not in page.lower()  # no figures: no plotly.js
    assert "<h2>Metadata</h2>" in page and "seed" in page
    # the bulky atlas is one summary row in the provenance table, not megabytes of nested lists
    (row,) = re.findall(r"<tr><td>atlas</td><td>(.*?)</td></tr>", page)
    assert row.startswith("structured data (13 keys: model, n_layers") and len(row) < 400
    assert "&lt;script&gt;window" not in row
    assert "Head atlas" in result._repr_html_()


def test_page_sizes_stay_small(atlas):
    tiny = len(render_atlas_page(atlas).encode())
    gemma_sized = len(render_atlas_page(synthetic_atlas(18, 4, 4, 48)).encode())
    print(f"\natlas page: tiny-gpt2 {tiny / 1e3:.0f} kB; 18 layers × 4 heads, 4 examples × 48 tokens "
          f"{gemma_sized / 1e6:.2f} MB")
    assert tiny < 300_000 and gemma_sized < 3_000_000


# ----------------------------------------------------------------------------------------------------
# A real browser: chromium through chromium-driver, network off
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None:
        pytest.skip("chromium is not installed (make test installs it)")
    if driver_path is None:
        pytest.skip("chromedriver is not installed (make test installs Debian's chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed in this environment (it is in the dev extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1400,1000", f"--user-data-dir={tmp_path_factory.mktemp('profile')}",
                     # network off: every host resolves to nothing and every request goes to a dead proxy
                     "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def open_page(driver, path):
    driver.get_log("performance")  # drop what earlier pages logged
    driver.get_log("browser")
    driver.get(path.as_uri())
    return driver


def assert_nothing_ran_and_nothing_was_fetched(driver, path):
    assert driver.execute_script("return window.__pwned === undefined")
    assert "PWNED" not in driver.title
    # the page itself, inline data and the browser's own chrome:// pages are fine; nothing else is
    foreign = [u for u in requested_urls(driver) if u != path.as_uri() and not u.startswith(("data:", "chrome:"))]
    assert foreign == [], f"the page asked for resources beyond itself: {foreign}"
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], f"the page's scripts failed: {errors}"


def hover(driver, element):
    from selenium.webdriver.common.action_chains import ActionChains

    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    ActionChains(driver).move_to_element(element).perform()


def inline_weights(viewer) -> list[str]:
    return [s.text.strip() for s in viewer.find_elements("css selector", ".ia-tok .ia-w")]


def check_row(viewer, pattern_row: list[float], q: int, tokens: int):
    shown = inline_weights(viewer)
    assert len(shown) == tokens
    for k in range(tokens):
        if k > q:
            assert shown[k] == "", f"key {k} is in the future of query {q} and must show no weight"
        else:
            # two decimals of a weight stored to three: within 0.005 + 0.0005
            assert float(shown[k]) == pytest.approx(pattern_row[k], abs=0.0056), (q, k)
    top = viewer.find_elements("css selector", ".ia-row .ia-val")
    assert top, "the side table lists the top weights of the row"
    for cell in top:
        k = int(cell.get_attribute("data-pos"))
        assert float(cell.text) == pytest.approx(pattern_row[k], abs=0.0006)
    best = max(range(q + 1), key=lambda k: pattern_row[k])
    assert float(top[0].text) == pytest.approx(pattern_row[best], abs=0.0006)


@pytest.mark.browser
def test_browser_grid_click_opens_the_card_with_the_atlas_numbers(browser, atlas, tmp_path):
    path = tmp_path / "atlas.html"
    path.write_text(render_atlas_page(atlas))
    driver = open_page(browser, path)
    layer, head = 1, 1
    driver.find_element("css selector", f'.ha-cell[data-layer="{layer}"][data-head="{head}"]').click()
    card = driver.find_element("css selector", ".ha-card")
    assert (card.get_attribute("data-layer"), card.get_attribute("data-head")) == (str(layer), str(head))
    assert card.find_element("css selector", ".ha-card-title").text.startswith(f"Head {layer}.{head}")
    for metric in atlas["metrics"]:
        row = card.find_element("css selector", f'tr[data-metric="{metric}"]')
        value, null = atlas["scores"][metric][layer][head], atlas["nulls"][metric][layer][head]
        cell = row.find_element("css selector", ".ha-value")
        assert float(cell.get_attribute("data-value")) == value  # the very number of atlas["scores"]
        assert float(cell.text) == pytest.approx(value, rel=1e-3, abs=1e-9)
        assert float(row.find_element("css selector", ".ha-null").get_attribute("data-value")) == null
    assert card.find_element("css selector", 'tr[data-metric="induction"] .ha-value').text == "0.1235"
    labels = [chip.get_attribute("data-label") for chip in card.find_elements("css selector", ".ha-label")]
    assert labels == atlas["labels"][layer][head] == ["induction", "copying"]
    partners = card.find_elements("css selector", ".ha-partner")
    assert [(int(p.get_attribute("data-layer")), int(p.get_attribute("data-head")), p.get_attribute("data-mode"))
            for p in partners] == [(q["layer"], q["head"], q["mode"]) for q in atlas["partners"][layer][head]]
    importance = card.find_element("css selector", ".ha-importance")
    assert float(importance.get_attribute("data-value")) == atlas["importance"][layer][head]
    assert "not computed" in card.find_element("css selector", ".ha-ships").text  # ships is None
    # a score of NaN (not measured) is a dash, not "NaN"
    driver.find_element("css selector", '.ha-cell[data-layer="0"][data-head="0"]').click()
    assert card.find_element("css selector", 'tr[data-metric="successor"] .ha-value').text == "\u2014"
    # the colour control shows a score in every cell
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("css selector", ".ha-colour")).select_by_value("score:induction")
    cell = driver.find_element("css selector", f'.ha-cell[data-layer="{layer}"][data-head="{head}"]')
    assert cell.text == "0.1235"
    assert_nothing_ran_and_nothing_was_fetched(driver, path)


@pytest.mark.browser
def test_browser_hovering_a_token_shows_the_selected_heads_row(browser, atlas, tmp_path):
    path = tmp_path / "atlas.html"
    path.write_text(render_atlas_page(atlas))
    driver = open_page(browser, path)
    layer, head = 1, 2
    driver.find_element("css selector", f'.ha-cell[data-layer="{layer}"][data-head="{head}"]').click()
    viewer = driver.find_element("css selector", ".interp-attn")
    assert viewer.find_element("css selector", ".ia-head-title").text == f"Layer {layer}, head {head}"
    pattern = atlas["examples"][0]["patterns"][layer][head]
    tokens = viewer.find_elements("css selector", ".ia-tok")
    assert len(tokens) == len(atlas["examples"][0]["tokens"])
    # the prompt's markup shows as text, token by token
    assert "".join(t.find_element("css selector", ".ia-text").text for t in tokens[1:9]) == EVIL[:8]
    for q in (0, 5, len(tokens) - 1):
        hover(driver, tokens[q])
        check_row(viewer, pattern[q], q, len(tokens))
    # the column: what attends to token 3
    viewer.find_element("css selector", 'input[value="col"]').click()
    hover(driver, tokens[3])
    shown = inline_weights(viewer)
    for j in range(len(tokens)):
        if j < 3:
            assert shown[j] == "", f"query {j} comes before key 3 and cannot attend to it"
        else:
            assert float(shown[j]) == pytest.approx(pattern[j][3], abs=0.0056)
    # the second example prompt
    from selenium.webdriver.support.ui import Select

    viewer.find_element("css selector", 'input[value="row"]').click()
    Select(viewer.find_element("css selector", ".ia-example")).select_by_value("1")
    tokens = viewer.find_elements("css selector", ".ia-tok")
    hover(driver, tokens[7])
    check_row(viewer, atlas["examples"][1]["patterns"][layer][head][7], 7, len(tokens))
    assert_nothing_ran_and_nothing_was_fetched(driver, path)


@pytest.mark.browser
def test_browser_keyboard_moves_selects_and_the_viewer_follows(browser, atlas, tmp_path):
    from selenium.webdriver.common.keys import Keys

    path = tmp_path / "atlas.html"
    path.write_text(render_atlas_page(atlas))
    driver = open_page(browser, path)
    body = driver.find_element("css selector", "body")
    body.send_keys(Keys.TAB)  # the first focusable thing on the page is the colour control
    driver.switch_to.active_element.send_keys(Keys.TAB)  # then the grid's one tab stop
    focused = driver.switch_to.active_element
    assert "ha-cell" in focused.get_attribute("class")
    start = (int(focused.get_attribute("data-layer")), int(focused.get_attribute("data-head")))
    target = (1 - start[0], (start[1] + 1) % 4)
    focused.send_keys(Keys.ARROW_DOWN if target[0] > start[0] else Keys.ARROW_UP)
    driver.switch_to.active_element.send_keys(Keys.ARROW_RIGHT if target[1] > start[1] else Keys.HOME)
    focused = driver.switch_to.active_element
    assert (int(focused.get_attribute("data-layer")), int(focused.get_attribute("data-head"))) == target
    card = driver.find_element("css selector", ".ha-card")
    assert card.get_attribute("data-layer") == str(target[0])  # the card follows the cursor
    focused.send_keys(Keys.ENTER)
    assert "ha-selected" in focused.get_attribute("class") and focused.get_attribute("aria-selected") == "true"
    assert driver.execute_script("return getComputedStyle(document.activeElement).outlineStyle") != "none"
    viewer = driver.find_element("css selector", ".interp-attn")
    assert viewer.find_element("css selector", ".ia-head-title").text == f"Layer {target[0]}, head {target[1]}"
    # into the viewer's tokens: focus shows the row, arrow keys move along it
    token = viewer.find_element("css selector", ".ia-tok")
    driver.execute_script("arguments[0].focus()", token)
    for _ in range(4):
        driver.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)
    active = driver.switch_to.active_element
    assert active.get_attribute("data-pos") == "4" and active.get_attribute("aria-selected") == "true"
    check_row(viewer, atlas["examples"][0]["patterns"][target[0]][target[1]][4], 4,
              len(atlas["examples"][0]["tokens"]))
    # "]" moves the viewer to the next head and the grid follows
    active.send_keys("]")
    following = (target[0], target[1] + 1) if target[1] + 1 < 4 else (target[0] + 1, 0)
    selected = driver.find_element("css selector", ".ha-cell.ha-selected")
    assert (int(selected.get_attribute("data-layer")), int(selected.get_attribute("data-head"))) == following
    assert_nothing_ran_and_nothing_was_fetched(driver, path)


@pytest.mark.browser
def test_browser_report_viewer_and_show_attention_run_no_prompt_script(browser, tiny_gpt2, tmp_path):
    result = interp.run("attention-sinks", tiny_gpt2, prompts=[EVIL + " and more text here", "A calm prompt."],
                        max_tokens=48, progress=False)
    path = result.to_html(tmp_path / "report.html")
    driver = open_page(browser, path)
    assert len(driver.find_elements("css selector", ".main-svg")) >= len(result.figures)  # plotly drew
    viewer = driver.find_element("css selector", ".interp-attn")
    (data,) = viewer_data(path.read_text())
    head_index = data["initial"][1]
    tokens = viewer.find_elements("css selector", ".ia-tok")
    assert len(tokens) == len(data["examples"][0]["tokens"])
    hover(driver, tokens[6])
    check_row(viewer, [weight(data, 0, head_index, 6, k) for k in range(len(tokens))], 6, len(tokens))
    assert_nothing_ran_and_nothing_was_fetched(driver, path)

    view = show_attention(tiny_gpt2, EVIL, layer=1, head=3)
    page = view.save(tmp_path / "show.html")
    driver = open_page(browser, page)
    viewer = driver.find_element("css selector", ".interp-attn")
    assert viewer.find_element("css selector", ".ia-head-title").text == "Layer 1, head 3"
    ids = tiny_gpt2.encode(EVIL)
    pattern = tiny_gpt2.capture(tiny_gpt2.pad([ids]), ["blocks.1.attn.hook_pattern"])["blocks.1.attn.hook_pattern"][0, 3]
    tokens = viewer.find_elements("css selector", ".ia-tok")
    tokens[10].click()
    check_row(viewer, pattern[10].tolist(), 10, len(ids))
    assert_nothing_ran_and_nothing_was_fetched(driver, page)


@pytest.mark.browser
def test_firefox_card_hover_and_keyboard(atlas, tmp_path):
    """The same page in Firefox ESR, driven by Mozilla's marionette-driver (no geckodriver, which only GitHub
    ships). The setup installs both (Debian's firefox-esr as root, marionette-driver in the dev extra); this
    skips only where they are missing."""
    firefox = shutil.which("firefox-esr") or shutil.which("firefox")
    if firefox is None:
        pytest.skip("Firefox is not installed (optional: apt-get install firefox-esr)")
    marionette = pytest.importorskip("marionette_driver.marionette", reason="marionette-driver is not installed "
                                     "(the dev extra has it; this environment lacks it)")
    from marionette_driver import By
    from marionette_driver.keys import Keys

    path = tmp_path / "atlas.html"
    path.write_text(render_atlas_page(atlas))
    client = marionette.Marionette(bin=firefox, headless=True, gecko_log=str(tmp_path / "gecko.log"))
    try:
        client.start_session()
        client.navigate(path.as_uri())
        assert client.execute_script("return window.__pwned === undefined")
        client.find_element(By.CSS_SELECTOR, '.ha-cell[data-layer="1"][data-head="1"]').click()
        for metric in atlas["metrics"]:
            shown = client.find_element(By.CSS_SELECTOR, f'tr[data-metric="{metric}"] .ha-value').get_attribute("data-value")
            value = atlas["scores"][metric][1][1]
            assert (shown == "" and math.isnan(value)) or float(shown) == value
        tokens = client.find_elements(By.CSS_SELECTOR, ".ia-tok")
        client.execute_script("arguments[0].scrollIntoView({block: 'center'})", script_args=[tokens[12]])
        client.actions.sequence("pointer", "mouse", {"pointerType": "mouse"}).pointer_move(0, 0, origin=tokens[12]).perform()
        shown = [e.text.strip() for e in client.find_elements(By.CSS_SELECTOR, ".ia-tok .ia-w")]
        row = atlas["examples"][0]["patterns"][1][1][12]
        assert all(shown[k] == "" if k > 12 else abs(float(shown[k]) - row[k]) <= 0.0056 for k in range(len(tokens)))
        start = client.find_element(By.CSS_SELECTOR, '.ha-cell[data-layer="0"][data-head="0"]')
        client.execute_script("arguments[0].focus()", script_args=[start])
        for key in (Keys.ARROW_DOWN, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, Keys.ENTER):
            client.execute_script("return document.activeElement").send_keys(key)
        selected = client.find_element(By.CSS_SELECTOR, ".ha-cell.ha-selected")
        assert (selected.get_attribute("data-layer"), selected.get_attribute("data-head")) == ("1", "2")
        assert client.find_element(By.CSS_SELECTOR, ".ia-head-title").text == "Layer 1, head 2"
    finally:
        client.cleanup()
