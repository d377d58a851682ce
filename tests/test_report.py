"""Reports as a user sees them: a tiny run's pages opened in headless Chromium.

Debian's chromium and chromium-driver are installed here when missing and the tests run
as root (CI does); elsewhere the browser test is skipped unless RETAIN_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from test_cli import results, retain, tiny_config

from retain.report.browser import find_browser

SECTIONS = ["metrics", "accuracy-matrix", "task-curves", "concept-forgetting", "config"]


def _install_chromium() -> str | None:
    """Install chromium and chromium-driver with apt; None on success, else why not."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "chromium/chromedriver missing and not root: apt-get install chromium chromium-driver"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode:
            return f"{' '.join(cmd)} failed: {proc.stderr[-500:]}"
    return None


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("selenium")
    if find_browser() is None:
        why = _install_chromium()
        if why and os.environ.get("RETAIN_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        if why:
            pytest.skip(why)
    from retain.report.browser import open_browser

    driver = open_browser()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, tiny_clip_dir):
    tmp = tmp_path_factory.mktemp("report")
    retain("run", tiny_config(tmp, tiny_clip_dir, methods=["finetune", "ldifs"]))
    return tmp


def _not_blank(png: bytes) -> tuple[float, int]:
    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(float)
    return float(a.std()), len(np.unique(a.reshape(-1, 3), axis=0))


def _check_page(driver, path, sections):
    from selenium.webdriver.common.by import By

    driver.get(path.resolve().as_uri())
    for sid in sections:
        el = driver.find_element(By.ID, sid)
        driver.execute_script("arguments[0].scrollIntoView();", el)
        assert el.is_displayed(), f"section {sid} of {path.name} is not visible"
        assert el.size["height"] > 40, f"section {sid} of {path.name} is empty"
    # every figure decoded to a real image, and nothing is fetched from elsewhere
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.src.slice(0, 22)]);")
    assert images and all(ok and w > 50 and src == "data:image/png;base64," for ok, w, src in images)
    external = driver.execute_script(
        "return Array.from(document.querySelectorAll('[src],[href]')).map(e => e.getAttribute('src') || "
        "e.getAttribute('href')).filter(u => !u.startsWith('data:') && !u.startsWith('#'));")
    assert external == []
    driver.execute_script("window.scrollTo(0, 0);")
    std, colours = _not_blank(driver.get_screenshot_as_png())
    assert std > 20 and colours > 50, f"the screenshot of {path.name} looks blank (std {std:.1f}, {colours} colours)"
    return driver


def test_run_report_in_a_browser(browser, tiny_runs):
    from selenium.webdriver.common.by import By

    run = tiny_runs / "runs" / "tiny" / "ldifs"
    _check_page(browser, run / "report.html", SECTIONS)
    res = results(tiny_runs, "ldifs")
    # the metric table shows the run's numbers, the heatmap is the accuracy matrix's figure
    cells = [td.text for td in browser.find_element(By.ID, "metrics").find_elements(By.TAG_NAME, "td")]
    iv = res["intervals"]["metrics"]
    for cell, key in ((cells[0], "MFT"), (cells[3], "BWT")):  # each score with its 95% interval
        assert cell == f"{100 * res['metrics'][key]:.1f} [{100 * iv[key][0]:.1f}, {100 * iv[key][1]:.1f}]"
    assert "bootstrap over test items" in browser.find_element(By.ID, "metrics").text
    cf = browser.find_element(By.ID, "concept-forgetting").text
    delta = res["concept_forgetting"]["zero_shot"]["delta"]["animal-mnist"]
    low, high = res["intervals"]["concept_forgetting"]["zero_shot"]["delta"]["animal-mnist"]
    assert "animal-mnist" in cf and f"{100 * delta:.1f} [{100 * low:.1f}, {100 * high:.1f}]" in cf
    assert "ECE" in cf
    config = browser.find_element(By.ID, "config").text
    assert "torch" in config and "seed" in config
    nav = [a.get_attribute("href").split("#")[1] for a in browser.find_elements(By.CSS_SELECTOR, "nav a")]
    assert nav == SECTIONS


def test_comparison_report_in_a_browser(browser, tiny_runs):
    from selenium.webdriver.common.by import By

    _check_page(browser, tiny_runs / "runs" / "tiny" / "comparison.html",
                ["metrics", "paired", "trade-off", "accuracy-matrix", "task-curves", "concept-forgetting", "config"])
    rows = browser.find_element(By.ID, "metrics").find_elements(By.CSS_SELECTOR, "tbody tr")
    assert [r.find_element(By.TAG_NAME, "td").text for r in rows] == ["finetune", "ldifs"]
    res = results(tiny_runs, "ldifs")
    mft = rows[1].find_elements(By.TAG_NAME, "td")[1].text  # the score and its interval, as results.json has them
    low, high = res["intervals"]["metrics"]["MFT"]
    assert mft == f"{100 * res['metrics']['MFT']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"
    # the paired table: ldifs minus finetune with its interval; the trade-off plot rendered as an image
    paired = browser.find_element(By.ID, "paired").find_elements(By.CSS_SELECTOR, "tbody tr")
    assert [r.find_element(By.TAG_NAME, "td").text for r in paired] == ["ldifs"]
    assert "[" in paired[0].find_elements(By.TAG_NAME, "td")[1].text
    plot = browser.find_element(By.ID, "trade-off").find_elements(By.TAG_NAME, "img")
    assert len(plot) == 1 and plot[0].get_property("naturalWidth") > 300
    browser.execute_script("arguments[0].scrollIntoView();", plot[0])
    assert plot[0].is_displayed() and plot[0].size["width"] > 300
    assert len(browser.find_element(By.ID, "accuracy-matrix").find_elements(By.TAG_NAME, "img")) == 2


def test_screenshot_command(browser, tiny_runs, tmp_path):
    out = tmp_path / "shot.png"
    retain("report", tiny_runs / "runs" / "tiny" / "finetune", "--screenshot", out)
    std, colours = _not_blank(out.read_bytes())
    assert std > 20 and colours > 50


def test_run_report_sections_and_figures_without_a_browser(tiny_runs):
    run = tiny_runs / "runs" / "tiny" / "finetune"
    html = (run / "report.html").read_text()
    for sid in SECTIONS:
        assert f"<section id='{sid}'>" in html
    # heatmap, task curves, probe curves, concept-forgetting bars; each also saved as a file
    assert html.count("data:image/png;base64") == 4
    assert sorted(p.name for p in (run / "figures").iterdir()) == [
        "accuracy_matrix.png", "concept_forgetting.png", "probe_curves.png", "task_curves.png"]
    assert "http://" not in html and "https://" not in html
    res = json.loads((run / "results.json").read_text())
    assert f"{100 * res['metrics']['MFN']:.1f} [" in html
    comparison = (tiny_runs / "runs" / "tiny" / "comparison.html").read_text()
    for sid in ("metrics", "paired", "trade-off"):
        assert f"<section id='{sid}'>" in comparison
    assert "Paired differences against finetune" in (tiny_runs / "runs" / "tiny" / "comparison.md").read_text()


def test_mllm_run_report_shows_its_failure_images(browser, tmp_path, tiny_llava_dir):
    from selenium.webdriver.common.by import By
    from test_train_mllm import mllm_config

    retain("run", mllm_config(tmp_path, tiny_llava_dir, methods=["lora_ft"], train={"epochs": 1}))
    run = tmp_path / "runs" / "tiny" / "lora_ft"
    _check_page(browser, run / "report.html", [*SECTIONS, "evaluation-points", "emt-failures"])
    res = results(tmp_path, "lora_ft")
    counts = res["evaluation"]["curve"][-1]["counts"]
    wrong = {d: sum(v for k, v in c.items() if k != "correct") for d, c in counts.items()}
    gallery = browser.find_element(By.ID, "emt-failures")
    examples = gallery.find_elements(By.CSS_SELECTOR, "figure.example")
    assert len(examples) == sum(min(n, 8) for n in wrong.values()) > 0
    browser.execute_script("arguments[0].scrollIntoView();", examples[0])
    image = examples[0].find_element(By.TAG_NAME, "img")
    assert examples[0].is_displayed() and image.get_property("naturalWidth") == 96 and image.size["width"] >= 96
    assert "label: " in examples[0].text and "answer: " in examples[0].text
