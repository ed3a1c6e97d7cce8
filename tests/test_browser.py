"""The page in a real headless Chromium: write, stop, rate, see it in History, export it.

Screenshots of each step go to test-artifacts/screenshots/ (see README).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from studio.config import Settings
from studio.ui.page import exports_dir
from tests.drafts import dirge, seed_rated_drafts

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]

if os.environ.get("CI"):
    from playwright import sync_api as playwright_api  # CI installs both: a missing browser fails there
else:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (CI installs it)", allow_module_level=True)

# The tiny model streams slower on a busy machine: how long text takes is not what these tests check.
playwright_api.expect.set_options(timeout=20_000)


pytestmark = pytest.mark.e2e


@pytest.fixture
def settings(request, tmp_path, slower_model_dir, tiny_model_dir):
    # Streams here must last long enough for a click on Stop, as they do for a writer. A page that
    # trains gets the tiny model instead: the slower one took a minute a run.
    model = tiny_model_dir if request.node.get_closest_marker("trains") else slower_model_dir
    return Settings(model=str(model), data_dir=str(tmp_path / "data"))


@pytest.fixture
def page(running_app, request):
    studio, url = running_app
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        tab.set_default_timeout(20_000)
        tab.goto(url)
        tab.studio = studio
        try:
            yield tab
        finally:
            failed = getattr(request.node, "report_call", None)
            if failed is not None and failed.failed and not tab.is_closed():
                _shot(tab, f"FAILED-{request.node.name}")  # what the page showed when it failed
            browser.close()


def _shot(tab, name: str) -> None:
    tab.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _set_max_tokens(tab, n: int) -> None:
    tab.get_by_text("Sampler settings").click()
    box = tab.get_by_label("number input for Max new tokens")
    # The accordion mounts its sliders as it opens; a value typed in that instant can be reset by
    # the mount (faster than any person types), so type again until it holds.
    for attempt in range(4):
        box.fill(str(n))
        box.press("Enter")
        try:
            playwright_api.expect(box).to_have_value(str(n), timeout=1500)
            break
        except AssertionError:
            if attempt == 3:
                raise
    tab.get_by_text("Sampler settings").click()  # fold it again


def test_a_writer_drafts_stops_rates_and_finds_the_draft_in_history(page):
    tab, studio = page, page.studio
    expect = playwright_api.expect
    expect(tab.get_by_label("Premise")).to_have_value(re.compile("cartographer"))
    _shot(tab, "01-write-tab")

    # A required field left empty gets a readable error, and nothing is written.
    tab.get_by_label("Premise").fill("")
    tab.get_by_role("button", name="Write draft").click()
    expect(tab.get_by_text("“Premise” is required: please fill it in.")).to_be_visible()
    _shot(tab, "02-missing-field-error")
    assert studio.drafts.list(user="local") == []

    tab.get_by_label("Premise").fill("A lighthouse keeper finds a door in the sea.")
    _set_max_tokens(tab, 1600)
    tab.get_by_role("button", name="Write draft").click()
    expect(tab.get_by_text("Writing…")).to_be_visible()
    expect(tab.locator("#draft textarea")).not_to_have_value("")
    _shot(tab, "03-streaming")
    tab.get_by_role("button", name="Stop").click()
    expect(tab.get_by_text(re.compile(r"Draft 1 saved — stopped: \d+ words, \d+ tokens"))).to_be_visible()
    _shot(tab, "04-stopped")
    record = studio.drafts.get(1, user="local")
    assert record["stopped"] and record["new_tokens"] < 1600
    assert record["fields"]["premise"] == "A lighthouse keeper finds a door in the sea."

    tab.get_by_label("★★★★", exact=True).first.check()
    tab.get_by_role("button", name="Save rating").first.click()
    expect(tab.get_by_text("Draft 1 rated ★★★★.").first).to_be_visible()
    assert studio.drafts.get(1, user="local")["stars"] == 4

    tab.get_by_role("tab", name="History").click()
    expect(tab.get_by_role("gridcell", name="Fantasy tale")).to_be_visible()
    tab.get_by_role("gridcell", name="Fantasy tale").click()
    expect(tab.get_by_role("heading", name="Fantasy tale — draft 1")).to_be_visible()
    _shot(tab, "05-history-open-draft")
    tab.get_by_role("button", name="Export as Markdown").click()
    expect(tab.locator("#export-file").get_by_role("cell", name="draft-1.md")).to_be_visible()
    exported = exports_dir(studio) / "draft-1.md"
    # Bytes, not read_text: the tiny model's random text may hold a "\r" that newline translation alters.
    assert record["text"].strip()[:20] in exported.read_bytes().decode("utf-8")
    _shot(tab, "06-history-exported")


# Whether each distinct character of the element's text draws differently in the element's font.
DISTINCT_GLYPHS = """element => {
    const font = "32px " + getComputedStyle(element).fontFamily;
    const draw = character => {
        const canvas = document.createElement("canvas");
        canvas.width = canvas.height = 48;
        const context = canvas.getContext("2d");
        context.font = font;
        context.fillText(character, 4, 36);
        return canvas.toDataURL();
    };
    const characters = [...new Set(element.textContent.trim())];
    return new Set(characters.map(draw)).size === characters.length;
}"""


def test_switching_templates_shows_that_templates_fields(page):
    tab = page
    expect = playwright_api.expect
    tab.get_by_label("Genre template").click()
    tab.get_by_role("option", name="中文诗歌").click()
    expect(tab.get_by_label("主题")).to_have_value("江南春雨")
    expect(tab.get_by_label("Premise")).to_have_count(0)
    # Without a CJK font every character draws as the same empty box: each must draw its own glyph.
    assert tab.get_by_text("主题", exact=True).first.evaluate(DISTINCT_GLYPHS)
    _shot(tab, "07-chinese-template")


def test_closing_the_tab_stops_its_generation_and_keeps_the_draft(page):
    tab, studio = page, page.studio
    _set_max_tokens(tab, 1600)
    tab.get_by_role("button", name="Write draft").click()
    playwright_api.expect(tab.locator("#draft textarea")).not_to_have_value("")
    tab.close()
    deadline = time.monotonic() + 15
    while studio.drafts.active and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(studio.drafts.active) == 0
    drafts = studio.drafts.list(user="local")
    assert len(drafts) == 1 and drafts[0].stopped and drafts[0].new_tokens < 1600


# The words of these elements that the browser broke across two lines (a word in one line has one box).
BROKEN_WORDS = """cells => cells.flatMap(cell => {
    const broken = [], walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        for (const word of node.data.matchAll(/\\S+/g)) {
            const range = document.createRange();
            range.setStart(node, word.index);
            range.setEnd(node, word.index + word[0].length);
            const lines = new Set([...range.getClientRects()].map(box => Math.round(box.top)));
            if (lines.size > 1) broken.push(word[0]);
        }
    }
    return broken;
})"""


@pytest.mark.trains
def test_train_now_shows_the_run_its_loss_curve_and_the_new_version(page):
    tab, studio = page, page.studio
    expect = playwright_api.expect
    seed_rated_drafts(studio, 8)
    tab.get_by_role("tab", name="Training").click()
    expect(tab.get_by_text("Serving base")).to_be_visible()
    expect(tab.get_by_text("No fine-tune yet")).to_be_visible()  # a note, not an empty chart
    expect(tab.get_by_text("Infinity")).to_have_count(0)
    tab.get_by_role("button", name="Train now").click()
    expect(tab.get_by_text("Training run 1 queued.")).to_be_visible()
    # The run trains in a child process; the tab follows it without a reload.
    expect(tab.get_by_role("gridcell", name="succeeded")).to_be_visible(timeout=300_000)
    expect(tab.get_by_role("gridcell", name="v1", exact=True)).to_be_visible()
    expect(tab.get_by_role("gridcell", name=re.compile(r"→ .*\(undecided\)"))).to_be_visible()  # liked drafts alone
    expect(tab.get_by_text("No fine-tune yet")).to_be_hidden()  # the loss curve took its place
    # Every word of the Versions table's headers stays on one line (at 1280 px they broke: "Versio/n").
    broken = tab.locator("#versions-table th").evaluate_all(BROKEN_WORDS)
    assert broken == [], broken
    _shot(tab, "08-training-tab")
    assert studio.versions.runs()[0]["status"] == "succeeded"


@pytest.mark.trains
def test_a_run_on_every_rating_shows_what_changed_before_and_after(page):
    tab, studio = page, page.studio
    expect = playwright_api.expect
    seed_rated_drafts(studio, 8)
    seed_rated_drafts(studio, 8, stars=1, start=8, text=dirge)  # liked and disliked: the run learns from both
    tab.get_by_role("tab", name="Training").click()
    tab.get_by_role("button", name="Train now").click()
    expect(tab.get_by_role("gridcell", name="succeeded")).to_be_visible(timeout=300_000)
    expect(tab.get_by_role("gridcell", name=re.compile(r"^\d+ liked, \d+ disliked$"))).to_be_visible()
    expect(tab.get_by_text("What changed in v1")).to_be_visible()
    sample = studio.versions.list()[0]["gate"]["before_after"]
    def shown(text: str) -> str:  # a textarea normalises line breaks; the tiny model writes any bytes
        return "".join(c for c in text if c.isprintable() and not c.isspace())

    expect(tab.get_by_label("After: v1")).not_to_have_value("")
    assert shown(tab.get_by_label("Before: base").input_value()) == shown(sample["parent_text"])
    assert shown(tab.get_by_label("After: v1").input_value()) == shown(sample["text"])
    _shot(tab, "08b-training-before-after")


def test_a_writer_compares_three_candidates_and_picks_one(page):
    tab, studio = page, page.studio
    expect = playwright_api.expect
    _set_max_tokens(tab, 48)
    tab.get_by_text("Compare candidates side by side").click()
    tab.get_by_role("button", name="Write 3 candidates").click()
    for n in (1, 2, 3):
        expect(tab.locator(f"#candidate-{n} textarea")).not_to_have_value("")
    # Once all three are saved the page says so and the pick buttons come on.
    _expect_candidates_saved(tab, [1, 2, 3])
    expect(tab.get_by_role("button", name="Pick candidate 2")).to_be_enabled()
    _shot(tab, "09-candidates")
    tab.get_by_role("button", name="Pick candidate 2").click()
    expect(tab.get_by_text("Candidate 2 picked: it is your current draft now.")).to_be_visible()
    with studio.sessions() as session:
        from storage.preferences import list_preferences

        pairs = [(c.id, r.id) for c, r in list_preferences(session)]
    assert len(pairs) == 2 and len({c for c, _ in pairs}) == 1
    chosen_text = studio.drafts.get(pairs[0][0], user="local")["text"]
    # The pick is the second candidate, and it became the current draft.
    expect(tab.locator("#candidate-2 textarea")).to_have_value(chosen_text)
    expect(tab.locator("#draft textarea")).to_have_value(chosen_text)
    _shot(tab, "10-candidate-picked")


def test_the_page_works_on_a_phone_sized_screen(page):
    tab = page
    tab.set_viewport_size({"width": 390, "height": 844})
    tab.reload()
    expect = playwright_api.expect
    expect(tab.get_by_role("button", name="Write draft")).to_be_visible()
    # Nothing wider than the screen: no sideways scrolling to reach the form or the draft.
    assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    tab.get_by_role("button", name="Write draft").click()
    expect(tab.locator("#draft textarea")).not_to_have_value("")
    tab.get_by_role("button", name="Stop").click()
    expect(tab.get_by_text(re.compile(r"Draft 1 saved"))).to_be_visible()
    _shot(tab, "11-phone")


def test_a_writer_edits_the_draft_and_goes_back_to_an_earlier_revision(page):
    tab, studio = page, page.studio
    expect = playwright_api.expect
    _set_max_tokens(tab, 16)
    tab.get_by_role("button", name="Write draft").click()
    expect(tab.get_by_text(re.compile(r"Draft 1 saved — finished"))).to_be_visible()
    written = studio.drafts.get(1, user="local")["text"]

    box = tab.locator("#draft textarea")
    box.fill("My own opening line, kept by hand.")
    tab.get_by_text("Genre template").click()  # leaving the box saves the edit
    expect(tab.get_by_text("Your edits to draft 1 are saved.")).to_be_visible()
    assert studio.drafts.get(1, user="local")["text"] == "My own opening line, kept by hand."

    tab.get_by_text("Revisions (undo)").click()
    tab.get_by_label("Go back to").click()
    tab.get_by_role("option", name=re.compile(r"^1\. written")).click()
    tab.get_by_role("button", name="Restore this revision").click()
    expect(tab.get_by_text("Draft 1 is back to that revision.")).to_be_visible()
    expect(box).to_have_value(written)
    assert studio.drafts.get(1, user="local")["text"] == written
    _shot(tab, "12-revisions")


def _expect_candidates_saved(tab, draft_ids: list[int]) -> None:
    """Wait for the note that these drafts are saved (in any order: candidates finish as they will)."""
    one = "(" + "|".join(map(str, draft_ids)) + ")"
    note = tab.get_by_text(re.compile(rf"^Saved as drafts {one}, {one} and {one}\. Pick the best\.$"))
    playwright_api.expect(note).to_be_visible(timeout=60_000)


def _write_and_pick_candidates(tab, studio, premise: str, pick: int) -> None:
    expect = playwright_api.expect
    before = len(studio.drafts.list(user="local"))
    tab.get_by_label("Premise").fill(premise)
    tab.get_by_role("button", name="Write 3 candidates").click()
    _expect_candidates_saved(tab, [before + 1, before + 2, before + 3])
    tab.get_by_role("button", name=f"Pick candidate {pick}").click()
    expect(tab.get_by_text(f"Candidate {pick} picked: it is your current draft now.")).to_be_visible()


def _blind_round(tab, studio, side: str) -> None:
    expect = playwright_api.expect
    tab.get_by_role("button", name="Write A and B").click()
    expect(tab.get_by_text("Which is better, A or B?")).to_be_visible(timeout=60_000)
    tab.get_by_role("button", name=f"{side} is better").click()
    expect(tab.get_by_text(re.compile(rf"You picked {side}, written by (base|v1)\. A was"))).to_be_visible()


@pytest.mark.trains
def test_picks_train_a_version_and_blind_picks_give_it_a_win_rate(page):
    """The writer's desk end to end: pick among candidates, train on the picks, compare blind."""
    tab, studio = page, page.studio
    expect = playwright_api.expect
    studio.settings.train_min_pairs = 4  # two picks of three candidates: enough for preference training
    _set_max_tokens(tab, 32)
    tab.get_by_text("Compare candidates side by side").click()
    _write_and_pick_candidates(tab, studio, "A lighthouse keeper finds a door in the sea.", 2)
    _write_and_pick_candidates(tab, studio, "A baker's bread starts to whisper.", 1)

    tab.get_by_role("tab", name="Training").click()
    tab.get_by_role("button", name="Train now").click()
    expect(tab.get_by_role("gridcell", name="succeeded")).to_be_visible(timeout=300_000)
    expect(tab.get_by_role("gridcell", name="2 picks (3 drafts)")).to_be_visible()  # it learned from the picks
    expect(tab.get_by_role("gridcell", name=re.compile(r"^No judge can examine this candidate"))).to_be_visible()
    _shot(tab, "13-trained-on-picks")
    assert studio.versions.list()[0]["gate"]["method"] == "dpo"

    tab.get_by_role("tab", name="Write").click()
    tab.get_by_text("Blind A/B: compare model versions").click()
    expect(tab.get_by_label("Compare the serving version with")).to_have_value(re.compile("newest other version"))
    tab.get_by_role("button", name="Write A and B").click()
    expect(tab.get_by_text("Which is better, A or B?")).to_be_visible(timeout=60_000)
    expect(tab.locator("#blind-a textarea")).not_to_have_value("")
    expect(tab.locator("#blind-b textarea")).not_to_have_value("")
    assert "v1" not in tab.locator("#blind-verdict").inner_text()  # nothing says which is which yet
    _shot(tab, "14-blind-a-b")
    tab.get_by_role("button", name="A is better").click()
    expect(tab.get_by_text(re.compile(r"You picked A, written by (base|v1)\. A was"))).to_be_visible()
    _shot(tab, "15-blind-revealed")
    for side in ("B", "A"):
        _blind_round(tab, studio, side)

    tab.get_by_role("tab", name="Training").click()
    [rate] = studio.blind.win_rates()
    assert (rate["version"], rate["against"], rate["picks"]) == ("v1", "base", 3)
    table = tab.locator("#blind-win-rates")
    expect(table.get_by_role("gridcell", name=f"{rate['win_rate']:.0%} ({rate['wins']} of 3)")).to_be_visible()
    expect(table.get_by_role("gridcell", name=f"{rate['low']:.0%} – {rate['high']:.0%}")).to_be_visible()
    _shot(tab, "16-blind-win-rates")
