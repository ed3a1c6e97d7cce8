"""Writing drafts: write, compare candidates, continue, stop, pick, rate, list, read and export.

A new draft's row is saved every few seconds as it streams and once more when the stream ends
(however it ends); ratings and picks may queue a training run once they are committed. The
writer is always given by the caller.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, Mapping

from sqlalchemy import select

from storage import comparisons, preferences, repository, revisions
from storage.models import Draft, DraftStatus, utcnow
from studio.config import Settings
from studio.core.export import draft_markdown
from studio.core.records import draft_record
from studio.core.templates import GenreTemplate
from studio.core.writer_templates import WriterTemplates
from studio.errors import GenerationError
from studio.learning.exports import export_rows
from studio.learning.jobs import TrainingJobs
from studio.metrics import Metrics
from studio.serving.drafting import Drafting
from studio.serving.generation import ActiveStreams, StreamResult
from studio.serving.models import LoadedModel
from studio.serving.pool import ModelPool
from studio.serving.sampling import MAX_SEED, SamplerSettings
from studio.trust.limits import RateLimit, StreamCap
from studio.trust.moderation import ContentFilter


INTERRUPTED_AFTER_SECONDS = 10.0  # a live stream saves every 3 s (serving.drafting); a later save heals a mistake


class Drafts:
    def __init__(self, settings: Settings, sessions, pool: ModelPool, templates: WriterTemplates,
                 content_filter: ContentFilter, jobs: TrainingJobs, metrics: Metrics | None = None):
        self.settings = settings
        self.metrics = metrics or Metrics(enabled=False)
        self.sessions = sessions
        self.pool = pool
        self.templates = templates
        self.content_filter = content_filter
        self.jobs = jobs
        self.rate_limit = RateLimit(settings.rate_limit)
        self.streams = StreamCap(settings.streams_per_writer)
        self.active = ActiveStreams()

    # -- writing ---------------------------------------------------------------------------

    def admit(self, user: str, drafts: int = 1) -> None:
        """The writer's limits, checked before anything is rendered or loaded: drafts started this
        minute, and drafts streaming now. GenerationError says what to wait for."""
        self.streams.check(user, drafts)
        self.rate_limit.check(user, drafts)

    def write(self, template_id: str, fields: Mapping[str, Any] | None = None,
              sampler: Mapping[str, Any] | None = None, *, user: str, key: str | None = None) -> Drafting:
        """Validate everything, then return a Drafting to iterate. Errors come before any text."""
        self.admit(user)
        return self.start(*self.prompt(template_id, fields, user), sampler, user=user, key=key)

    def prompt(self, template_id: str, fields: Mapping[str, Any] | None,
               user: str) -> tuple[GenreTemplate, dict[str, str], str]:
        """The template, its checked field values and the prompt they render (a writer's own
        template renders in a child process: drafts of one prompt share one rendering)."""
        template = self.templates.get(template_id, user=user)
        values = template.resolve_values(fields)
        return template, values, template.render(values)

    def start(self, template: GenreTemplate, values: dict[str, str], prompt: str,
              sampler: Mapping[str, Any] | None, *, user: str, key: str | None,
              loaded: LoadedModel | None = None) -> Drafting:
        """A Drafting for an already rendered prompt (candidates share one rendering), written by
        the active version unless another loaded one is given; admit() has counted it."""
        settings = template.sampler.updated(sampler).with_seed()
        writer = self.pool.writer(loaded or self.pool.load(), prompt, template.system, settings)
        row = dict(user=user, template_id=template.id, template_name=template.name, fields=values,
                   prompt=prompt, model_input=writer.model_input, settings=settings.to_dict(),
                   seed=settings.seed, model_name=writer.model_name, model_version=writer.model_version)
        new = _NewDraft(self, row)
        return Drafting(writer.stream, new.finish, self.active, key, checkpoint=new.checkpoint, metrics=self.metrics,
                        labels=(template.id, writer.model_version), hold=lambda: self.streams.hold(user))

    def continue_draft(self, draft_id: int, max_new_tokens: int | None = None, *, user: str,
                       key: str | None = None) -> Drafting:
        """Extend an existing draft; the same row is updated once the stream ends."""
        if self.pool.remote:
            raise GenerationError("Continue works with the local backend only: OpenAI-compatible servers "
                                  "cannot yet be asked to extend an answer.")
        with self.sessions() as session:
            previous = repository.get_draft(session, draft_id, user=user)
        self.admit(user)
        template = self.templates.get(previous.template_id, user=user)
        settings = SamplerSettings(**previous.settings).updated(
            {"max_new_tokens": max_new_tokens, "seed": None}).with_seed()
        writer = self.pool.writer(self.pool.load(), previous.prompt, template.system, settings,
                                  draft_so_far=previous.text)

        def save(result: StreamResult) -> int:
            # The continuation extends the text as it is now: an edit saved while it streamed stays.
            # The content filter reads it before the write (a classifier takes a while), and again
            # inside it only if an edit landed in between.
            with self.sessions() as session:
                seen = repository.get_draft(session, previous.id, user=user).text
            flags = self.content_filter.flags(seen + result.text, previous.prompt)
            with self.sessions.begin() as session:
                current = repository.get_draft(session, previous.id, user=user)
                text = current.text + result.text
                if current.text != seen:
                    flags = self.content_filter.flags(text, previous.prompt)
                repository.update_draft(
                    session, previous.id, text=text,
                    new_tokens=current.new_tokens + result.new_tokens,
                    generation_seconds=(current.generation_seconds or 0.0) + result.generation_seconds,
                    stopped=result.stopped, ended=result.ended, continuations=current.continuations + 1,
                    **flags, model_version=writer.model_version)
                revisions.add_revision(session, previous.id, text, "continued", writer.model_version)
            return previous.id

        return Drafting(writer.stream, save, self.active, key, draft_id=previous.id, text=previous.text,
                        metrics=self.metrics, labels=(previous.template_id, writer.model_version),
                        hold=lambda: self.streams.hold(user))

    def mark_interrupted(self, quiet_seconds: float = INTERRUPTED_AFTER_SECONDS) -> list[int]:
        """Drafts still marked as being written whose stream has not saved for quiet_seconds died
        with their process: mark them interrupted (their text so far kept, checked by the content
        filter, recorded as a revision). The app calls this as it starts."""
        cutoff = utcnow() - timedelta(seconds=quiet_seconds)
        with self.sessions() as session:
            drafts = session.scalars(select(Draft).where(Draft.status == DraftStatus.WRITING,
                                                         Draft.updated_at < cutoff)).all()
        flags = {draft.id: self.content_filter.flags(draft.text, draft.prompt) for draft in drafts}  # before the lock
        marked = []
        with self.sessions.begin() as session:
            for draft in drafts:
                current = session.get(Draft, draft.id)
                if current.status != DraftStatus.WRITING or current.text != draft.text:
                    continue  # its stream saved meanwhile: alive after all
                repository.update_draft(session, draft.id, status=DraftStatus.INTERRUPTED, stopped=True,
                                        **flags[draft.id])
                revisions.add_revision(session, draft.id, draft.text, "interrupted", draft.model_version)
                marked.append(draft.id)
        return marked

    def candidates(self, template_id: str, fields: Mapping[str, Any] | None = None,
                   sampler: Mapping[str, Any] | None = None, count: int = 3, *, user: str,
                   key: str | None = None) -> list[Drafting]:
        """2-4 drafts of the same prompt with different seeds, to be streamed together and compared."""
        if not 2 <= count <= 4:
            raise GenerationError(f"Compare 2 to 4 candidates, not {count}.")
        self.admit(user, count)
        key = key or uuid.uuid4().hex
        template, values, prompt = self.prompt(template_id, fields, user)
        first = self.start(template, values, prompt, sampler, user=user, key=f"{key}#0")
        seed = first.stream.settings.seed
        others = [self.start(template, values, prompt, {**(sampler or {}), "seed": (seed + n) % MAX_SEED},
                             user=user, key=f"{key}#{n}") for n in range(1, count)]
        return [first, *others]

    def stop(self, key: str) -> bool:
        """Stop the stream running under key; False when there is none."""
        return self.active.stop(key)

    # -- the writer's signal ---------------------------------------------------------------

    def prefer(self, chosen_id: int, rejected_ids: list[int], *, user: str) -> int:
        """Record that the writer picked chosen_id over each of rejected_ids; return the new pairs."""
        with self.sessions.begin() as session:
            added = preferences.record_preference(session, user, chosen_id, rejected_ids)
        self.metrics.picks.inc(added)
        self.jobs.maybe_auto_train()  # after the commit, as for ratings: picks are training data too
        return added

    def rate(self, draft_id: int, stars: int, comment: str = "", *, user: str) -> dict[str, Any]:
        with self.sessions.begin() as session:
            repository.get_draft(session, draft_id, user=user)
            rating = repository.rate_draft(session, draft_id, stars, comment or "", user=user)
            saved = {"draft_id": draft_id, "stars": rating.stars, "comment": rating.comment}
        self.metrics.ratings.labels(str(saved["stars"])).inc()
        # After the commit: the rating is safe whatever happens to the training queue.
        saved["training_run"] = self.jobs.maybe_auto_train()  # a run it queued, if it was the one that tipped it
        return saved

    # -- reading ---------------------------------------------------------------------------

    def list(self, *, user: str, template_id: str | None = None, min_stars: int | None = None,
             unrated_only: bool = False, limit: int = 200) -> list[repository.DraftSummary]:
        if template_id:
            self.templates.get(template_id, user=user)  # an unknown template is an error, not an empty list
        with self.sessions() as session:
            return repository.list_drafts(session, user=user, template_id=template_id or None,
                                          min_stars=min_stars, unrated_only=unrated_only, limit=limit)

    def get(self, draft_id: int, *, user: str) -> dict[str, Any]:
        """One draft with its rating, as plain data."""
        with self.sessions() as session:
            draft = repository.get_draft(session, draft_id, user=user)
            rating = repository.get_rating(session, draft_id, user=user)
            return draft_record(draft, rating, blind=comparisons.awaiting_pick(session, draft_id))

    def export_markdown(self, draft_id: int, *, user: str) -> str:
        return draft_markdown(self.get(draft_id, user=user))

    def export_dataset(self, fmt: str, min_stars: int = 4) -> list[dict[str, Any]]:
        """Every writer's rated drafts or picks as training rows (an operator's export)."""
        with self.sessions() as session:
            return export_rows(session, fmt, min_stars, self.templates.system_prompt)


class _NewDraft:
    """A new draft's row: created by the first checkpoint with the text so far (status writing),
    updated by later ones, and finished (status done, every figure) when the stream ends."""

    def __init__(self, drafts: Drafts, row: dict):
        self.drafts = drafts
        self.row = row
        self.draft_id: int | None = None

    def checkpoint(self, text: str) -> int:
        with self.drafts.sessions.begin() as session:
            if self.draft_id is None:
                self.draft_id = repository.add_draft(session, **self.row, text=text, status=DraftStatus.WRITING).id
            else:
                repository.update_draft(session, self.draft_id, text=text)
        return self.draft_id

    def finish(self, result: StreamResult) -> int:
        figures = dict(**self.drafts.content_filter.flags(result.text, self.row["prompt"]), text=result.text,
                       new_tokens=result.new_tokens, first_token_seconds=result.first_token_seconds,
                       generation_seconds=result.generation_seconds, stopped=result.stopped,
                       ended=result.ended, status=DraftStatus.DONE)
        with self.drafts.sessions.begin() as session:
            if self.draft_id is None:
                self.draft_id = repository.add_draft(session, **self.row, **figures).id
            else:
                repository.update_draft(session, self.draft_id, **figures)
            revisions.add_revision(session, self.draft_id, result.text, "written", self.row["model_version"])
        return self.draft_id
