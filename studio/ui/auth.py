"""Who is behind a request: the writer signed in with Hugging Face, the account logged in with a
password, or the one local writer. The page, its API and the tabs all ask through `Identity`.

Hugging Face sign-in is Gradio's own OAuth: `gr.LoginButton` sends the visitor to huggingface.co,
and Gradio's callback keeps what it learnt (`oauth_info`, with `userinfo.preferred_username`) in a
session cookie signed by Starlette's SessionMiddleware. That cookie is the only thing read here:
a visitor cannot name themselves, and one who is not signed in is told to sign in.
"""

from __future__ import annotations

import json
import time
from math import ceil

import gradio as gr

from studio.errors import StudioError, first_line
from studio.trust.accounts import Accounts
from studio.trust.limits import FailureThrottle
from studio.ui.refusal import refusal

SIGN_IN = ("Sign in with Hugging Face to write: use the “Sign in with Hugging Face” button at the top of "
           "the page. Your drafts, ratings and templates are then yours alone.")
SIGN_IN_NOTE = ("*Writers sign in with Hugging Face: each sees, rates and exports only their own drafts, "
                "and highly rated drafts from everyone train the shared model.*")
SINGLE_USER_NOTE = ("*Single-user mode: everyone who can open this page shares one set of drafts. Start the "
                    "studio with `--auth` (or on a Space with `hf_oauth: true`) to give writers their own.*")


def hf_username(request: gr.Request | None) -> str | None:
    """The Hugging Face username a request's session cookie was signed in as, or None."""
    raw = getattr(request, "request", None)  # the Starlette request under gr.Request
    scope = getattr(raw, "scope", None)
    if not isinstance(scope, dict) or "session" not in scope:  # no session middleware: nobody signed in
        return None
    info = scope["session"].get("oauth_info")
    if not isinstance(info, dict):
        return None
    expires_at = info.get("expires_at")
    if expires_at is not None and expires_at < time.time():  # as Gradio does: an expired sign-in is none
        return None
    username = (info.get("userinfo") or {}).get("preferred_username")
    return username if isinstance(username, str) and username else None


class Identity:
    """`who(request)`: the writer's name, or a gr.Error saying how to sign in."""

    def __init__(self, accounts: Accounts, local_user: str):
        self.accounts = accounts
        self.local_user = local_user

    def signed_in(self, request: gr.Request | None) -> str | None:
        """The writer, or None for a visitor who has not signed in (they may browse, not write)."""
        if self.accounts.hf:
            return hf_username(request)
        if self.accounts.passwords:
            return getattr(request, "username", None) or None
        return self.local_user

    def __call__(self, request: gr.Request | None) -> str:
        user = self.signed_in(request)
        if user is None:
            raise refusal(SIGN_IN if self.accounts.hf else "Log in with your writer account first.")
        return user


def check_local_sign_in() -> None:
    """Off a Space, Gradio's sign-in is a mock: everyone is this machine's `hf auth login`, which
    Gradio looks up on the hub when the app starts. Say so clearly instead of failing in Gradio."""
    from huggingface_hub import get_token, whoami

    hint = ("--auth-mode hf off a Space signs everyone in as this machine's Hugging Face login (Gradio's "
            "local stand-in for the Space's sign-in), which needs `hf auth login` and the hub")
    if get_token() is None:
        raise StudioError(f"{hint}, and no login was found. Log in, or use --auth-mode accounts with --auth.")
    try:
        whoami()
    except Exception as exc:  # any failure of the hub call (offline, refused token): one readable line
        raise StudioError(f"{hint}, and asking the hub failed: {first_line(exc)}") from exc


class SignInGuard:
    """ASGI middleware before Gradio's password form (POST /login): an address whose sign-ins keep
    failing must wait (FailureThrottle), and is answered 429 at once meanwhile. With Accounts.check
    slowing each guessed name, a guesser can try neither many passwords for one name nor one
    password for many names. (Behind a proxy every writer shares its address: the free tries are
    generous for that.)"""

    def __init__(self, app, throttle: FailureThrottle | None = None):
        self.app = app
        self.throttle = throttle or FailureThrottle(free=20, longest=60.0)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].rstrip("/") != "/login":
            await self.app(scope, receive, send)
            return
        address = (scope.get("client") or ("unknown",))[0]
        wait = self.throttle.wait(address)
        if wait:
            body = json.dumps({"detail": f"Too many failed sign-ins from your address: wait {wait:.0f} s."}).encode()
            await send({"type": "http.response.start", "status": 429,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after", str(ceil(wait)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        status = []

        async def noting_send(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await self.app(scope, receive, noting_send)
        if status and status[0] == 200:
            self.throttle.succeeded(address)
        elif status and status[0] in (400, 401):
            self.throttle.failed(address)
