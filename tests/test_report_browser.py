"""The report in headless Chromium: no console errors, every plot rendered, the sample browser works offline."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from imginav_lib.analysis import analyse
from imginav_lib.report.build import build_report
from imginav_lib.testing.synthetic import write_synthetic_phase

F1, F2 = "phase1_4_AE_F1_rgb_only", "phase1_4_AE_F2_rgb_seg"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()),
    reason="chromium/chromedriver not installed (make browser installs them with apt-get)",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A 3 x 2 phase with a failed run, a missing run, and a name, a note and an error that try to run script."""
    import json

    tmp = tmp_path_factory.mktemp("browser")
    evil = "<img src=x onerror=alert(1)>"  # experiment names cannot hold "/" (they are folders)
    note = "<script>alert(2)</script>"
    runs = write_synthetic_phase(  # names as long as the real ones: the tables must still fit 1,280 px
        tmp / "runs", phase="phase_browser", seeds=(1, 2), epochs=6,
        experiments={F1: {}, F2: {"seg": 0.05}, evil: {"seg": 0.05, "cls": 0.01}},
        states={(F2, 2): "failed", (F1, 2): "missing"}, notes={F1: note},
    )
    info = runs / F2 / "seed2" / "run.json"
    info.write_text(json.dumps({**json.loads(info.read_text()), "error": "</script><script>alert(3)</script>"}))
    out = build_report(runs, out=tmp / "report.html").report
    a = analyse(runs)
    from conftest import figures

    return out, len(figures(a)), [evil, note, "</script><script>alert(3)</script>"]


@pytest.fixture(scope="module")
def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--window-size=1400,1000"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield d
    d.quit()


def test_report_renders_without_console_errors(report, driver):
    from selenium.webdriver.common.by import By

    path, n_figures, evil = report
    driver.get(path.resolve().as_uri())
    deadline = time.time() + 30
    while time.time() < deadline and len(driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) < n_figures:
        time.sleep(0.2)
    severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe
    assert len(driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) == n_figures
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):  # the injected name did not run
        driver.switch_to.alert.text
    body = driver.find_element(By.TAG_NAME, "body").text
    assert "Winner:" in body and "How sure we are" in body
    for text in evil:  # the name, the note and the error show as text
        assert text in body
    assert "failed" in body and "missing" in body


def test_tables_fit_a_1280_px_page_and_the_effects_figure_is_there(report, driver):
    from selenium.webdriver.common.by import By

    path, _, _ = report
    driver.set_window_size(1280, 1000)
    try:
        driver.get(path.resolve().as_uri())
        width, page = driver.execute_script("return [document.documentElement.clientWidth, document.documentElement.scrollWidth]")
        tables = driver.execute_script(
            "return Array.from(document.querySelectorAll('table')).map(t => "
            "[t.scrollWidth, Math.ceil(t.getBoundingClientRect().right), t.rows[0].textContent.slice(0, 40)])")
        titles = [t.text for t in driver.find_elements(By.CSS_SELECTOR, ".gtitle")]
    finally:
        driver.set_window_size(1400, 1000)
    assert 1200 < width <= 1280 and len(tables) >= 8
    assert [t for t in tables if t[0] > width or t[1] > width] == [] and page <= width  # nor does the page scroll
    assert any(t.startswith("Effect on val MSE") for t in titles)


def test_sample_browser_epoch_slider_changes_image(report, driver):
    from selenium.webdriver.common.by import By

    path, _, _ = report
    driver.get(path.resolve().as_uri())
    root = driver.find_element(By.CSS_SELECTOR, ".imginav-browser")
    slider = root.find_element(By.CSS_SELECTOR, '[data-role="epoch"]')
    recon = root.find_element(By.CSS_SELECTOR, '[data-role="img-recon"]')
    label = root.find_element(By.CSS_SELECTOR, '[data-role="epoch-label"]')
    assert int(slider.get_attribute("max")) >= 1
    before, before_label = recon.get_attribute("src"), label.text
    assert before.startswith("data:image/")
    driver.execute_script("arguments[0].value = 0; arguments[0].dispatchEvent(new Event('input'));", slider)
    assert recon.get_attribute("src") != before
    assert label.text != before_label
    # Another experiment: the seed list and the image follow.
    select = root.find_element(By.CSS_SELECTOR, '[data-role="exp"]')
    driver.execute_script("arguments[0].value = 1; arguments[0].dispatchEvent(new Event('change'));", select)
    assert root.find_element(By.CSS_SELECTOR, '[data-role="img-seg"]').get_attribute("src").startswith("data:image/png")
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_side_by_side_epoch_slider_changes_every_row_and_worst_samples_come_first(report, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    path, _, _ = report
    driver.get(path.resolve().as_uri())
    root = driver.find_element(By.CSS_SELECTOR, ".imginav-compare")
    rows = root.find_elements(By.CSS_SELECTOR, "[data-row]")
    assert len(rows) == 3  # one per experiment with samples at the chosen seed
    slider = root.find_element(By.CSS_SELECTOR, '[data-role="epoch"]')

    def srcs():
        return [[r.find_element(By.CSS_SELECTOR, f'[data-role="img-{k}"]').get_attribute("src") for k in ("recon", "error", "seg")]
                for r in rows]  # fmt: skip

    before = srcs()
    shared = root.find_element(By.CSS_SELECTOR, '[data-role="img-input"]').get_attribute("src")
    assert all(s.startswith("data:image/") for row in before for s in row)
    driver.execute_script("arguments[0].value = 0; arguments[0].dispatchEvent(new Event('input'));", slider)
    after = srcs()
    for b, a_ in zip(before, after):  # every row follows the one slider (the recon of each experiment changes)
        assert a_[0] != b[0]
    assert root.find_element(By.CSS_SELECTOR, '[data-role="img-input"]').get_attribute("src") == shared

    Select(root.find_element(By.CSS_SELECTOR, '[data-role="order"]')).select_by_value("worst")
    options = [o.text for o in Select(root.find_element(By.CSS_SELECTOR, '[data-role="sample"]')).options]
    spreads = [float(t.split("MSE spread ")[1].rstrip(")")) for t in options]
    assert len(options) >= 2 and spreads == sorted(spreads, reverse=True)
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


@pytest.fixture(scope="module")
def report512(tmp_path_factory):
    """A 512 px phase, 2 experiments x 2 seeds, samples as a trained model's look."""
    tmp = tmp_path_factory.mktemp("browser512")
    runs = write_synthetic_phase(tmp / "runs", phase="phase_512", seeds=(1, 2), epochs=2, sample_interval=1, image_size=512,
                                 num_samples=2, experiments={"F1": {}, "F2_seg": {"seg": 0.05}}, lifelike_samples=True)  # fmt: skip
    return build_report(runs, out=tmp / "report.html").report


def _zoom_to_native(driver, root, role):
    """Click a panel; the overlay shows it at its native size, pixelated: (naturalWidth, shown width, rendering)."""
    from selenium.webdriver.common.by import By

    panel = root.find_element(By.CSS_SELECTOR, f'[data-role="{role}"]')
    panel.click()
    zoom = root.find_element(By.CSS_SELECTOR, '[data-role="zoom"]')
    img = zoom.find_element(By.CSS_SELECTOR, '[data-role="zoom-img"]')
    deadline = time.time() + 10
    while time.time() < deadline and not driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img):
        time.sleep(0.1)
    assert zoom.is_displayed() and img.get_attribute("src") == panel.get_attribute("src")
    natural = driver.execute_script("return arguments[0].naturalWidth", img)
    shown = driver.execute_script("return arguments[0].getBoundingClientRect().width", img)
    rendering = driver.execute_script("return getComputedStyle(arguments[0]).imageRendering", img)
    return zoom, natural, shown, rendering


def test_a_click_shows_native_pixels_with_legend_in_both_views(report512, driver):
    from selenium.webdriver.common.by import By

    driver.get(report512.resolve().as_uri())
    for view, role in ((".imginav-browser", "img-seg"), (".imginav-compare", "img-error")):
        root = driver.find_element(By.CSS_SELECTOR, view)
        assert root.find_element(By.CSS_SELECTOR, f'[data-role="{role}"]').size["width"] < 512  # the grid shrinks it
        zoom, natural, shown, rendering = _zoom_to_native(driver, root, role)
        assert natural == 512 and shown == pytest.approx(512, abs=1) and rendering == "pixelated"
        zoom.find_element(By.CSS_SELECTOR, '[data-zoom="2"]').click()
        assert driver.execute_script("return arguments[0].getBoundingClientRect().width",
                                     zoom.find_element(By.CSS_SELECTOR, "img")) == pytest.approx(1024, abs=1)
        assert "native 512\u00d7512 px" in zoom.text
        zoom.find_element(By.CSS_SELECTOR, '[data-zoom="close"]').click()
        assert not zoom.is_displayed()
        legend = root.find_element(By.CSS_SELECTOR, '[data-role="legend"]').text
        assert all(name in legend for name in ("bed", "wall", "background", "|error|", "255"))
    label = driver.find_element(By.CSS_SELECTOR, '.imginav-browser [data-role="sample-label"]').text
    assert label.startswith("sample 1 of 2 (layout 1), MSE ") and "e-0" in label
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_the_comparison_has_a_seed_selector(report512, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(report512.resolve().as_uri())
    root = driver.find_element(By.CSS_SELECTOR, ".imginav-compare")
    seed = Select(root.find_element(By.CSS_SELECTOR, '[data-role="seed"]'))
    assert [o.text for o in seed.options] == ["seed 1", "seed 2"]
    recon = root.find_element(By.CSS_SELECTOR, '[data-row="0"] [data-role="img-recon"]')
    before = recon.get_attribute("src")
    seed.select_by_visible_text("seed 2")
    assert recon.get_attribute("src") != before and recon.get_attribute("src").startswith("data:image/webp")
    assert root.find_element(By.CSS_SELECTOR, '[data-role="sample"] option').text.startswith("sample 1 of 2 (layout 1)")
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    """The demo's report: params/phase1_4_demo.yaml as it is, shrunk by --set (generated layouts, 32 px, 2 epochs,
    2 seeds), run and reported by `imginav run` as `make demo` does."""
    import shutil as sh

    from imginav_lib.cli import main
    from imginav_lib.demo.layouts import make_layouts

    from conftest import REPO

    tmp = tmp_path_factory.mktemp("demo")
    manifest = make_layouts(tmp / "data", n=40, size=32, seed=0)
    (tmp / "params").mkdir()
    sh.copy(REPO / "params" / "phase1_4_demo.yaml", tmp / "params" / "phase1_4_demo.yaml")
    small = [f"data.manifest={manifest}", "data.image_size=32", "data.num_samples=2", f"data.cache_dir={tmp / 'cache'}",
             f"runs_root={tmp / 'runs'}", "training.epochs=2", "training.sample_interval=1", "seeds=[42,43]"]  # fmt: skip
    assert main(["run", str(tmp / "params" / "phase1_4_demo.yaml"), "--jobs", "2", *[a for s in small for a in ("--set", s)]]) == 0
    return tmp / "runs" / "phase1_4_demo" / "report.html"


def test_the_demo_reports_verdict_opens_with_the_answer_and_the_effects_figure(demo_report, driver):
    from selenium.webdriver.common.by import By

    from imginav_lib.analysis import analyse

    v = analyse(demo_report.parent).verdict
    driver.get(demo_report.resolve().as_uri())
    verdict = driver.find_element(By.CSS_SELECTOR, ".verdict")
    first = verdict.find_element(By.XPATH, "./*[1]").text
    assert first == v.headline and first.startswith(f"Winner: {v.winner} ({v.status})")
    assert "% vs phase1_4_AE_F1_rgb_only" in first or "No winner" in first
    assert first.count(". ") == 0 and first.endswith(".")  # one sentence
    lines = verdict.find_elements(By.CSS_SELECTOR, "ul > li")
    assert 1 <= len(lines) <= 3 and [x.text for x in lines] == v.lines
    # The first figure of the page, right after the verdict and before the criteria, is the effects figure.
    deadline = time.time() + 30
    while time.time() < deadline and not driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .gtitle"):
        time.sleep(0.2)
    first_plot = driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")[0]
    assert first_plot.find_element(By.CSS_SELECTOR, ".gtitle").text.startswith("Effect on")
    criteria = driver.find_element(By.XPATH, "//h2[starts-with(normalize-space(.), 'Decision criteria')]")
    assert verdict.location["y"] < first_plot.location["y"] < criteria.location["y"]
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
