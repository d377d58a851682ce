"""Open a report in headless Chromium (selenium + Debian's chromium and chromium-driver).

Used by the browser test and by `retain report PATH --screenshot FILE`. Nothing here
downloads a browser or a driver: it uses the ones installed on the machine
(`apt-get install chromium chromium-driver`; `pip install selenium`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from retain.errors import RetainError

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> tuple[str, str] | None:
    """Paths of a Chromium binary and its chromedriver, or None when either is missing."""
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    driver = shutil.which("chromedriver") or next((p for p in ("/usr/lib/chromium/chromedriver",) if Path(p).exists()), None)
    return (browser, driver) if browser and driver else None


def open_browser(width: int = 1400, height: int = 1000):
    """A headless Chromium WebDriver; the caller quits it."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        raise RetainError("Opening a report in a browser needs selenium: pip install selenium.") from e
    found = find_browser()
    if found is None:
        raise RetainError("No Chromium with chromedriver found: apt-get install chromium chromium-driver "
                          "(Debian/Ubuntu), then try again.")
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--hide-scrollbars"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=found[1]), options=options)


def screenshot(report: Path, out: Path, width: int = 1400, height: int = 1000) -> Path:
    """A PNG of the top of `report` as a browser shows it."""
    driver = open_browser(width, height)
    try:
        driver.get(Path(report).resolve().as_uri())
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(driver.get_screenshot_as_png())
    finally:
        driver.quit()
    return out
