"""Fixtures of the web UI tests: a real `corral serve` on loopback with a user, and headless Chromium
(the system's /usr/bin/chromium, driven by Playwright; never a browser that Playwright downloads)."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.config import Settings
from corral.services.context import Corral
from corral.services.users import UserStore, users_path
from tests.conftest import remove_test_domains

USER = "webadmin"
PASSWORD = "a web admin password"
CHROMIUM = os.environ.get("CORRAL_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
VENDOR = Path(__file__).resolve().parents[2] / "src" / "corral" / "web" / "static" / "vendor"
IN_CI = os.environ.get("CI") == "true"


def unique(stem: str) -> str:
    return f"ct-web-{stem}-{uuid.uuid4().hex[:6]}"


def need(condition: bool, what: str) -> None:
    """Skip on a developer's machine without `what`; fail under CI=true, where it must be there."""
    if not condition:
        if IN_CI:
            pytest.fail(f"{what} is required under CI=true")
        pytest.skip(f"{what} is not available")


@pytest.fixture(scope="session")
def web_user(settings: Settings) -> tuple[str, str]:
    store = UserStore(users_path(settings.data_dir))
    if not store.exists(USER):
        store.add(USER, PASSWORD)
    return USER, PASSWORD


@pytest.fixture(scope="module")
def server(settings: Settings, corral_session: Corral, web_user: tuple[str, str],
           tmp_path_factory: pytest.TempPathFactory,
           running_serve: Callable[..., contextlib.AbstractContextManager[str]]) -> Iterator[str]:
    """`corral serve` on a free loopback port over the test data folder, sampling every second."""
    config = tmp_path_factory.mktemp("web") / "config.toml"
    config.write_text("[monitor]\ninterval_s = 1\n")
    try:
        with running_serve(settings.data_dir, config) as base:
            yield base
    finally:
        remove_test_domains(corral_session)


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[Any]:
    """Headless Chromium (the system's), for the module."""
    need(shutil.which(CHROMIUM) is not None or Path(CHROMIUM).exists(), f"Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "the playwright Python package")
        raise
    need((VENDOR / "xterm" / "xterm.mjs").exists(),
         "the vendored front-end libraries (scripts/setup runs web/install.sh)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


FAILED = pytest.StashKey[bool]()


@pytest.fixture
def page(browser: Any, server: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context (no cookies) at a laptop's size; page errors fail the test; a failed test
    leaves a screenshot (failed-<test>.png) and the page's console messages in its report."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=server)
    page = context.new_page()
    errors: list[str] = []
    messages: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: messages.append(f"{msg.type}: {msg.text}"))
    page.set_default_timeout(20_000)
    try:
        yield page
        if request.node.stash.get(FAILED, False):
            with contextlib.suppress(Exception):
                shot(page, f"failed-{request.node.name}", full_page=True)
            print("page console:", *messages[-30:], sep="\n  ")
    finally:
        context.close()
    assert not errors, f"errors in the page: {errors}"


def wait_js(page: Any, expression: str, timeout_s: float = 20.0, what: str = "") -> Any:
    """Poll a JavaScript function until it returns something truthy (page.wait_for_function would eval
    a string, which the UI's Content-Security-Policy forbids, as it should)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s waiting for {what or expression}"
        time.sleep(0.2)


def shot(page: Any, name: str, *, full_page: bool = False) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


@pytest.fixture
def login(web_user: tuple[str, str]) -> Callable[[Any], None]:
    def log_in(page: Any) -> None:
        page.goto("/")
        page.wait_for_selector("#login-form")
        page.fill("input[name=user]", web_user[0])
        page.fill("input[name=password]", web_user[1])
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#domains tbody tr[data-name='Domain-0']")

    return log_in
