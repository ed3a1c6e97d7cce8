"""The Monitor tab in a real headless Chromium: an admin sees its plots drawn from the database; a
writer who is not an admin sees one line instead. Screenshots go where tests/test_browser.py's go.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from storage import repository
from storage.models import Rating, utcnow
from studio.ui.monitor import ADMINS_ONLY
from tests.test_browser import CHROMIUM, LAUNCH_ARGS, _shot, playwright_api  # skips without Chromium

pytestmark = pytest.mark.e2e

PLOTS = ["#monitor-drafts", "#monitor-ratings", "#monitor-speed", "#monitor-first-token", "#monitor-versions"]


def _seed(studio) -> None:
    """A few hours of drafts from two versions, most of them rated."""
    now = utcnow()
    with studio.sessions.begin() as session:
        for i in range(24):
            at = now - timedelta(hours=i % 6, minutes=i)
            draft = repository.add_draft(
                session, template_id="poetry", template_name="Poem", fields={}, prompt="p", model_input="p",
                settings={}, seed=i, model_name="tiny", model_version="base" if i % 3 else "v1", text="t",
                new_tokens=100 + 10 * i, generation_seconds=4.0 + i % 5, first_token_seconds=0.1 + 0.05 * (i % 4),
                created_at=at)
            if i % 4:
                session.add(Rating(draft_id=draft.id, stars=1 + i % 5, created_at=at, updated_at=at))


def _open(browser, url):
    tab = browser.new_page(viewport={"width": 1280, "height": 900})
    tab.set_default_timeout(20_000)
    tab.goto(url)
    return tab


def test_an_admin_sees_the_monitors_plots(running_app):
    studio, url = running_app
    expect = playwright_api.expect
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            tab = _open(browser, url)
            tab.get_by_role("tab", name="Monitor").click()
            expect(tab.get_by_text("No drafts yet in the last 7 days")).to_be_visible()  # a note, not empty axes
            expect(tab.locator("#monitor svg.marks")).to_have_count(0)
            _shot(tab, "30-monitor-empty")
            _seed(studio)
            tab.get_by_role("button", name="Refresh").click()
            for plot in PLOTS:
                expect(tab.locator(f"{plot} svg.marks")).to_be_visible()  # drawn by Vega
            expect(tab.get_by_text("No drafts yet")).to_be_hidden()
            expect(tab.get_by_text(ADMINS_ONLY)).to_be_hidden()
            expect(tab.get_by_text("base (12)")).to_be_visible()  # each version's bar says what it rests on
            week_ago = f"{utcnow().date() - timedelta(days=6):%b %d}"
            expect(tab.locator("#monitor-ratings").get_by_text(week_ago)).to_be_visible()
            tab.get_by_label("Show").click()
            tab.get_by_role("option", name="Last 24 hours").click()
            expect(tab.locator("#monitor-ratings").get_by_text(week_ago)).to_have_count(0)  # redrawn: one day
            expect(tab.locator("#monitor-drafts svg.marks")).to_be_visible()
            tab.wait_for_timeout(1000)
            expect(tab.locator("[data-testid='toast-body']")).to_have_count(0)  # no error anywhere
            _shot(tab, "31-monitor-tab")
        finally:
            browser.close()


def test_a_writer_who_is_not_an_admin_sees_no_figures(two_writers):
    studio, url = two_writers
    expect = playwright_api.expect
    _seed(studio)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            assert context.request.post(f"{url}login", form={"username": "bob", "password": "pw-b"}).ok
            tab = context.new_page()
            tab.set_default_timeout(20_000)
            tab.goto(url)
            tab.get_by_role("tab", name="Monitor").click()
            expect(tab.get_by_text(ADMINS_ONLY)).to_be_visible()
            expect(tab.locator("#monitor svg.marks")).to_have_count(0)
            expect(tab.get_by_role("button", name="Refresh")).to_be_hidden()
            _shot(tab, "32-monitor-not-an-admin")
        finally:
            browser.close()
