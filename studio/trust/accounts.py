"""Writers' accounts: who may log in, and who is an admin.

Local deployments give accounts with `--auth USER:PASSWORD` (repeatable) or an auth file of
hashed passwords (`python -m studio add-user NAME --auth-file FILE`). Passwords are hashed with
scrypt and compared in constant time. On a Space, writers can sign in with Hugging Face instead
(`--auth-mode hf`): there are no passwords here then, and admins are Hugging Face usernames.
With neither the studio is single-user, and that one user may do everything.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path

from studio.config import Settings
from studio.errors import NotAllowed, StudioError
from studio.files import write_private_file
from studio.trust.limits import FailureThrottle

_SCRYPT = dict(n=2**14, r=8, p=1)  # interactive-login strength, ~50 ms per check


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def verify_password(password: str, hashed: str) -> bool:
    try:
        scheme, salt, digest = hashed.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), **_SCRYPT)
    return hmac.compare_digest(actual, base64.b64decode(digest))


@functools.cache
def _stand_in_hash() -> str:
    """What an unknown name's password is checked against: a real hash of a password nobody has."""
    return hash_password(base64.b64encode(os.urandom(24)).decode())


# Who the command line acts as: the operator, who may do anything. No account can have this
# name (account names cannot hold ':'), so no writer can pass for the operator.
OPERATOR = ":operator"


@dataclass(frozen=True)
class Accounts:
    hashes: dict[str, str] = field(default_factory=dict)  # user -> scrypt hash
    admins: frozenset[str] = frozenset()
    hf: bool = False  # writers sign in with Hugging Face; admins are kept casefolded (usernames ignore case)
    failures: FailureThrottle = field(default_factory=FailureThrottle, compare=False)  # failed sign-ins per name

    @property
    def enabled(self) -> bool:
        """Every writer has drafts of their own (password accounts or Hugging Face sign-in)."""
        return bool(self.hashes) or self.hf

    @property
    def passwords(self) -> bool:
        """Writers log in with a password through Gradio's login form."""
        return bool(self.hashes)

    def check(self, user: str, password: str) -> bool:
        """Gradio's login check. An unknown name costs the same hash as a known one (so how long the
        answer takes tells no one which names exist), and a name guessed at too often waits
        (FailureThrottle: the answer is no, whatever the password, until its wait is over)."""
        if self.failures.wait(user):
            return False
        known = user in self.hashes
        good = verify_password(password, self.hashes[user] if known else _stand_in_hash())
        if good and known:
            self.failures.succeeded(user)
            return True
        self.failures.failed(user)
        return False

    def is_admin(self, user: str | None) -> bool:
        if user == OPERATOR or not self.enabled:
            return True
        if self.hf:
            return user is not None and user.casefold() in self.admins
        return user in self.admins

    def require_admin(self, user: str | None, action: str) -> None:
        """The permission check every path to an admin's action goes through (page, API, command line)."""
        if not self.is_admin(user):
            raise NotAllowed(f"Only an admin can {action}.")

    @classmethod
    def from_settings(cls, settings: Settings) -> "Accounts":
        has_accounts = bool(settings.auth or settings.auth_file)
        if settings.auth_mode == "accounts" and not has_accounts:
            raise StudioError("--auth-mode accounts needs --auth USER:PASSWORD or --auth-file FILE.")
        if settings.auth_mode in ("hf", "single") and has_accounts:
            raise StudioError(f"--auth and --auth-file give password accounts: leave them out with --auth-mode "
                              f"{settings.auth_mode}, or use --auth-mode accounts.")
        if settings.auth_mode == "hf":
            return cls(admins=frozenset(a.strip().casefold() for a in settings.admins.split(",") if a.strip()),
                       hf=True)
        hashes: dict[str, str] = {}
        order: list[str] = []
        file_admins: set[str] = set()
        if settings.auth_file:
            for user, hashed, admin in read_auth_file(Path(settings.auth_file)):
                hashes[user] = hashed
                order.append(user)
                if admin:
                    file_admins.add(user)
        for pair in settings.auth:
            user, sep, password = pair.partition(":")
            if not sep or not user.strip() or not password:
                raise StudioError(f"--auth takes USER:PASSWORD, not {pair.split(':')[0]!r}:….")
            hashes[user.strip()] = hash_password(password)
            order.append(user.strip())
        named = {a.strip() for a in settings.admins.split(",") if a.strip()}
        unknown = named - set(hashes)
        if unknown:
            raise StudioError(f"--admins names {', '.join(sorted(unknown))}, who has no account.")
        admins = named | file_admins or ({order[0]} if order else set())
        return cls(hashes, frozenset(admins))


def read_auth_file(path: Path) -> list[tuple[str, str, bool]]:
    """Lines `user:scrypt$salt$hash[:admin]`; blank lines and # comments are skipped."""
    if not path.is_file():
        raise StudioError(f"The auth file {path} does not exist: create it with `python -m studio add-user`.")
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) not in (2, 3) or not parts[1].startswith("scrypt$") or parts[2:] not in ([], ["admin"]):
            raise StudioError(f"{path}, line {number}: expected user:scrypt$…[:admin].")
        entries.append((parts[0], parts[1], parts[2:] == ["admin"]))
    return entries


def add_user(path: Path, user: str, password: str, admin: bool = False) -> None:
    """Add or replace an account in the auth file."""
    if not user or ":" in user or not password:
        raise StudioError("A user name (without ':') and a non-empty password are needed.")
    kept = [e for e in read_auth_file(path) if e[0] != user] if path.exists() else []
    kept.append((user, hash_password(password), admin))
    write_private_file(path, "".join(f"{u}:{h}{':admin' if a else ''}\n" for u, h, a in kept))
