"""What the browser tests share: the chromium fixture (Debian's chromium driven by
Playwright), screenshots on failure, log-in, map coordinates to screen points, drawing, and
waits that poll (the app's CSP forbids the eval that Playwright's wait_for_function uses)."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import pytest

from .servers import ADMIN

CHROMIUM = os.environ.get("GEOLATENT_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
STATIC = Path(__file__).resolve().parents[2] / "geolatent" / "app" / "static" / "index.html"


@pytest.fixture(scope="module", name="browser")
def browser_fixture():
    """Debian's chromium driven by Playwright (one per test module)."""
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("chromium not found: apt-get install -y chromium (make test installs it)")
    if not STATIC.exists():
        pytest.skip("the web UI is not built: run `make frontend`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@contextlib.contextmanager
def screenshot_on_failure(page, folder: Path, name: str):
    try:
        yield
    except BaseException:
        path = folder / f"{name}-failure.png"
        with contextlib.suppress(Exception):
            page.screenshot(path=str(path), full_page=True)
        print(f"screenshot of the failure: {path}")
        raise


def login(page, url: str, user: tuple[str, str] = ADMIN) -> None:
    page.goto(url + "/")
    page.fill("input[name=username]", user[0])
    page.fill("input[name=password]", user[1])
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#projects:not([hidden])")


def wait_ready(page) -> None:
    page.wait_for_selector("body[data-ready='1']", timeout=30000)


def screen_xy(page, lon: float, lat: float) -> tuple[float, float]:
    box = page.locator("#map").bounding_box()
    p = page.evaluate("([lon, lat]) => __geolatent.map.project([lon, lat])", [lon, lat])
    return box["x"] + p["x"], box["y"] + p["y"]


def draw_square(page, lon: float, lat: float, d: float) -> None:
    """Draw a square polygon of half-side ``d`` degrees with the polygon tool (clicking the
    first corner again closes it)."""
    page.click("button[data-mode=polygon]")
    corners = [(lon - d, lat - d), (lon + d, lat - d), (lon + d, lat + d), (lon - d, lat + d)]
    for x, y in [*corners, corners[0]]:
        page.mouse.click(*screen_xy(page, x, y))
        page.wait_for_timeout(150)


def labels_in_ui(page) -> list:
    return page.evaluate("__geolatent.draw.getSnapshot().filter(f => "
                         "['polygon','point'].includes(f.properties.mode))"
                         ".map(f => f.properties.label)")


def wait_js(page, expression: str, timeout: float = 20) -> None:
    """Poll a JS expression with page.evaluate (the app's CSP forbids eval, which
    Playwright's wait_for_function uses)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{expression} stayed false for {timeout} s")
        page.wait_for_timeout(100)


def wait_saved(page) -> None:
    wait_js(page, "document.querySelector('#save-status').textContent === 'saved' && "
                  "__geolatent.saving === 0")


def until(check, timeout: float = 20):
    """Poll ``check()`` until it returns something truthy (the server's state after a UI
    action); return it."""
    deadline = time.monotonic() + timeout
    while not (got := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{check} stayed false for {timeout} s")
        time.sleep(0.2)
    return got


def finetune_predict_show(page, epochs: int) -> list[str]:
    """From the Runs panel: fine-tune for ``epochs`` (the encoder field as it is), predict with
    that model, show the map; returns the legend's entries. A failed job fails with its error."""
    ended = "#jobs li[data-status=succeeded], #jobs li[data-status=failed]"
    page.fill("#epochs", str(epochs))
    page.click("#start-finetune")
    page.wait_for_selector(ended, timeout=600_000)
    assert page.locator("#jobs li[data-status=failed]").count() == 0, page.inner_text("#jobs")
    assert page.locator("#jobs table.confusion").count() == 1  # metrics shown
    page.click("#start-predict")
    page.wait_for_selector("#jobs li[data-kind=predict][data-status=succeeded], "
                           "#jobs li[data-kind=predict][data-status=failed]", timeout=600_000)
    assert page.locator("#jobs li[data-status=failed]").count() == 0, page.inner_text("#jobs")
    with page.expect_response(lambda r: "/tiles/" in r.url and "/jobs/" in r.url
                              and r.status == 200, timeout=30_000):
        page.click("text=Show on map")
    assert page.locator("#legend").is_visible()
    assert page.evaluate("!!__geolatent.map.getLayer('result')")
    return page.locator("#legend div").all_inner_texts()
