"""The page of `charrnn serve` in a real headless browser: Chromium from the system's packages,
driven by Playwright. Type a prime, press Generate, wait for the text and the coloured view,
and check the screenshot is not blank.

Without Chromium or Playwright the test is skipped with the reason, except under CI (CI=true),
where it fails: .ci/run installs Chromium.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest

from serve.test_serve import Served, tiny_checkpoint  # noqa: F401  (the fixture)

CHROMIUM = "/usr/bin/chromium"
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


def _missing(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (under CI the browser test must run: .ci/run installs Chromium)")
    pytest.skip(reason)


@pytest.fixture
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is not installed (pip install -e '.[dev]')")
    if not Path(CHROMIUM).exists():
        _missing(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        except Exception as exc:
            _missing(f"Chromium cannot be launched: {str(exc).splitlines()[0]}")
        yield browser
        browser.close()


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit RGB or RGBA PNG, as Chromium writes them."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    idat = b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IDAT":
            idat += body
        else:
            chunks[kind] = body
        pos += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert depth == 8 and colour_type in (2, 6)
    bpp = 3 if colour_type == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = previous[x]
            c = previous[x - bpp] if x >= bpp else 0
            if kind == 1:
                line[x] = (line[x] + a) & 255
            elif kind == 2:
                line[x] = (line[x] + b) & 255
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        previous = line
    return (
        width,
        height,
        [bytes(r) for r in rows] if bpp == 3 else [bytes(v for i, v in enumerate(r) if i % 4 != 3) for r in rows],
    )


def test_the_page_generates_and_colours_the_text(browser, tiny_checkpoint, tmp_path):  # noqa: F811
    served = Served(str(tiny_checkpoint))
    try:
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        outside: list[str] = []
        page.on("request", lambda r: None if r.url.startswith(served.url) else outside.append(r.url))
        page.goto(served.url)
        page.wait_for_function("document.querySelectorAll('#model option').length > 0")
        page.fill("#prime", "The ")
        page.fill("#length", "400")
        page.fill("#seed", "1")
        page.click("#generate")
        page.wait_for_function("document.querySelector('#output').textContent.length >= 404", timeout=30_000)
        page.wait_for_function("document.querySelectorAll('#view span').length >= 404", timeout=30_000)
        text = page.text_content("#output")
        assert text.startswith("The ") and len(text) == 404
        backgrounds = page.eval_on_selector_all(
            "#view span", "spans => new Set(spans.map(s => s.style.background)).size"
        )
        assert backgrounds > 10  # the characters coloured by the unit's activation
        assert "ended by length" in page.text_content("#status")
        page.select_option("#layer", "0")
        page.fill("#unit", "5")
        assert page.get_attribute("#view", "data-unit") == "0:5"
        screenshot = tmp_path / "page.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert outside == []  # nothing fetched from anywhere but charrnn
    finally:
        served.stop()
    width, height, rows = png_pixels(screenshot.read_bytes())
    colours = {row[x : x + 3] for row in rows[::2] for x in range(0, width * 3, 6)}
    assert width >= 1000 and height >= 600
    assert len(colours) > 50, f"the screenshot looks blank: {len(colours)} colours"
    if os.environ.get("CHARRNN_SCREENSHOT"):  # keep it for a person to look at
        Path(os.environ["CHARRNN_SCREENSHOT"]).write_bytes(screenshot.read_bytes())


def test_the_page_lists_a_model_without_a_training_record(browser, tiny_checkpoint, tmp_path):  # noqa: F811
    """An .npz export (or a model folder saved without one) keeps no training record: its steps
    are null, which the page once tried to format (and so listed no model at all)."""
    from tiny_run import invoke

    export = tmp_path / "bare.npz"
    assert invoke("export", str(tiny_checkpoint), "--out", str(export)).exit_code == 0
    served = Served(str(export), str(tiny_checkpoint))
    errors: list[str] = []
    try:
        page = browser.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(served.url)
        page.wait_for_function("document.querySelector('#models').textContent.includes('·')", timeout=30_000)
        listed = page.text_content("#models")
    finally:
        served.stop()
    assert errors == []
    assert "bare: LSTM" in listed and "training not recorded" in listed and "steps" in listed
