"""Open a written HTML report in headless Chromium and report what a reader would see.

Shared by the report's and the study's browser tests.  Uses Debian's Chromium
(``/usr/bin/chromium``, which ``bin/test`` installs) driven by Playwright; when the
binary is missing the calling test fails with a message saying so, it does not skip.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("FCNET_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# every <table> with an id -> the number of rows in its <tbody>(s)
_TABLE_ROWS_JS = """() => Object.fromEntries(
  Array.from(document.querySelectorAll('table[id]')).map(t => [
    t.id, Array.from(t.tBodies).reduce((n, b) => n + b.rows.length, 0)])
)"""
_IMAGES_JS = """() => Array.from(document.images).map(
  i => i.complete && i.naturalWidth > 0 ? i.naturalWidth : 0)"""


def chromium_path() -> str:
    """The Chromium binary, or a failed test that says how to get it."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install Debian's package "
            "(`sudo apt-get install chromium`, which bin/test does) or set FCNET_CHROMIUM",
            pytrace=False,
        )
    return CHROMIUM


def open_page_check(
    html_path: str | os.PathLike, screenshot: str | os.PathLike | None = None
) -> dict:
    """Load ``html_path`` from disk in headless Chromium, wait for it, and describe it.

    Returns a dict with
      title            -- document.title
      n_images         -- number of <img> elements
      images_loaded    -- how many of them decoded (naturalWidth > 0); all loaded means
                          ``images_loaded == n_images``
      image_widths     -- naturalWidth of each <img>, 0 where it failed
      console_errors   -- console messages of type "error" plus uncaught page errors
      table_rows       -- {table id: rows in its <tbody>} for every <table id=...>
      external_requests -- URLs the page asked for other than itself and data: URIs
      h2               -- the text of every <h2>
    With ``screenshot`` a full-page PNG is saved there (handy to eyeball the layout).
    """
    from playwright.sync_api import sync_playwright

    html_path = Path(html_path).resolve()
    if not html_path.is_file():
        pytest.fail(f"report not written: {html_path}", pytrace=False)
    executable = chromium_path()
    page_url = html_path.as_uri()
    errors: list[str] = []
    requests: list[str] = []
    profile = tempfile.mkdtemp(prefix="fcnet-chromium-")
    try:
        with sync_playwright() as pw:
            # a persistent context on a fresh, throw-away profile: nothing from earlier runs
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=executable, headless=True, args=CHROMIUM_ARGS
            )
            try:
                page = context.new_page()
                page.set_default_timeout(30_000)
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
                page.on(
                    "request",
                    lambda r: (
                        None
                        if r.url == page_url or r.url.startswith("data:")
                        else requests.append(r.url)
                    ),
                )
                page.goto(page_url, wait_until="load")
                widths = page.evaluate(_IMAGES_JS)
                result = {
                    "title": page.title(),
                    "n_images": len(widths),
                    "images_loaded": sum(1 for w in widths if w > 0),
                    "image_widths": widths,
                    "console_errors": errors,
                    "table_rows": page.evaluate(_TABLE_ROWS_JS),
                    "external_requests": requests,
                    "h2": page.eval_on_selector_all("h2", "els => els.map(e => e.innerText)"),
                }
                if screenshot is not None:
                    page.screenshot(path=str(screenshot), full_page=True)
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return result
