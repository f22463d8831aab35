"""The HTML report in a real headless Chromium, opened from file:// as an analyst would.

Uses Debian's /usr/bin/chromium driven by Playwright's bundled driver (no `playwright install`:
it would download a browser). Skips, saying why, when either is missing. Leaves a full-page
screenshot in tests/artifacts/html-report.png for people (and CI artefact upload) to look at; the
folder's .gitignore keeps it out of git, since every run rewrites it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_report_html import (
    HOSTILE_IMG,
    HOSTILE_SCRIPT,
    SHOWN_BIDI,
    UNSAFE_CHARS,
    render_html,  # with include_private=True: the sample holds documentation addresses
    sample_analysis,
)

try:
    from playwright.sync_api import Dialog, Page, expect, sync_playwright

    HAVE_PLAYWRIGHT = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_PLAYWRIGHT = False

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = Path(__file__).resolve().parents[1] / "artifacts" / "html-report.png"


class _Watch:
    """What the page did on its own: console errors, requests, dialogs (an alert = XSS)."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("requestfailed", lambda request: self.errors.append(f"failed: {request.url}"))
        page.on("dialog", self._dialog)

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


@pytest.fixture
def chromium_page() -> Iterator[Page]:
    """A fresh page in Debian's Chromium, or a skip that says what is missing."""
    if not HAVE_PLAYWRIGHT:
        pytest.skip("playwright is not installed (pip install playwright; no browser download)")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1366, "height": 900})
            yield context.new_page()
        finally:
            browser.close()


def _scores(page: Page) -> list[int]:
    return [int(text) for text in page.locator("tbody.ind td.score").all_inner_texts()]


def _background(page: Page) -> str:
    return str(
        page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--bg')")
    ).strip()


@pytest.mark.timeout(60)
def test_report_works_offline_in_chromium(chromium_page: Page, tmp_path: Path) -> None:
    """From file:// the report loads nothing, logs no error, sorts, shows hostile text as text."""
    page = chromium_page
    report = tmp_path / "report.html"
    report.write_text(render_html(sample_analysis()), encoding="utf-8")
    url = report.as_uri()
    watch = _Watch(page)
    page.goto(url, wait_until="load")
    page.wait_for_selector("#graph-svg[data-settled]", timeout=15_000)

    # Sorting: first click ascending, second descending, aria-sort says which.
    original = _scores(page)
    score = page.locator("button[data-sort=score]")
    score.click()
    assert _scores(page) == sorted(original) != original
    assert page.locator("th:has(button[data-sort=score])").get_attribute("aria-sort") == (
        "ascending"
    )
    score.click()
    assert _scores(page) == sorted(original, reverse=True)

    # Filtering by text that only pulses carry.
    page.fill("#filter", "chopstick")
    expect(page.locator("#shown-count")).to_have_text("2 of 10 shown")
    page.fill("#filter", "")
    page.select_option("#verdict-filter", "unknown")
    expect(page.locator("tbody.ind:visible")).to_have_count(3)
    page.select_option("#verdict-filter", "")

    # Hostile upstream text is on screen as literal characters and created no element.
    page.click("#ind-1 button.toggle")
    pulse = page.locator("#ind-1 .pulse-name").first
    expect(pulse).to_be_visible()
    assert pulse.inner_text() == HOSTILE_SCRIPT
    expect(page.get_by_text(HOSTILE_IMG, exact=True).first).to_be_visible()
    assert page.locator("img, iframe").count() == 0
    assert page.evaluate("document.scripts.length") == 2

    # Bidi and control characters were blanked, and upstream spans are isolated besides.
    tag = page.locator("#ind-1 .tag", has_text="build 1").first
    assert tag.text_content() == SHOWN_BIDI
    assert tag.evaluate("el => getComputedStyle(el).unicodeBidi") == "isolate"
    assert pulse.evaluate("el => getComputedStyle(el).unicodeBidi") == "isolate"
    # The body's text includes the graph labels the script drew from the JSON island.
    body = str(page.evaluate("document.body.textContent"))
    assert SHOWN_BIDI in body and not set(UNSAFE_CHARS) & set(body)

    # The graph: hovering highlights neighbours, dragging moves the node.
    node = page.locator("#graph-svg g.node.k-indicator").first
    before = node.get_attribute("transform")
    node.scroll_into_view_if_needed()
    box = node.locator("circle").bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    expect(page.locator("#graph-svg")).to_have_class(re.compile(r"\bfocus\b"))
    assert page.locator("#graph-svg g.node.hl").count() > 1
    page.mouse.down()
    page.mouse.move(x + 90, y + 60, steps=5)
    page.mouse.up()
    assert node.get_attribute("transform") != before

    # A link from the attribution section clears a filter that hides its row and opens it.
    page.fill("#filter", "8.8.8.8")
    page.click("#attribution a.jump[href='#ind-2']")
    expect(page.locator("#ind-2")).to_have_class(re.compile(r"\bopen\b"))
    expect(page.locator("#ind-2 .detail")).to_be_visible()
    assert page.input_value("#filter") == ""

    # Theme: the toggle flips the palette both ways.
    light = _background(page)
    page.click("#theme-toggle")
    assert page.get_attribute("html", "data-theme") == "dark"
    assert _background(page) != light
    page.click("#theme-toggle")
    assert _background(page) == light

    page.wait_for_selector("#graph-svg[data-settled]", timeout=15_000)
    page.evaluate("window.scrollTo(0, 0)")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    assert watch.errors == []
    assert watch.dialogs == []
    assert watch.requests[0] == url  # the listener works: it saw the page itself
    assert set(watch.requests) == {url}
