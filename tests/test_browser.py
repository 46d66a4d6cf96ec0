"""A real browser (Debian's chromium, driven by playwright) uses the page like a person would."""
import os
import re
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CLIPURE_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent.parent / "artifacts"   # git-ignored

pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).exists() or shutil.which("chromium")),
                                reason=f"no chromium at {CHROMIUM}; install Debian's chromium package to run this")


@pytest.fixture(scope="module")
def page():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1800})
        yield pg
        browser.close()


def test_upload_run_and_see_the_panels_and_plots(server, page):
    from app.presets import EXAMPLES_DIR
    page.goto(server, wait_until="domcontentloaded")
    page.locator("#run").wait_for(timeout=60_000)
    assert "CLIPure" in page.title()
    assert page.get_by_text("meaningless").first.is_visible()          # tiny-random is labelled
    page.locator("#input-image input[type=file]").set_input_files(str(EXAMPLES_DIR / "cat.png"))
    page.locator("#input-image img").first.wait_for(timeout=20_000)
    box = page.locator("#classnames textarea")
    box.fill("cat, dog, car, plane")
    page.locator("#run").click()
    expect = pytest.importorskip("playwright.sync_api").expect
    expect(page.locator("#status")).to_contain_text("Done in", timeout=90_000)
    for panel, title in (("#clean-panel", "Clean: bare CLIP"), ("#adv-panel", "Adversarial: bare CLIP"),
                         ("#purified-panel", "after CLIPure")):
        expect(page.locator(panel)).to_contain_text(re.compile(r"\b(cat|dog|car|plane)\b"), timeout=30_000)
        text = page.locator(panel).inner_text()
        assert title in text and "%" in text, text            # top-k bars with percentages
    stats = page.locator("#stats").inner_text()
    assert "L-inf" in stats and "PSNR" in stats and "threat model: undefended" in stats
    notes = page.get_by_text(re.compile("(agrees with|differs from) the clean prediction"))
    assert notes.count() == 3
    plot = page.locator("#prob-plot img")
    plot.wait_for(timeout=20_000)
    assert plot.bounding_box()["width"] > 200
    # Replay: step 1 of the 10 purification steps.
    page.locator("#replay input[type=range]").fill("1")
    page.locator("#replay input[type=range]").dispatch_event("pointerup")
    expect(page.locator("#replay-note")).to_contain_text("Step 1/10", timeout=30_000)
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "browser-run.png"), full_page=True)


def test_bad_input_shows_an_error_and_the_page_keeps_working(server, page):
    page.goto(server, wait_until="domcontentloaded")
    page.locator("#run").wait_for(timeout=60_000)
    page.locator("#classnames textarea").fill("cat")
    page.locator("#run").click()
    page.get_by_text("No image was given").first.wait_for(timeout=30_000)
    page.screenshot(path=str(SHOTS / "browser-error.png"))
