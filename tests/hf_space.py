"""A Gradio Space with `hf_oauth: true`, played locally: its variables (the `space` and `hf_app`
fixtures in conftest.py use them), and the session cookie Gradio's OAuth callback sets once
huggingface.co has said who the writer is. Nothing here reaches huggingface.co.
"""

from __future__ import annotations

import base64
import json
import time

from itsdangerous import TimestampSigner
from starlette.middleware.sessions import SessionMiddleware

SPACE = "owner/story-studio"
SPACE_ENV = {
    "SYSTEM": "spaces", "SPACE_ID": SPACE, "SPACE_AUTHOR_NAME": "Owner", "SPACE_HOST": "owner-story-studio.hf.space",
    "OAUTH_CLIENT_ID": "client-id", "OAUTH_CLIENT_SECRET": "client-secret", "OAUTH_SCOPES": "openid profile",
    "OPENID_PROVIDER_URL": "https://huggingface.co",
}


def session_cookie(demo, username: str, expires_in: float = 8 * 3600, secret: str | None = None) -> str:
    """The `session` cookie Gradio's OAuth callback sets for `username`, signed as Starlette signs it."""
    if secret is None:  # the app's own: as its SessionMiddleware was configured
        secret = next(m.kwargs["secret_key"] for m in demo.server_app.user_middleware if m.cls is SessionMiddleware)
    oauth_info = {
        "access_token": "hf_oauth_token", "token_type": "bearer", "scope": "openid profile",
        "expires_at": int(time.time() + expires_in),
        "userinfo": {"preferred_username": username, "name": username.title(),
                     "profile": f"https://huggingface.co/{username}", "picture": ""},
    }
    payload = base64.b64encode(json.dumps({"oauth_info": oauth_info}).encode())
    return TimestampSigner(str(secret)).sign(payload).decode()


def signed_in_as(demo, username: str, **kwargs) -> dict:
    """Request headers of a writer signed in with Hugging Face as `username`."""
    return {"Cookie": "session=" + session_cookie(demo, username, **kwargs)}
