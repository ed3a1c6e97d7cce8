"""Hugging Face sign-in in a real headless Chromium: a visitor sees the sign-in button and, on
Write, the message to sign in; a signed-in writer writes, and History shows only their drafts.
"""

from __future__ import annotations

import re

import pytest

from tests.hf_space import session_cookie
from tests.test_browser import CHROMIUM, LAUNCH_ARGS, _set_max_tokens, _shot, playwright_api  # skips without Chromium

pytestmark = pytest.mark.e2e


def test_a_visitor_is_asked_to_sign_in_and_a_signed_in_writer_writes(hf_app):
    studio, demo, url = hf_app
    expect = playwright_api.expect
    list(studio.drafts.write("poetry", {}, {"max_new_tokens": 6}, user="bob"))  # someone else's draft
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            visitor = browser.new_page(viewport={"width": 1280, "height": 900})
            visitor.set_default_timeout(20_000)
            visitor.goto(url)
            expect(visitor.get_by_role("button", name="Sign in with Hugging Face")).to_be_visible()
            visitor.get_by_role("button", name="Write draft").click()
            expect(visitor.get_by_text("Sign in with Hugging Face to write:").first).to_be_visible()
            _shot(visitor, "21-signed-out-asked-to-sign-in")
            # Previewing a template starts a renderer process: writers only (on 5b3b0f3 anyone could).
            previewer = browser.new_page(viewport={"width": 1280, "height": 900})  # no message on screen yet
            previewer.set_default_timeout(20_000)
            previewer.goto(url)
            previewer.get_by_role("tab", name="My templates").click()
            previewer.get_by_role("button", name="Preview prompt").click()
            expect(previewer.get_by_text("Sign in with Hugging Face to write:").first).to_be_visible()
            expect(previewer.get_by_label("The prompt with the default values")).to_have_value("")

            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.add_cookies([{"name": "session", "value": session_cookie(demo, "alice"), "url": url}])
            writer = context.new_page()
            writer.set_default_timeout(20_000)
            writer.goto(url)
            expect(writer.get_by_role("button", name="Logout (alice)")).to_be_visible()
            _set_max_tokens(writer, 32)
            writer.get_by_role("button", name="Write draft").click()
            expect(writer.get_by_text(re.compile(r"Draft \d+ saved"))).to_be_visible(timeout=30_000)
            writer.get_by_role("tab", name="History").click()
            expect(writer.get_by_role("gridcell", name="Fantasy tale", exact=True)).to_have_count(1)
            expect(writer.get_by_role("gridcell", name="Poem", exact=True)).to_have_count(0)  # bob's (exact: a random draft may say "poem")
            _shot(writer, "22-signed-in-history")
        finally:
            browser.close()
    assert [d.template_id for d in studio.drafts.list(user="alice")] == ["fantasy"]
    assert [d.template_id for d in studio.drafts.list(user="bob")] == ["poetry"]
