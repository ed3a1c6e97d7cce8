"""Model versions and training: queue a run, serve a version by hand, roll back, list them."""

from __future__ import annotations

from typing import Any

from storage import registry
from storage.models import Draft
from studio.config import Settings
from studio.core.records import run_record, version_record
from studio.errors import StudioError
from studio.learning.config import TrainingConfig
from studio.learning.jobs import TrainingJobs
from studio.trust.accounts import Accounts


class Versions:
    """Changing what the studio serves or learns is an admin's (or the operator's) act: each such
    method takes the caller and checks it here, whichever edge it came through."""

    def __init__(self, settings: Settings, sessions, jobs: TrainingJobs, accounts: Accounts):
        self.settings = settings
        self.sessions = sessions
        self.jobs = jobs
        self.accounts = accounts

    def training_config(self, **overrides: Any) -> TrainingConfig:
        return TrainingConfig.from_settings(self.settings, **overrides)

    def train(self, trigger: str = "button", *, user: str) -> tuple[int, bool]:
        """Queue a training run: (run id, False when one was already queued or running)."""
        self.accounts.require_admin(user, "start training")
        return self.jobs.request(trigger)

    def promote(self, version_id: int, *, user: str) -> str:
        """Serve this version (a rejected candidate promoted by hand, or an older one)."""
        self.accounts.require_admin(user, "change the serving version")
        with self.sessions.begin() as session:
            return registry.activate(session, version_id).name

    def rollback(self, *, user: str) -> str:
        """Serve the version the active one was trained from; return its name."""
        self.accounts.require_admin(user, "roll back")
        with self.sessions.begin() as session:
            current = registry.active_version(session)
            if current.parent_id is None:
                raise StudioError(f"{current.name} is the base model: there is nothing to roll back to.")
            return registry.activate(session, current.parent_id).name

    def list(self) -> list[dict[str, Any]]:
        with self.sessions() as session:
            return [version_record(v) for v in registry.list_versions(session)]

    def before_after(self, name: str | None, *, user: str | None,
                     versions: list[dict[str, Any]] | None = None) -> tuple[str | None, dict[str, Any] | None]:
        """The version named (else the newest with one) and its before/after: one held-out prompt written
        again by it and by its parent. The sample is given only to the writer whose draft's prompt it
        is (a writer sees no other writer's text, and a visitor none): (name, None) for anyone else,
        (None, None) while no version has one. versions: list()'s records, when the caller has them."""
        with_sample = [v for v in (self.list() if versions is None else versions) if v["gate"].get("before_after")]
        version = next((v for v in with_sample if v["name"] == name), with_sample[0] if with_sample else None)
        if version is None:
            return None, None
        sample = version["gate"]["before_after"]
        with self.sessions() as session:
            draft = session.get(Draft, sample.get("draft_id"))
            writer = draft.user if draft is not None else None
        return version["name"], sample if user is not None and writer == user else None

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        with self.sessions() as session:
            return [run_record(r) for r in registry.list_runs(session, limit)]
