"""The studio's use cases, shared by the page, the API and the command line.

Studio ties the template catalog, the model and the database together: write a draft (streamed,
saved once the stream ends or is stopped), continue it, rate it, list and export drafts.
It knows nothing of Gradio; storage knows nothing of it.
"""

from __future__ import annotations

import logging
import threading
import uuid
from pathlib import Path
from typing import Any, Mapping

import storage
from storage import preferences, registry, repository, revisions, user_templates

from .blind import BlindComparisons
from .drafting import Drafting
from .config import Settings
from .errors import GenerationError, StudioError, TemplateError
from .export import draft_markdown
from .records import draft_record, run_record, version_record
from .batching import BatchEngine, batching_obstacle
from .generation import ActiveStreams, DraftStream, StreamResult, model_input
from .jobs import TrainingJobs
from .remote import RemoteDraftStream, chat_messages, make_client
from .models import LoadedModel, Progress, load_model
from .limits import RateLimit
from .classifier import Classifier
from .moderation import ContentFilter
from .sampling import MAX_SEED, SamplerSettings
from .templates import PROMPTS_DIR, GenreTemplate, TemplateCatalog, parse_template
from .training import TrainingConfig

log = logging.getLogger(__name__)

CUSTOM_PREFIX = "custom-"  # template ids of writers' own templates: custom-<row id>
MAX_CUSTOM_FIELDS = 6  # as many as the page shows


class Studio:
    def __init__(self, settings: Settings, prompts_dir: Path = PROMPTS_DIR):
        self.settings = settings
        self.catalog = TemplateCatalog.load(prompts_dir)
        self.sessions = storage.open_database(settings.database_url)
        with self.sessions.begin() as session:
            registry.ensure_base_version(session, settings.model)
        self.active = ActiveStreams()
        self.jobs = TrainingJobs(self.sessions, settings)
        classifier = (Classifier(settings.moderation_model, settings.flag_labels, settings.moderation_threshold,
                                 settings.device) if settings.moderation_model else None)
        self.content_filter = ContentFilter.load(settings.blocklist, settings.moderation == "on", classifier)
        self.rate_limit = RateLimit(settings.rate_limit)
        self._loaded: LoadedModel | None = None
        self._other: LoadedModel | None = None  # see load_version
        self._load_lock = threading.Lock()
        self._remote_client = None
        self.blind = BlindComparisons(self)

    # -- the model -------------------------------------------------------------------------

    def load(self, progress: Progress = log.info) -> LoadedModel:
        """The serving model: the active version, loaded on first use and whenever it changes.

        Promotion or rollback (by this process or a training process) switches the model here
        without a restart; streams already running keep the model object they started with.
        """
        with self.sessions() as session:
            version = registry.active_version(session)
            wanted = (version.id, version.name, version.adapter_path)
            training = bool(registry.running_runs(session))
        with self._load_lock:
            if self._loaded is None or self._loaded.version_id != wanted[0]:
                self._loaded = self._load(wanted, progress)
            for model in (self._loaded, self._other):
                if model is not None and model.engine is not None and model.device == "cpu":
                    # A training run takes the CPU too. Two processes whose OpenMP threads spin-wait
                    # for each other on the same cores slow each other down several-fold; decoding on
                    # one thread meanwhile keeps serving at about 0.7x its idle speed instead of 0.3x.
                    model.engine.threads = 1 if training else None
            return self._loaded

    def batches_drafts(self) -> bool:
        """Whether writers' drafts run together: on the remote server, or in the local model's batch."""
        if self.remote:
            return self.settings.batching == "on"
        return self._engine(self.load()) is not None

    def _load(self, version: tuple[int, str, str | None], progress: Progress) -> LoadedModel:
        """Load a version (id, name, adapter path), with the batch engine its drafts will join."""
        loaded = load_model(self.settings.model, self.settings.data_path, self.settings.device, progress,
                            adapter=version[2], version=version[1], version_id=version[0], weights=not self.remote)
        # One engine per loaded model (made even with batching off: it costs nothing until a
        # draft joins, and the benchmark switches between the two). The engine it replaces
        # needs no shutdown: its thread ends when the drafts still running on it are done.
        if loaded.model is None:
            return loaded
        obstacle = batching_obstacle(loaded.model)
        if obstacle is None:
            loaded.engine = BatchEngine(loaded.model, self.settings.max_batch)
        elif self.settings.batching == "on":
            log.info("%s cannot be batched (%s): each draft generates on its own.", self.settings.model, obstacle)
        return loaded

    def load_version(self, name: str) -> LoadedModel:
        """Another version than the active one, beside it (blind comparison): one such is kept loaded."""
        if self.remote:
            raise GenerationError("Comparing versions needs the local backend: the server holds one model.")
        with self.sessions() as session:
            version = registry.get_version_by_name(session, name)
            wanted, status = (version.id, version.name, version.adapter_path), version.status
        if status in ("training", "failed"):
            raise StudioError(f"{name} is {status}: only a finished version can write.")
        active = self.load()
        if active.version_id == wanted[0]:
            return active
        with self._load_lock:
            if self._other is None or self._other.version_id != wanted[0]:
                self._other = None  # let the last one go before the next is loaded
                self._other = self._load(wanted, log.info)
            return self._other

    def _engine(self, loaded: LoadedModel) -> BatchEngine | None:
        """The batch engine drafts on `loaded` join, or None when each generates on its own."""
        return loaded.engine if self.settings.batching == "on" else None

    @property
    def remote(self) -> bool:
        """True when an OpenAI-compatible server generates (the local copy is still trained)."""
        return self.settings.backend == "openai"

    @property
    def api_model(self) -> str:
        return self.settings.api_model or self.settings.model

    def _client(self):
        if self._remote_client is None:
            self._remote_client = make_client(self.settings.base_url, self.settings.api_key)
        return self._remote_client

    # -- writing ---------------------------------------------------------------------------

    def write(
        self,
        template_id: str,
        fields: Mapping[str, Any] | None = None,
        sampler: Mapping[str, Any] | None = None,
        *,
        user: str | None = None,
        key: str | None = None,
    ) -> Drafting:
        """Validate everything, then return a Drafting to iterate. Errors come before any text."""
        return self.start(*self.prompt(template_id, fields, user), sampler, user=user, key=key)

    def prompt(self, template_id: str, fields: Mapping[str, Any] | None,
               user: str | None) -> tuple[GenreTemplate, dict[str, str], str]:
        """The template, its checked field values and the prompt they render (a writer's own
        template renders in a child process: drafts of one prompt share one rendering)."""
        template = self.template(template_id, user)
        values = template.resolve_values(fields)
        return template, values, template.render(values)

    def start(self, template: GenreTemplate, values: dict[str, str], prompt: str,
              sampler: Mapping[str, Any] | None, *, user: str | None, key: str | None,
              loaded: LoadedModel | None = None) -> Drafting:
        """A Drafting for an already rendered prompt (candidates share one rendering), written by
        the active version unless another loaded one is given."""
        settings = template.sampler.updated(sampler).with_seed()
        self.rate_limit.check(user or self.settings.user)  # last check: only valid requests count
        loaded = loaded or self.load()
        text_in = model_input(loaded, prompt, template.system)
        if self.remote:
            if settings.max_new_tokens > loaded.context_length:
                raise GenerationError(f"max_new_tokens must be at most the model's context, {loaded.context_length}.")
            stream = RemoteDraftStream(self._client(), self.api_model, chat_messages(prompt, template.system), settings)
        else:
            stream = DraftStream(loaded, text_in, settings, self._engine(loaded))
        row = dict(
            user=user or self.settings.user,
            template_id=template.id,
            template_name=template.name,
            fields=values,
            prompt=prompt,
            model_input=text_in,
            settings=settings.to_dict(),
            seed=settings.seed,
            model_name=f"{self.settings.base_url} {self.api_model}" if self.remote else loaded.name,
            model_version=self.api_model if self.remote else loaded.version,
        )
        return Drafting(stream, lambda result: self._save_new(row, result), self.active, key)

    def continue_draft(
        self, draft_id: int, max_new_tokens: int | None = None, *, user: str | None = None, key: str | None = None
    ) -> Drafting:
        """Extend an existing draft; the same row is updated once the stream ends."""
        if self.remote:
            raise GenerationError("Continue works with the local backend only: OpenAI-compatible servers "
                                  "cannot yet be asked to extend an answer.")
        with self.sessions() as session:
            draft = repository.get_draft(session, draft_id, user=user or self.settings.user)
        template = self.template(draft.template_id, user)
        self.rate_limit.check(user or self.settings.user)
        settings = SamplerSettings(**draft.settings).updated(
            {"max_new_tokens": max_new_tokens, "seed": None}
        ).with_seed()
        loaded = self.load()
        text_in = model_input(loaded, draft.prompt, template.system, draft_so_far=draft.text)
        previous = draft

        def save(result: StreamResult) -> int:
            with self.sessions.begin() as session:
                repository.update_draft(
                    session,
                    previous.id,
                    text=previous.text + result.text,
                    new_tokens=previous.new_tokens + result.new_tokens,
                    generation_seconds=(previous.generation_seconds or 0.0) + result.generation_seconds,
                    stopped=result.stopped,
                    continuations=previous.continuations + 1,
                    **self.content_filter.flags(previous.text + result.text, previous.prompt),
                    model_version=loaded.version,
                )
                revisions.add_revision(session, previous.id, previous.text + result.text, "continued")
            return previous.id

        stream = DraftStream(loaded, text_in, settings, self._engine(loaded))
        return Drafting(stream, save, self.active, key, draft_id=draft.id, text=draft.text)

    def _save_new(self, row: dict, result: StreamResult) -> int:
        with self.sessions.begin() as session:
            draft = repository.add_draft(
                session,
                **row,
                **self.content_filter.flags(result.text, row["prompt"]),
                text=result.text,
                new_tokens=result.new_tokens,
                first_token_seconds=result.first_token_seconds,
                generation_seconds=result.generation_seconds,
                stopped=result.stopped,
            )
            revisions.add_revision(session, draft.id, result.text, "written")
            return draft.id

    def candidates(self, template_id: str, fields: Mapping[str, Any] | None = None,
                   sampler: Mapping[str, Any] | None = None, count: int = 3, *, user: str | None = None,
                   key: str | None = None) -> list[Drafting]:
        """2-4 drafts of the same prompt with different seeds, to be streamed together and compared."""
        if not 2 <= count <= 4:
            raise GenerationError(f"Compare 2 to 4 candidates, not {count}.")
        key = key or uuid.uuid4().hex
        template, values, prompt = self.prompt(template_id, fields, user)
        first = self.start(template, values, prompt, sampler, user=user, key=f"{key}#0")
        seed = first.stream.settings.seed
        others = [self.start(template, values, prompt, {**(sampler or {}), "seed": (seed + n) % MAX_SEED},
                              user=user, key=f"{key}#{n}") for n in range(1, count)]
        return [first, *others]

    def prefer(self, chosen_id: int, rejected_ids: list[int], *, user: str | None = None) -> int:
        """Record that the writer picked chosen_id over each of rejected_ids; return the new pairs."""
        with self.sessions.begin() as session:
            added = preferences.record_preference(session, user or self.settings.user, chosen_id, rejected_ids)
        self.jobs.maybe_auto_train()  # after the commit, as for ratings: picks are training data too
        return added

    def stop(self, key: str) -> bool:
        """Stop the stream running under key; False when there is none."""
        return self.active.stop(key)

    # -- ratings, history, export ------------------------------------------------------------

    def rate(self, draft_id: int, stars: int, comment: str = "", *, user: str | None = None) -> dict[str, Any]:
        user = user or self.settings.user
        with self.sessions.begin() as session:
            repository.get_draft(session, draft_id, user=user)
            rating = repository.rate_draft(session, draft_id, stars, comment or "", user=user)
            saved = {"draft_id": draft_id, "stars": rating.stars, "comment": rating.comment}
        # After the commit: the rating is safe whatever happens to the training queue.
        high = stars >= self.settings.train_min_stars
        saved["training_run"] = self.jobs.maybe_auto_train() if high else None  # a run it queued
        return saved

    def drafts(
        self,
        *,
        template_id: str | None = None,
        min_stars: int | None = None,
        unrated_only: bool = False,
        limit: int = 200,
        user: str | None = None,
    ) -> list[repository.DraftSummary]:
        if template_id:
            self.template(template_id, user)  # an unknown template is an error, not an empty list
        with self.sessions() as session:
            return repository.list_drafts(
                session,
                user=user or self.settings.user,
                template_id=template_id or None,
                min_stars=min_stars,
                unrated_only=unrated_only,
                limit=limit,
            )

    def draft(self, draft_id: int, *, user: str | None = None) -> dict[str, Any]:
        """One draft with its rating, as plain data."""
        user = user or self.settings.user
        with self.sessions() as session:
            draft = repository.get_draft(session, draft_id, user=user)
            rating = repository.get_rating(session, draft_id, user=user)
            return draft_record(draft, rating)

    def export_markdown(self, draft_id: int, *, user: str | None = None) -> str:
        return draft_markdown(self.draft(draft_id, user=user))

    # -- writers' own templates -----------------------------------------------------------------

    def templates_for(self, user: str | None = None) -> list[GenreTemplate]:
        """The shipped templates, then the writer's own and everyone's published ones."""
        with self.sessions() as session:
            rows = user_templates.visible_templates(session, user or self.settings.user)
        custom = []
        for row in rows:
            try:
                custom.append(parse_template(f"{CUSTOM_PREFIX}{row.id}", row.source, untrusted=True))
            except TemplateError:
                continue  # saved before a rule tightened: it stays editable, not offered
        return [*self.catalog, *custom]

    def template(self, template_id: str, user: str | None = None) -> GenreTemplate:
        if not template_id.startswith(CUSTOM_PREFIX):
            return self.catalog.get(template_id)
        number = template_id.removeprefix(CUSTOM_PREFIX)
        with self.sessions() as session:
            row = user_templates.get_visible(session, int(number) if number.isdigit() else -1,
                                             user or self.settings.user)
            return parse_template(template_id, row.source, untrusted=True)

    def my_templates(self, user: str | None = None) -> list[dict[str, Any]]:
        user = user or self.settings.user
        with self.sessions() as session:
            return [{"id": f"{CUSTOM_PREFIX}{r.id}", "name": r.name, "owner": r.owner, "published": r.published,
                     "source": r.source} for r in user_templates.visible_templates(session, user)]

    def save_template(self, source: str, template_id: str | None = None, *, user: str | None = None) -> str:
        """Check a writer's template (it must load and render its defaults safely), then store it."""
        parsed = parse_template("new", source, untrusted=True)
        if len(parsed.fields) > MAX_CUSTOM_FIELDS:
            raise TemplateError(f"A template may have at most {MAX_CUSTOM_FIELDS} fields.")
        parsed.render()  # in the sandbox: a template that cannot render its own defaults is not saved
        number = int(template_id.removeprefix(CUSTOM_PREFIX)) if template_id else None
        with self.sessions.begin() as session:
            row = user_templates.save_template(session, user or self.settings.user, parsed.name, source, number)
            return f"{CUSTOM_PREFIX}{row.id}"

    def delete_template(self, template_id: str, *, user: str | None = None) -> None:
        with self.sessions.begin() as session:
            user_templates.delete_template(session, int(template_id.removeprefix(CUSTOM_PREFIX)),
                                           user or self.settings.user)

    def publish_template(self, template_id: str, published: bool = True) -> None:
        """Share a writer's template with everyone (an admin's decision, checked at the edge)."""
        with self.sessions.begin() as session:
            user_templates.set_published(session, int(template_id.removeprefix(CUSTOM_PREFIX)), published)

    # -- training and versions ------------------------------------------------------------------

    def training_config(self, **overrides: Any) -> TrainingConfig:
        return TrainingConfig(**{"min_stars": self.settings.train_min_stars,
                                 "gate_margin": self.settings.gate_margin,
                                 "max_per_writer": self.settings.train_max_per_writer,
                                 "method": self.settings.train_method,
                                 "min_pairs": self.settings.train_min_pairs, **overrides})

    def train_now(self, trigger: str = "button") -> tuple[int, bool]:
        """Queue a training run: (run id, False when one was already queued or running)."""
        return self.jobs.request(trigger)

    def promote(self, version_id: int) -> str:
        """Serve this version (a rejected candidate promoted by hand, or an older one)."""
        with self.sessions.begin() as session:
            return registry.activate(session, version_id).name

    def rollback(self) -> str:
        """Serve the version the active one was trained from; return its name."""
        with self.sessions.begin() as session:
            current = registry.active_version(session)
            if current.parent_id is None:
                raise StudioError(f"{current.name} is the base model: there is nothing to roll back to.")
            return registry.activate(session, current.parent_id).name

    def versions(self) -> list[dict[str, Any]]:
        with self.sessions() as session:
            return [version_record(v) for v in registry.list_versions(session)]

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        with self.sessions() as session:
            return [run_record(r) for r in registry.list_runs(session, limit)]


__all__ = ["Studio", "Drafting", "StudioError"]
