"""The studio: the parts below, composed once and shared by the page, the API and the command line.

Each part is one concern: `pool` (the models), `drafts` (writing, rating, reading), `revisions`
(the writer's edits), `templates` (shipped and writers' own), `versions` (training and serving),
`blind` (blind comparisons), `metrics` (what an operator watches). Every use case takes the writer as an argument: who a request's
writer is gets decided at the edge. Nothing here knows Gradio.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import storage
from storage import registry
from studio.config import Settings
from studio.core.blind import BlindComparisons
from studio.core.drafts import Drafts
from studio.core.editing import Revisions
from studio.core.templates import PROMPTS_DIR, TemplateCatalog
from studio.core.versions import Versions
from studio.core.writer_templates import WriterTemplates
from studio.learning.jobs import TrainingJobs
from studio.metrics import Metrics
from studio.serving.pool import ModelPool
from studio.trust.accounts import Accounts
from studio.trust.classifier import Classifier
from studio.trust.moderation import ContentFilter

log = logging.getLogger(__name__)


class Studio:
    def __init__(self, settings: Settings, prompts_dir: Path = PROMPTS_DIR, accounts: Accounts | None = None):
        self.settings = settings
        # Who may do an admin's acts; the services check it (the command line acts as OPERATOR).
        self.accounts = accounts if accounts is not None else Accounts.from_settings(settings)
        self.catalog = TemplateCatalog.load(prompts_dir)
        self.metrics = Metrics(enabled=settings.metrics == "on")
        self.sessions = storage.open_database(settings.database_url)
        self.sessions.on_commit = self.metrics.db_commit.observe
        self._first_version()
        self.jobs = TrainingJobs(self.sessions, settings)
        self.versions = Versions(settings, self.sessions, self.jobs, self.accounts)
        self.versions.training_config()  # bad training options stop the start, not the first run
        classifier = (Classifier(settings.moderation_model, settings.flag_labels, settings.moderation_threshold,
                                 settings.device) if settings.moderation_model else None)
        self.content_filter = ContentFilter.load(settings.blocklist, settings.moderation == "on", classifier)
        self.pool = ModelPool(settings, self.sessions, self.metrics)
        self.templates = WriterTemplates(self.catalog, self.sessions, self.accounts)
        self.drafts = Drafts(settings, self.sessions, self.pool, self.templates, self.content_filter, self.jobs,
                             self.metrics)
        self.revisions = Revisions(self.sessions, self.content_filter)
        self.blind = BlindComparisons(self.sessions, self.pool, self.drafts, self.jobs)
        self.closing = threading.Event()  # set by close(): the app's background work stops

    def close(self) -> None:
        """Stop the background work: the training runner and the app's periodic sweeps."""
        self.closing.set()
        self.jobs.close()

    def _first_version(self) -> None:
        """A new database starts serving the base of --model. Nothing else here writes: which model an
        existing studio serves changes only through use_model (the app's start, or a command that writes)."""
        with self.sessions() as session:
            if registry.active_version(session) is not None:
                return
        with self.sessions.begin() as session:
            if registry.active_version(session) is None:
                registry.ensure_base_version(session, self.settings.model)

    def use_model(self) -> None:
        """Serve settings.model: when the active version is of another base model (or none is
        active), that model's base version becomes active, and a switch is logged. The app does
        this as it starts, and so do the commands that write with the model (generate, continue,
        train); commands that only read never change what the studio serves."""
        with self.sessions.begin() as session:
            before = registry.active_version(session)
            before = (before.name, before.base_model) if before is not None else None
            after = registry.ensure_base_version(session, self.settings.model).name
        if before is not None and before[1] != self.settings.model:
            log.warning("Now serving %s, the base of %s, instead of %s, a version of %s: --model names another "
                        "model than the one served until now.", after, self.settings.model, *before)
