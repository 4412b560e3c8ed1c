"""Headless Chromium for the dashboard tests: Debian's `chromium` driven by Playwright for Python
(never `playwright install`: no browser build is downloaded), a screenshot of every page a test
looks at, saved where a reviewer finds them (RAPPORT_TEST_OUTPUT, default test-output/ at the
repository root, which git ignores), and the path printed."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("RAPPORT_TEST_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]


def output_dir(test_name: str) -> Path:
    base = Path(os.environ.get("RAPPORT_TEST_OUTPUT", ROOT / "test-output"))
    folder = base / "browser" / re.sub(r"[^A-Za-z0-9_.-]+", "-", test_name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Screens:
    """Numbered screenshots of one test's pages."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.taken: list[Path] = []

    async def shoot(self, page: object, name: str) -> Path:
        path = self.folder / f"{len(self.taken) + 1:02d}-{name}.png"
        await page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
        self.taken.append(path)
        print(f"screenshot {path}")
        return path


@asynccontextmanager
async def chromium() -> AsyncIterator[object]:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 (once per test, before the browser starts)
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install -e '.[test]')")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                   args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            await browser.close()


UNNAMED_CONTROLS = """() => Array.from(document.querySelectorAll(
    'input:not([type=hidden]), select, textarea, button, a[href]'))
  .filter(e => {
    const named = (e.labels && e.labels.length > 0) || e.getAttribute('aria-label') || e.getAttribute('aria-labelledby')
      || (e.tagName === 'BUTTON' || e.tagName === 'A') && e.textContent.trim() !== '';
    return !named;
  })
  .map(e => e.outerHTML.slice(0, 120))"""


async def assert_controls_labelled(page: object) -> None:
    """Every control a person can reach has a name a screen reader says (a label, or its text)."""
    unnamed = await page.evaluate(UNNAMED_CONTROLS)  # type: ignore[attr-defined]
    assert unnamed == [], unnamed
