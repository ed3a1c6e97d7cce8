"""Writers' accounts: logins, hashed passwords, and each writer's drafts kept to themselves."""

from __future__ import annotations

import pytest
from gradio_client import Client

from storage import NotFoundError
from studio.config import Settings
from studio.errors import StudioError
from studio.trust.accounts import Accounts, add_user, hash_password, read_auth_file, verify_password


def test_passwords_are_stored_hashed_and_checked():
    hashed = hash_password("correct horse")
    assert "correct horse" not in hashed and hashed.startswith("scrypt$")
    assert verify_password("correct horse", hashed)
    assert not verify_password("correct horsE", hashed)
    assert hash_password("same") != hash_password("same")  # salted


def test_accounts_from_options_and_the_first_account_is_admin_by_default():
    accounts = Accounts.from_settings(Settings(auth=["alice:pw-a", "bob:pw-b"]))
    assert accounts.enabled and accounts.check("alice", "pw-a") and not accounts.check("alice", "pw-b")
    assert accounts.is_admin("alice") and not accounts.is_admin("bob")
    assert Accounts.from_settings(Settings(auth=["alice:a", "bob:b"], admins="bob")).admins == {"bob"}
    with pytest.raises(StudioError, match="USER:PASSWORD"):
        Accounts.from_settings(Settings(auth=["alice"]))
    with pytest.raises(StudioError, match="who has no account"):
        Accounts.from_settings(Settings(auth=["alice:a"], admins="mallory"))
    assert Accounts.from_settings(Settings()).is_admin("local")  # single-user: the one user does everything


def test_the_auth_file_keeps_hashes_and_admin_marks(tmp_path):
    path = tmp_path / "accounts"
    add_user(path, "carol", "pw-c", admin=True)
    add_user(path, "dan", "pw-d")
    add_user(path, "dan", "new-pw")  # replaces, not duplicates
    assert "pw-c" not in path.read_text() and [e[0] for e in read_auth_file(path)] == ["carol", "dan"]
    accounts = Accounts.from_settings(Settings(auth_file=str(path)))
    assert accounts.check("dan", "new-pw") and not accounts.check("dan", "pw-d")
    assert accounts.admins == {"carol"}
    path.write_text("carol:plaintext\n")
    with pytest.raises(StudioError, match="line 1"):
        read_auth_file(path)


def test_the_auth_file_is_private_from_its_first_byte_and_never_half_written(tmp_path, monkeypatch):
    import os
    import stat

    path = tmp_path / "accounts"
    add_user(path, "carol", "pw-c")
    before = path.read_text()
    modes = []
    real_replace = os.replace

    def crash_after_looking(source, target):  # the new file as it stands just before it takes the name
        modes.append(stat.S_IMODE(os.stat(source).st_mode))
        raise OSError("disk pulled")

    monkeypatch.setattr(os, "replace", crash_after_looking)
    with pytest.raises(OSError, match="disk pulled"):
        add_user(path, "dan", "pw-d")
    assert modes == [0o600]  # never readable by others, not even for a moment
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["accounts"]  # nothing half done
    monkeypatch.setattr(os, "replace", real_replace)
    add_user(path, "dan", "pw-d")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and [e[0] for e in read_auth_file(path)] == ["carol", "dan"]


def test_only_admins_train_serve_and_publish_whichever_way_they_ask(settings):
    """The services check the caller, so the page, the API and any later endpoint are covered."""
    from studio.core.studio import Studio
    from studio.errors import NotAllowed
    from studio.trust.accounts import OPERATOR
    from studio.ui.templates import EXAMPLE

    studio = Studio(settings, accounts=Accounts.from_settings(Settings(auth=["alice:pw-a", "bob:pw-b"])))
    studio.use_model()
    template_id = studio.templates.save(EXAMPLE, user="bob")
    base_id = studio.versions.list()[0]["id"]
    for attempt in (lambda: studio.versions.train("button", user="bob"),
                    lambda: studio.versions.promote(base_id, user="bob"),
                    lambda: studio.versions.rollback(user="bob"),
                    lambda: studio.templates.publish(template_id, EXAMPLE, user="bob"),
                    lambda: studio.templates.unpublish(template_id, user="bob")):
        with pytest.raises(NotAllowed, match="Only an admin can"):
            attempt()
    assert studio.versions.runs() == [] and not studio.templates.mine(user="bob")[0]["published"]
    studio.templates.publish(template_id, EXAMPLE, user="alice")  # the first account is the admin
    assert studio.templates.mine(user="bob")[0]["published"]
    assert studio.versions.train("cli", user=OPERATOR)[1]  # the command line acts as the operator
    assert not Accounts.from_settings(Settings(auth=["alice:pw-a"])).check(OPERATOR, "")  # nobody logs in as it


def test_two_writers_cannot_reach_each_others_drafts_through_the_api(two_writers):
    studio, url = two_writers
    alice = Client(url, auth=("alice", "pw-a"), verbose=False)
    bob = Client(url, auth=("bob", "pw-b"), verbose=False)
    job = alice.submit("poetry", {}, {"max_new_tokens": 6}, api_name="/generate")
    draft_id = job.result()["draft_id"]
    assert studio.drafts.get(draft_id, user="alice")["user"] == "alice"

    with pytest.raises(Exception, match=f"Draft {draft_id} does not exist"):
        bob.predict(draft_id, 1, "", api_name="/rate")
    assert alice.predict(draft_id, 5, "mine", api_name="/rate")["stars"] == 5
    assert studio.drafts.list(user="bob") == [] and [d.id for d in studio.drafts.list(user="alice")] == [draft_id]
    with pytest.raises(NotFoundError):
        studio.drafts.get(draft_id, user="bob")


def test_a_wrong_password_is_refused(two_writers):
    _, url = two_writers
    with pytest.raises(Exception):
        Client(url, auth=("alice", "pw-b"), verbose=False)


def test_an_unknown_name_costs_the_same_hash_as_a_known_one(monkeypatch):
    """How long a refusal takes must not tell which names exist (on 5b3b0f3 an unknown name was
    refused without hashing: at once)."""
    import hashlib

    accounts = Accounts.from_settings(Settings(auth=["alice:pw-a"]))
    real, hashed = hashlib.scrypt, []
    monkeypatch.setattr(hashlib, "scrypt", lambda *a, **k: hashed.append(1) or real(*a, **k))
    for name in ("alice", "mallory"):
        hashed.clear()
        assert not accounts.check(name, "guess")
        assert len(hashed) == 1, name


def test_a_name_guessed_at_again_and_again_must_wait_even_with_the_right_password():
    from studio.trust.limits import FailureThrottle

    now = [0.0]
    accounts = Accounts.from_settings(Settings(auth=["alice:pw-a", "bob:pw-b"]))
    accounts = Accounts(accounts.hashes, accounts.admins, failures=FailureThrottle(clock=lambda: now[0]))
    for _ in range(6):
        assert not accounts.check("alice", "guess")
    assert not accounts.check("alice", "pw-a")  # waiting: no password is even tried
    assert accounts.check("bob", "pw-b")  # another name is not held up
    now[0] += 1.5  # 1 s after the sixth failure (2 s after a seventh, and so on)
    assert not accounts.check("alice", "guess")
    now[0] += 1.5  # that seventh failure: 2 s
    assert not accounts.check("alice", "pw-a")
    now[0] += 1
    assert accounts.check("alice", "pw-a")  # and a success clears the name
    assert not accounts.check("alice", "guess") and accounts.check("alice", "pw-a")


def test_an_address_that_keeps_failing_to_sign_in_is_told_to_wait(launch):
    """Gradio's password form, through the app as it is launched: past the free tries, 429 at once."""
    import httpx

    _, url = launch(auth=["alice:pw-a"])
    answers = [httpx.post(f"{url}/login", data={"username": f"guess{n}", "password": "x"}).status_code
               for n in range(21)]
    assert set(answers) == {400}  # one failure for each of 21 names: no name waits, the address has its free tries
    refused = httpx.post(f"{url}/login", data={"username": "alice", "password": "pw-a"})
    assert refused.status_code == 429 and "Too many failed sign-ins" in refused.text
