"""A real browser (Debian's chromium, driven by playwright) uses the page like a person would,
on a desktop (1440x1000) and a phone (390x844). Screenshots go to the git-ignored artifacts/."""
import os
import re
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CLIPURE_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent.parent / "artifacts"   # git-ignored
DESKTOP, PHONE = {"width": 1440, "height": 1000}, {"width": 390, "height": 844}

pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).exists() or shutil.which("chromium")),
                                reason=f"no chromium at {CHROMIUM}; install Debian's chromium package to run this")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield b
        b.close()


def open_page(browser, server, viewport=DESKTOP):
    page = browser.new_page(viewport=viewport, is_mobile=viewport is PHONE, has_touch=viewport is PHONE)
    page.goto(server, wait_until="domcontentloaded")
    page.locator("#run").wait_for(timeout=60_000)
    return page


def expect():
    return pytest.importorskip("playwright.sync_api").expect


def shot(page, name):
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / name))


def in_viewport(page, selector) -> bool:
    box, view = page.locator(selector).bounding_box(), page.viewport_size
    return box is not None and box["y"] >= -2 and box["y"] + min(box["height"], 120) <= view["height"] \
        and box["x"] >= 0 and box["x"] + box["width"] <= view["width"] + 1


def upload_and_run(page):
    from app.views.presets import EXAMPLES_DIR
    page.locator("#input-image input[type=file]").set_input_files(str(EXAMPLES_DIR / "cat.png"))
    page.locator("#input-image img").first.wait_for(timeout=20_000)
    page.locator("#classnames textarea").fill("cat, dog, car, plane")
    page.locator("#run").click()
    expect()(page.locator("#status")).to_contain_text("Done in", timeout=90_000)


# The phone view is `slow` (about 10 s); the desktop one is the default run's.
@pytest.mark.parametrize("viewport", [DESKTOP, pytest.param(PHONE, marks=pytest.mark.slow)], ids=["desktop", "phone"])
def test_after_run_the_predictions_and_status_are_in_view(browser, server, viewport):
    page = open_page(browser, server, viewport)
    assert "CLIPure" in page.title()
    upload_and_run(page)
    for panel in ("#clean-panel", "#adv-panel", "#purified-panel"):
        expect()(page.locator(panel)).to_contain_text(re.compile(r"\b(cat|dog|car|plane)\b"), timeout=30_000)
    page.wait_for_timeout(300)
    for sel in ("#status", "#clean-panel", "#adv-panel", "#purified-panel"):
        assert in_viewport(page, sel), (sel, page.locator(sel).bounding_box())
    assert "meaningless" in page.locator("#status").inner_text().lower()      # tiny-random is labelled
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"] + 1   # no sideways scroll
    shot(page, f"browser-run-{viewport['width']}.png")
    if viewport is DESKTOP:
        for note in ("#adv-note", "#purified-note"):
            assert re.search(r"Attack on .* (succeeded|failed)", page.locator(note).inner_text())
        stats = page.locator("#stats").inner_text()
        assert "L-inf" in stats and "PSNR" in stats and "threat model: undefended" in stats
        assert page.locator("#prob-plot img").get_attribute("alt").startswith("Line chart")
        # The replay slider is filled at the end of the run and moves with the arrow keys.
        expect()(page.locator("#replay-note")).to_contain_text("Step 10/10")
        slider = page.locator("#replay input[type=range]")
        slider.focus()
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("ArrowLeft")
        expect()(page.locator("#replay-note")).to_contain_text("Step 8/10", timeout=30_000)
        shot(page, "browser-replay.png")
        # The other plots are drawn when their tab opens (only the plot in view costs a request).
        page.get_by_role("tab", name="Map").click()
        expect()(page.locator("#map-plot img")).to_be_visible(timeout=30_000)
        assert page.locator("#map-plot img").get_attribute("alt")
    else:
        # The block label sits above each big prediction, not over it.
        for panel in ("#clean-panel", "#adv-panel", "#purified-panel"):
            label = page.locator(f"{panel} [data-testid=block-label]").bounding_box()
            answer = page.locator(f"{panel} [data-testid=label-output-value]").bounding_box()
            assert label["y"] + label["height"] <= answer["y"] + 1, (panel, label, answer)
        # The step plots are drawn for the phone: stacked and tall enough to read, not a 110 px strip.
        page.get_by_role("tab", name="Cosine").click()
        cos = page.locator("#cos-plot img")
        expect()(cos).to_be_visible(timeout=30_000)
        cos.scroll_into_view_if_needed()
        box = cos.bounding_box()
        assert box["height"] >= 250 and box["width"] <= viewport["width"], box
        labels = page.locator("#cos-plot [data-testid=block-label]").all()
        assert not any(label.is_visible() for label in labels)   # nothing covers the figure's caption
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"] + 1
        shot(page, "browser-phone-cosine.png")
        page.get_by_role("tab", name="Probabilities").click()
        assert page.locator("#prob-plot img").bounding_box()["height"] >= 250
    page.close()


def test_a_text_file_named_png_gets_one_sentence(browser, server, tmp_path):
    page = open_page(browser, server)
    fake = tmp_path / "holiday.png"
    fake.write_text("this is a text file, not a picture")
    page.locator("#input-image input[type=file]").set_input_files(str(fake))
    expect()(page.locator("#status")).to_contain_text("Not used:", timeout=30_000)
    text = page.locator("#status").inner_text()
    assert len(re.findall(r"[.;]\s", text + " ")) <= 2, text       # one sentence
    assert page.get_by_text("Error", exact=True).count() == 0
    shot(page, "browser-not-an-image.png")
    page.close()


def test_eps_50_is_refused_in_one_sentence_and_nothing_runs(browser, server):
    page = open_page(browser, server)
    before = page.locator("#status").inner_text()
    upload = page.locator("#input-image input[type=file]")
    from app.views.presets import EXAMPLES_DIR
    upload.set_input_files(str(EXAMPLES_DIR / "cat.png"))
    page.locator("#input-image img").first.wait_for(timeout=20_000)
    page.locator("#eps input").fill("50")
    page.locator("#eps input").press("Tab")
    assert page.locator("#eps input").input_value() == "50"          # what was typed stays: no clamping
    page.locator("#run").click()
    toast = page.get_by_text(re.compile(r"L-inf eps must be between 0 and 32"))
    toast.first.wait_for(timeout=30_000)
    page.wait_for_timeout(500)
    status = page.locator("#status").inner_text()
    assert "Done" not in status and "%" not in status, status          # the run did not start
    assert page.locator("#clean-panel").inner_text().count("%") == 0
    shot(page, "browser-eps-50.png")
    page.close()
    assert before


def visible_share(page, selector) -> float:
    """The share of an element's height inside the viewport (0 when it is not shown)."""
    box, view = page.locator(selector).bounding_box(), page.viewport_size
    if box is None or box["height"] == 0:
        return 0.0
    return max(0.0, min(box["y"] + box["height"], view["height"]) - max(box["y"], 0)) / box["height"]


# (lesson, its proof's element, what its result says, what its text says)
LESSON_VIEWS = [(1, "#lesson-images", "Attack on bare CLIP succeeded", "4/255"),
                (2, "#lesson-plot", "88.1°", "atan(η) = 88.1°"),
                (3, "#lesson-table", "exactly zero: 100%", "random start"),
                (4, "#lesson-table", "TTC fooled", "test-time counterattacks"),
                (5, "#lesson-table", "JPEG fooled", "JPEG compression at quality 75")]
# 12-18 s each: the default run keeps lesson 1 on the desktop; the other nine views are `slow`.
LESSON_PARAMS = [pytest.param(viewport, *view, id=f"lesson-{view[0]}-{name}",
                              marks=() if (view[0], name) == (1, "desktop") else pytest.mark.slow)
                 for view in LESSON_VIEWS for viewport, name in ((DESKTOP, "desktop"), (PHONE, "phone"))]


@pytest.mark.parametrize("viewport, lesson, proof, result, text", LESSON_PARAMS)
def test_each_lesson_shows_its_text_result_and_proof_together(browser, server, viewport, lesson, proof, result,
                                                             text):
    """After a lesson's click, its text, its result and the one view that proves it are on screen
    together, at a projector's 1440x1000 and a phone's 390x844."""
    page = open_page(browser, server, viewport)
    if lesson == 3:   # lesson 3 clears what ran before it: run something first
        page.locator("#lesson-1").click()
        expect()(page.locator("#lesson-result")).to_contain_text("Attack on bare CLIP", timeout=120_000)
    page.locator(f"#lesson-{lesson}").click()
    expect()(page.locator("#lesson-text")).to_contain_text(text, timeout=30_000)
    expect()(page.locator("#lesson-result")).to_contain_text(result, timeout=180_000)
    expect()(page.locator("#lesson-files")).to_be_visible(timeout=30_000)   # its outputs, downloadable
    page.wait_for_timeout(800)
    assert visible_share(page, "#lesson-text") == 1.0, page.locator("#lesson-text").bounding_box()
    assert visible_share(page, "#lesson-result") > 0.5, page.locator("#lesson-result").bounding_box()
    assert visible_share(page, proof) >= (0.6 if viewport is DESKTOP else 0.3), page.locator(proof).bounding_box()
    if lesson == 3:   # the earlier run's answers are gone: no contradiction beside the table
        assert page.locator("#status").inner_text().strip() == ""
        assert page.locator("#clean-panel").inner_text().count("%") == 0
    shot(page, f"browser-lesson-{lesson}-{viewport['width']}.png")
    page.close()


def test_bad_input_shows_an_error_and_the_page_keeps_working(browser, server):
    page = open_page(browser, server)
    page.locator("#classnames textarea").fill("cat")
    page.locator("#run").click()
    status = page.locator("#status")
    expect()(status).to_contain_text("No image was given", timeout=30_000)   # the status line owns the refusal
    text = status.inner_text().removeprefix("Not run:").split("Anything shown below")[0].strip()
    assert "upload an image" in text and len(re.findall(r"[.;]\s", text + " ")) <= 2, text   # one sentence, a fix
    assert "Done" not in status.inner_text()                                  # nothing ran
    assert page.locator("#clean-panel").inner_text().count("%") == 0
    assert page.locator("#classnames textarea").input_value() == "cat"      # what was typed stays
    shot(page, "browser-error.png")
    upload_and_run(page)                                                     # ... and the page still runs
    expect()(page.locator("#clean-panel")).to_contain_text(re.compile(r"\b(cat|dog|car|plane)\b"), timeout=30_000)
    page.close()


def test_the_audit_button_shows_its_checks_table_in_view(browser, server):
    from app.views.presets import EXAMPLES_DIR
    page = open_page(browser, server)
    page.locator("#input-image input[type=file]").set_input_files(str(EXAMPLES_DIR / "cat.png"))
    page.locator("#input-image img").first.wait_for(timeout=20_000)
    page.locator("#classnames textarea").fill("cat, dog, car, plane")
    page.locator("#steps input").fill("2")
    pick(page, "#threat-model", "official")       # fp16 official: check (a) flags the zero gradient
    pick(page, "#precision", "fp16")
    page.locator("#audit").click()
    expect()(page.locator("#audit-status")).to_contain_text("Audit done in", timeout=60_000)
    table = page.locator("#audit-table")
    expect()(table).to_contain_text("(f)")
    assert table.get_by_text("FLAGGED").count() + table.get_by_text("ok", exact=True).count() >= 6
    assert in_viewport(page, "#audit-panel")
    # the page's full width (not a column beside the form), and FLAGGED in red where a check flags
    panel, full = page.locator("#audit-panel").bounding_box(), page.locator("#lesson-row").bounding_box()
    assert panel["width"] >= 0.98 * full["width"], (panel, full)
    flagged = table.locator(".flagged").all()
    assert flagged and all(f.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(198, 40, 40)"
                           for f in flagged)
    expect()(page.locator("#audit-json")).to_be_visible()      # the audit as JSON, one click away
    shot(page, "audit-desktop.png")


def pick(page, selector, option):
    """Choose `option` in the dropdown `selector`, as a person does: open it, click the option."""
    field = page.locator(f"{selector} input").first
    field.scroll_into_view_if_needed()
    field.click()
    page.locator("[role=option]", has_text=option).first.click()


# About 25 s (three runs); its fast ones: eps 50's refusal above, and the EOT refusals in
# tests/test_callbacks.py.
@pytest.mark.slow
def test_the_eot_count_resets_when_it_hides_and_a_bad_one_gets_the_engines_sentence(browser, server):
    page = open_page(browser, server)
    page.get_by_text("More settings:").first.click()
    pick(page, "#backbone", "toy-shapes")
    expect()(page.locator("#backbone-note")).to_contain_text("toy-shapes", timeout=60_000)
    page.locator("#examples img").first.click()
    expect()(page.locator("#input-image img").first).to_be_visible(timeout=20_000)
    pick(page, "#defence", "CLIPure-Diff")
    eot = page.locator("#eot input")
    expect()(eot).to_be_visible(timeout=30_000)
    expect()(page.locator("#defence-note")).to_contain_text("AutoAttack-custom")

    # A fractional K is refused in the engine's sentence, not rounded to 2; nothing runs, nothing is marked.
    eot.fill("2.5")
    eot.press("Tab")
    page.locator("#run").click()
    page.get_by_text(re.compile(r"EOT count .* must be a whole number, got 2\.5")).first.wait_for(timeout=30_000)
    page.wait_for_timeout(500)
    assert eot.input_value() == "2.5"
    assert "Done" not in page.locator("#status").inner_text()
    assert page.locator("#clean-panel").inner_text().count("%") == 0
    assert page.locator("[data-testid=status-tracker]:not(.hide) .error").count() == 0   # no red "Error" badges
    shot(page, "browser-eot-fraction.png")
    eot.fill("0")
    eot.press("Tab")
    page.locator("#run").click()
    page.get_by_text(re.compile(r"EOT count .* must be between 1 and 32, got 0")).first.wait_for(timeout=30_000)

    # K = 8, then a deterministic method: the field hides and goes back to 1, so Run runs.
    eot.fill("8")
    eot.press("Tab")
    pick(page, "#defence", "CLIPure-Cos")
    expect()(eot).to_be_hidden(timeout=30_000)
    page.locator("#run").click()
    expect()(page.locator("#status")).to_contain_text("Done in", timeout=120_000)
    pick(page, "#defence", "CLIPure-Diff")
    expect()(eot).to_have_value("1", timeout=30_000)

    # The same through a backbone without a prior: the method falls back to CLIPure-Cos, K to 1.
    eot.fill("8")
    eot.press("Tab")
    pick(page, "#backbone", "tiny-random")
    expect()(page.locator("#backbone-note")).to_contain_text("tiny-random", timeout=60_000)
    expect()(eot).to_be_hidden(timeout=30_000)
    page.locator("#run").click()
    expect()(page.locator("#status")).to_contain_text(re.compile(r"Done in [0-9.]+ s.*MEANINGLESS"), timeout=120_000)
    assert page.get_by_text(re.compile("EOT count must be 1 here")).count() == 0   # never refused for K = 8
    page.close()
