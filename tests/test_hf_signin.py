"""Hugging Face sign-in on a Space: each signed-in writer has their own drafts, and a visitor who
has not signed in is told to sign in, never handed someone else's drafts.

The app starts as it does on a Space whose README says `hf_oauth: true` (`hf_app` in conftest.py):
with the variables such a Space sets, through app.create_app and app.launch_options, with Gradio's
real OAuth routes and its session middleware. Signing in is what Gradio's /login/callback leaves
behind once huggingface.co has said who the writer is: `oauth_info` in the session cookie, signed
with the app's own secret (tests/hf_space.py). Nothing here reaches huggingface.co.
"""

from __future__ import annotations

import gradio.oauth
import httpx
import pytest
from gradio_client import Client

from app import main
from studio.config import Settings, settings_from
from studio.errors import StudioError
from studio.trust.accounts import Accounts
from studio.ui.page import build_ui, exports_dir
from tests.conftest import _free_port
from tests.hf_space import signed_in_as

PRIVATE_TEMPLATE = '''name = "A private genre"
description = "Only its writer may see it."
language = "en"
category = "fiction"
template = "Write about {{ thing }}."

[[fields]]
name = "thing"
label = "Thing"
default = "a secret"
required = true
max_length = 40
'''


def test_a_space_with_hf_oauth_signs_writers_in_with_hugging_face(space):
    settings = Settings()
    assert settings.auth_mode == "hf" and settings.admins == "Owner"  # the Space's owner is its admin
    accounts = Accounts.from_settings(settings)
    assert accounts.enabled and not accounts.passwords
    assert accounts.is_admin("owner") and not accounts.is_admin("alice") and not accounts.is_admin(None)
    assert Accounts.from_settings(Settings(admins="alice,Bob")).admins == {"alice", "bob"}

    # An operator's explicit choice wins over the Space's variables.
    assert Settings(auth=["alice:pw"]).auth_mode == "accounts"
    assert Settings(auth_mode="single").auth_mode == "single"
    with pytest.raises(StudioError, match="--auth-mode accounts"):
        Accounts.from_settings(Settings(auth_mode="hf", auth=["alice:pw"]))
    with pytest.raises(StudioError, match="--auth-mode accounts needs --auth"):
        Accounts.from_settings(Settings(auth_mode="accounts"))
    with pytest.raises(ValueError, match="must be one of"):
        Settings(auth_mode="github")

    assert settings_from(environ={"STUDIO_AUTH_MODE": "single"}).auth_mode == "single"
    # Without `hf_oauth: true` the Space gets no OAuth variables and stays single-user, as before.
    space.delenv("OAUTH_CLIENT_ID")
    assert Settings().auth_mode == "single"


def test_two_hugging_face_writers_cannot_reach_each_others_drafts(hf_app):
    studio, demo, url = hf_app
    alice = Client(url, headers=signed_in_as(demo, "alice"), verbose=False)
    bob = Client(url, headers=signed_in_as(demo, "bob"), verbose=False)

    draft_id = alice.submit("poetry", {}, {"max_new_tokens": 6}, api_name="/generate").result()["draft_id"]
    assert studio.drafts.get(draft_id, user="alice")["user"] == "alice"
    with pytest.raises(Exception, match=f"Draft {draft_id} does not exist"):
        bob.predict(draft_id, 1, "", api_name="/rate")
    assert alice.predict(draft_id, 5, "mine", api_name="/rate")["stars"] == 5

    bobs_id = bob.submit("poetry", {}, {"max_new_tokens": 6}, api_name="/generate").result()["draft_id"]
    assert [d.id for d in studio.drafts.list(user="alice")] == [draft_id]
    assert [d.id for d in studio.drafts.list(user="bob")] == [bobs_id]

    # Writers' own templates are private too.
    template_id = studio.templates.save(PRIVATE_TEMPLATE, user="bob")
    assert template_id in {t["id"] for t in bob.predict(api_name="/templates")}
    assert template_id not in {t["id"] for t in alice.predict(api_name="/templates")}
    with pytest.raises(Exception, match="does not exist"):
        alice.submit(template_id, {}, {"max_new_tokens": 4}, api_name="/generate").result()


def test_a_visitor_who_has_not_signed_in_is_told_to_sign_in(hf_app):
    studio, demo, url = hf_app
    alice = Client(url, headers=signed_in_as(demo, "alice"), verbose=False)
    draft_id = alice.submit("poetry", {}, {"max_new_tokens": 6}, api_name="/generate").result()["draft_id"]
    studio.templates.save(PRIVATE_TEMPLATE, user="alice")

    visitor = Client(url, verbose=False)
    with pytest.raises(Exception, match="Sign in with Hugging Face to write"):
        visitor.submit("poetry", {}, {"max_new_tokens": 6}, api_name="/generate").result()
    with pytest.raises(Exception, match="Sign in with Hugging Face to write"):
        visitor.predict(draft_id, 1, "", api_name="/rate")
    # They may look at the shipped templates, and nothing of anyone's.
    assert {t["id"] for t in visitor.predict(api_name="/templates")} == set(studio.catalog.ids())
    assert [d.id for d in studio.drafts.list(user="alice")] == [draft_id]
    assert studio.drafts.get(draft_id, user="alice")["stars"] is None
    assert studio.drafts.list(user=studio.settings.user) == []  # nothing fell back to the local writer

    # Nor can they fetch the operator's copy of an export by its path: only Gradio's cache is served.
    kept = exports_dir(studio) / f"draft-{draft_id}.md"
    kept.write_text(studio.drafts.export_markdown(draft_id, user="alice"), encoding="utf-8")
    assert httpx.get(f"{url}gradio_api/file={kept}").status_code == 403

    # The page says so, and offers Gradio's Hugging Face sign-in.
    page = httpx.get(url).text
    assert "Writers sign in with Hugging Face" in page and "Sign in with Hugging Face" in page


def test_a_forged_or_expired_sign_in_is_no_sign_in(hf_app):
    studio, demo, url = hf_app
    forged = Client(url, headers=signed_in_as(demo, "alice", secret="guessed"), verbose=False)
    expired = Client(url, headers=signed_in_as(demo, "alice", expires_in=-60), verbose=False)
    for client in (forged, expired):
        with pytest.raises(Exception, match="Sign in with Hugging Face to write"):
            client.submit("poetry", {}, {"max_new_tokens": 4}, api_name="/generate").result()
    assert studio.drafts.list(user="alice") == []


def test_the_default_local_run_has_no_sign_in_and_never_asks_the_hub(studio, monkeypatch):
    def no_hub(*args, **kwargs):
        raise AssertionError("the default run asked the Hugging Face hub who is logged in")

    monkeypatch.setattr(gradio.oauth, "whoami", no_hub)  # what Gradio's local sign-in stand-in calls
    assert studio.settings.auth_mode == "single"
    demo = build_ui(studio, Accounts.from_settings(studio.settings))
    assert not demo.expects_oauth
    demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True)
    try:
        assert httpx.get(demo.local_url + "login/huggingface").status_code == 404
        assert "Single-user mode" in httpx.get(demo.local_url).text
    finally:
        demo.close()


def test_hf_sign_in_off_a_space_without_a_hub_login_stops_with_a_clear_error(tmp_path, tiny_model_dir,
                                                                              monkeypatch, capsys):
    import huggingface_hub.constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    code = main(["--auth-mode", "hf", "--model", str(tiny_model_dir), "--data-dir", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2 and "error: --auth-mode hf off a Space" in err and "hf auth login" in err
    assert "Traceback" not in err
