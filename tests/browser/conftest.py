"""The browser the console tests drive: the system Chromium (Debian's ``chromium``) through
playwright, never a browser playwright downloads. Without either, these tests are skipped with
the reason; a failed test leaves a screenshot of its page."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Debian's chromium; TILEBOX_TEST_CHROMIUM names another system build (chromium-browser, ...)
CHROMIUM = os.environ.get("TILEBOX_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def unavailable() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"no system Chromium at {CHROMIUM} (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[browser]')"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"browser tests skipped: {reason}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(20_000)
    request.node.stash[SCREENSHOTS] = Path(os.environ.get("TILEBOX_TEST_ARTIFACTS") or tmp_path)
    yield opened
    context.close()


SCREENSHOTS = pytest.StashKey[Path]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed browser test saves what its page showed, and says where."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    opened = getattr(item, "funcargs", {}).get("page")
    if report.when != "call" or not report.failed or opened is None:
        return
    directory = item.stash[SCREENSHOTS]
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / (re.sub(r"[^\w.-]+", "_", item.name) + ".png")
    try:
        opened.screenshot(path=str(target), full_page=True)
    except Exception as exc:  # the page may be gone with the failure
        report.sections.append(("screenshot", f"none: {exc}"))
        return
    report.sections.append(("screenshot", str(target)))
