"""Open an HTML report in headless Chromium and check what a reader gets (a test helper, not tests).

``check_report(html_path, width, screenshot_path)`` loads the file at ``width`` x 900 px and
checks: every ``<img>`` loads and decodes (after scrolling the page, so lazy images load too),
the console has no errors, no request leaves the file (only ``file:`` and ``data:`` URLs; other
schemes are blocked as well, so an external request also shows as a console error and no
traffic leaves the machine), every table-of-contents link (``nav a[href^='#']``) lands on its
section, and the page has no horizontal overflow. It saves a full-page screenshot and returns
the counts and the findings; with ``strict`` it fails the test on any finding.

The browser is Debian's ``chromium`` driven by its ``chromedriver`` (``make browser`` installs
both); the driver's path is given explicitly, so Selenium Manager never downloads one. Without
them (or selenium) the calling test is skipped, except under ``CI=true``, where it fails.

Example (in a test):
    result = check_report(path, 1280, tmp_path / "report-1280.png")
    assert result["images"] > 0
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

#: where Debian's chromium-driver puts the driver
CHROMEDRIVER = "/usr/bin/chromedriver"
#: requests to these are blocked in the page (CDP ``Network.setBlockedURLs`` patterns)
BLOCKED = ["http://*", "https://*", "ws*://*"]
#: the screenshot's height at most (px); longer pages are cut there
MAX_HEIGHT = 20000
#: a TOC link "lands" when its target's top is this close (px) to where it should be
LANDING_TOLERANCE = 3
HEIGHT = 900


def require_browser() -> tuple[str, str]:
    """``(chromium, chromedriver)`` paths; skips the test without them (fails under ``CI=true``)."""
    missing = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    chromium = shutil.which("chromium")
    if chromium is None:
        missing.append("chromium (make browser: apt-get install chromium)")
    driver = CHROMEDRIVER if Path(CHROMEDRIVER).is_file() else shutil.which("chromedriver")
    if driver is None:
        missing.append("chromedriver (make browser: apt-get install chromium-driver)")
    if missing:
        reason = "browser check needs " + ", ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " (CI=true: the browser test must run)", pytrace=False)
        pytest.skip(reason)
    return chromium, driver


def start_browser(width: int, height: int = HEIGHT):
    """A headless Chromium at ``width`` x ``height`` with the browser and performance logs on and
    every non-file scheme blocked."""
    chromium, chromedriver = require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                     f"--window-size={width},{height}", "--force-device-scale-factor=1",
                     "--disable-dev-shm-usage", "--no-first-run", "--disable-sync",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-default-apps", "--disable-extensions"]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    try:
        driver.set_script_timeout(20)
        _viewport(driver, width, height)
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": BLOCKED})
    except Exception:
        driver.quit()
        raise
    return driver


def _viewport(driver, width: int, height: int) -> None:
    """Resize the window and make the viewport exactly ``width`` x ``height`` CSS px (a headless
    window is at least 500 px wide; the override lets narrower widths be checked)."""
    driver.set_window_size(max(width, 500), height)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


_IMAGES = """
return Array.from(document.images).map((img, i) => ({
    index: i, src: (img.currentSrc || img.src || '').slice(0, 80), complete: img.complete,
    naturalWidth: img.naturalWidth, loading: img.loading}));
"""

# decode() settles once the image is decoded (or rejects when it cannot be); 5 s at most each
_DECODE = """
const done = arguments[arguments.length - 1];
const timeout = (ms) => new Promise((_, reject) => setTimeout(() => reject('decode timed out'), ms));
Promise.allSettled(Array.from(document.images).map(
    img => Promise.race([img.decode(), timeout(5000)])))
  .then(results => done(results.map(r => r.status === 'fulfilled' ? null : String(r.reason))));
"""

_LANDING = """
const target = document.getElementById(arguments[0]);
if (!target) return null;
const root = document.scrollingElement || document.documentElement;
return {top: target.getBoundingClientRect().top,
        margin: parseFloat(getComputedStyle(target).scrollMarginTop) || 0,
        scrollY: window.scrollY, innerHeight: window.innerHeight,
        scrollHeight: root.scrollHeight, hash: location.hash};
"""

# the widest elements past the right edge: what to look at when the page overflows
_OVERFLOWING = """
const width = arguments[0];
return Array.from(document.body.querySelectorAll('*'))
  .map(e => ({e, right: e.getBoundingClientRect().right}))
  .filter(x => x.right > width + 1)
  .sort((a, b) => b.right - a.right).slice(0, 5)
  .map(x => x.e.tagName.toLowerCase() + (x.e.id ? '#' + x.e.id : '')
            + (x.e.className && typeof x.e.className === 'string'
               ? '.' + x.e.className.trim().split(/\\s+/).join('.') : '')
            + ' (right edge ' + Math.round(x.right) + ' px)');
"""


def _scroll_through(driver) -> None:
    """Scroll down a viewport at a time, so lazily loaded images start loading, then back up."""
    position, height = 0, driver.execute_script("return window.innerHeight") or HEIGHT
    while position < driver.execute_script("return document.documentElement.scrollHeight"):
        driver.execute_script("window.scrollTo(0, arguments[0])", position)
        time.sleep(0.05)
        position += height // 2
    driver.execute_script("window.scrollTo(0, document.documentElement.scrollHeight)")
    time.sleep(0.05)


def _wait(condition, timeout: float = 10.0, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())


def _check_images(driver, findings: list[str]) -> dict:
    _scroll_through(driver)
    _wait(lambda: all(i["complete"] for i in driver.execute_script(_IMAGES)))
    images = driver.execute_script(_IMAGES)
    decoded = driver.execute_async_script(_DECODE)
    for image, error in zip(images, decoded):
        problem = ("not loaded" if not image["complete"] else
                   "broken (naturalWidth 0)" if image["naturalWidth"] == 0 else
                   f"not decoded ({error})" if error else None)
        if problem:
            findings.append(f"image {image['index']} ({image['src']}): {problem}")
    return {"images": len(images), "lazy": sum(i["loading"] == "lazy" for i in images)}


def _settled(driver) -> None:
    """Wait until the scroll position stops moving (smooth scrolling)."""
    last = [None]

    def still():
        now = driver.execute_script("return window.scrollY")
        same, last[0] = now == last[0], now
        return same

    _wait(still, timeout=3.0, step=0.1)


def _check_links(driver, findings: list[str], notes: list[str]) -> int:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    links = driver.find_elements(By.CSS_SELECTOR, "nav a[href^='#']")
    for link in links:
        href = link.get_attribute("href").split("#", 1)[1]
        anchor = driver.execute_script("return decodeURIComponent(arguments[0])", href)
        text = link.text.strip() or href
        if driver.execute_script("return document.getElementById(arguments[0]) === null", anchor):
            findings.append(f"TOC link {text!r} -> #{anchor}: no element has this id")
            continue
        driver.execute_script("window.scrollTo(0, 0)")
        _settled(driver)
        try:
            link.click()
        except WebDriverException as error:  # hidden (a collapsed menu) or covered: a note
            notes.append(f"TOC link {text!r} could not be clicked as a user would "
                         f"({type(error).__name__}); clicked by script")
            driver.execute_script("arguments[0].click()", link)
        _settled(driver)
        at = driver.execute_script(_LANDING, anchor)
        at_bottom = at["scrollY"] + at["innerHeight"] >= at["scrollHeight"] - 2
        on_top = abs(at["top"] - at["margin"]) <= LANDING_TOLERANCE
        short_at_bottom = at_bottom and at["margin"] - LANDING_TOLERANCE <= at["top"] < at["innerHeight"]
        if not (on_top or short_at_bottom):
            findings.append(f"TOC link {text!r} -> #{anchor}: section top at {at['top']:.0f} px "
                            f"(expected {at['margin']:.0f}), scrolled to {at['scrollY']:.0f}")
        elif at["hash"] != "#" + href:
            findings.append(f"TOC link {text!r}: location.hash is {at['hash']!r}, not #{href}")
    return len(links)


def _check_console(driver, findings: list[str], notes: list[str]) -> list[dict]:
    entries = driver.get_log("browser")
    for entry in entries:
        line = f"console {entry['level']}: {entry['message']}"
        (findings if entry["level"] == "SEVERE" else notes).append(line)
    return entries


def _check_requests(driver, findings: list[str]) -> list[str]:
    """Every URL the page asked for; those not ``file:``/``data:`` are findings, and so is each
    request the block stopped (Chromium logs no console error for those)."""
    urls, by_id = [], {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        method, params = message["method"], message.get("params", {})
        if method == "Network.requestWillBeSent":
            urls.append(params["request"]["url"])
            by_id[params["requestId"]] = params["request"]["url"]
        elif method == "Network.webSocketCreated":
            urls.append(params["url"])
            by_id[params["requestId"]] = params["url"]
        elif method == "Network.loadingFailed" and params.get("blockedReason"):
            url = by_id.get(params["requestId"], "?")
            findings.append(f"blocked ({params['blockedReason']}): {url[:120]}")
    for url in urls:
        if not url.startswith(("file:", "data:")):
            findings.append(f"request outside the file: {url[:120]}")
    return urls


def _screenshot(driver, width: int, path: Path) -> int:
    height = min(driver.execute_script("return document.documentElement.scrollHeight"), MAX_HEIGHT)
    driver.execute_script("window.scrollTo(0, 0)")
    _viewport(driver, width, height)
    # wait for the new viewport, then for a frame drawn at it
    _wait(lambda: driver.execute_script("return window.innerHeight") >= height - 1, timeout=3)
    driver.execute_async_script("requestAnimationFrame(() => requestAnimationFrame(arguments[0]))")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(path)):
        raise RuntimeError(f"the screenshot could not be written to {path}")
    return height


def check_report(html_path: str | Path, width: int, screenshot_path: str | Path, *,
                 allow_overflow: bool = False, strict: bool = True) -> dict:
    """Open ``html_path`` at ``width`` x 900 px in headless Chromium and check it (see the module).

    Returns ``{"width", "images", "lazy_images", "links", "requests", "external_requests",
    "console", "overflow_px", "screenshot", "screenshot_height", "findings", "notes"}``:
    ``findings`` maps each check (``images``, ``console``, ``requests``, ``links``,
    ``overflow``) to what it found wrong, ``notes`` lists what is worth knowing but not wrong
    (console warnings, links clicked by script). With ``strict`` (the default) any finding
    fails the test, except overflow when ``allow_overflow``.
    """
    html_path, screenshot_path = Path(html_path).resolve(), Path(screenshot_path)
    if not html_path.is_file():
        raise FileNotFoundError(html_path)
    findings = {k: [] for k in ("images", "console", "requests", "links", "overflow")}
    notes: list[str] = []
    driver = start_browser(width)
    try:
        driver.get(html_path.as_uri())
        _wait(lambda: driver.execute_script("return document.readyState") == "complete")
        inner = driver.execute_script("return window.innerWidth")
        if inner != width:
            notes.append(f"the viewport is {inner} px wide, not {width}")
        images = _check_images(driver, findings["images"])
        scroll_width = driver.execute_script("return document.documentElement.scrollWidth")
        if scroll_width > width + 1:
            widest = driver.execute_script(_OVERFLOWING, width)
            findings["overflow"].append(
                f"horizontal overflow at {width} px: the page is {scroll_width} px wide; "
                f"widest: {', '.join(widest) or '?'}")
        links = _check_links(driver, findings["links"], notes)
        height = _screenshot(driver, width, screenshot_path)
        console = _check_console(driver, findings["console"], notes)
        urls = _check_requests(driver, findings["requests"])
    finally:
        driver.quit()
    result = {
        "width": width, "images": images["images"], "lazy_images": images["lazy"],
        "links": links, "requests": len(urls),
        "external_requests": [u for u in urls if not u.startswith(("file:", "data:"))],
        "console": len(console), "overflow_px": max(0, scroll_width - width),
        "screenshot": screenshot_path, "screenshot_height": height,
        "findings": findings, "notes": notes,
    }
    if strict:
        wrong = [f"{kind}: {line}" for kind, lines in findings.items()
                 if not (kind == "overflow" and allow_overflow) for line in lines]
        assert not wrong, f"{html_path.name} at {width} px:\n" + "\n".join(wrong)
    return result
