"""One headless Debian Chromium (driven by Playwright) and one page for every browser test of a
module. These tests fail, never skip, without /usr/bin/chromium: CI installs it (.ci/run)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium, closed after the module."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get install chromium (see .ci/run)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(browser: Any) -> Iterator[Any]:
    """One page reused by the module's tests (each opens its own dashboard's address)."""
    # bypass_csp: Playwright's waits evaluate their predicates, which the dashboard's policy
    # (no eval) would refuse; the page's own code never needs it.
    context = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True)
    tab = context.new_page()
    tab.set_default_timeout(20_000)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"the page raised: {errors}"
