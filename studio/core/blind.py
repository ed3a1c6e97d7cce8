"""Blind comparison of model versions on the writers' own prompts.

One round writes two drafts of the same prompt with the same seed and settings, one by the
active version and one by another (the newest other version, or one the writer names), and
shows them as A and B in a random order. The writer's pick is stored with both versions, and
as an ordinary preference, so it also becomes training data. Over many rounds each version gets
a win rate with a 95% Wilson score interval: on the writers' own choices, the evidence that a
new version is better (or not), beside the gate's held-out perplexity.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Mapping

from storage import comparisons, registry
from storage.models import WRITABLE_VERSION_STATUSES
from studio.core.drafts import Drafts
from studio.errors import GenerationError, StudioError
from studio.learning.jobs import TrainingJobs
from studio.serving.drafting import Drafting
from studio.serving.pool import ModelPool

Z_95 = 1.959963984540054  # the standard normal quantile for a two-sided 95% interval


def wilson_interval(wins: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for a win rate: sound for few picks and for rates near 0 or 1."""
    if n == 0:
        return 0.0, 1.0
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class BlindRound:
    """Two drafts being written for one comparison: stream `draftings` (A, B), then save()."""

    draftings: list[Drafting]
    versions: tuple[str, str]  # the writer is told these only after picking
    user: str
    sessions: Any
    comparison_id: int | None = None

    def save(self) -> int:
        """Record the comparison once both drafts are written; returns its id."""
        if self.comparison_id is None:
            if any(d.draft_id is None for d in self.draftings):
                raise GenerationError("One of the drafts has no text, so there is nothing to compare: "
                                      "start a new comparison.")
            with self.sessions.begin() as session:
                row = comparisons.add_comparison(session, self.user, self.draftings[0].draft_id,
                                                 self.draftings[1].draft_id, *self.versions)
                self.comparison_id = row.id
        return self.comparison_id


class BlindComparisons:
    def __init__(self, sessions, pool: ModelPool, drafts: Drafts, jobs: TrainingJobs,
                 rng: random.Random | None = None):
        self.sessions = sessions
        self.pool = pool
        self.drafts = drafts
        self.jobs = jobs
        self._rng = rng or random.SystemRandom()  # which side the active version takes

    def opponents(self) -> list[str]:
        """Versions that can be compared with the active one, newest first."""
        with self.sessions() as session:
            return [v.name for v in registry.list_versions(session)
                    if v.status in WRITABLE_VERSION_STATUSES and not v.is_active]

    def start(self, template_id: str, fields: Mapping[str, Any] | None = None,
              sampler: Mapping[str, Any] | None = None, *, against: str | None = None,
              user: str, key: str | None = None) -> BlindRound:
        """Validate everything, load the other version, and return the round to stream."""
        self.drafts.admit(user, 2)  # before rendering the prompt or loading a version
        choices = self.opponents()
        if not choices:
            raise StudioError("There is only one model version so far: a blind comparison needs a second. "
                              "Train one in the Training tab first.")
        against = against or choices[0]
        if against not in choices:
            raise StudioError(f"{against} cannot be compared: choose one of {', '.join(choices)}.")
        template, values, prompt = self.drafts.prompt(template_id, fields, user)
        models = [self.pool.load(), self.pool.load_version(against)]
        if self._rng.random() < 0.5:
            models.reverse()
        key = key or "blind"
        first = self.drafts.start(template, values, prompt, sampler, user=user, key=f"{key}#0", loaded=models[0])
        same = {**(sampler or {}), "seed": first.stream.settings.seed}  # only the version differs
        second = self.drafts.start(template, values, prompt, same, user=user, key=f"{key}#1", loaded=models[1])
        return BlindRound([first, second], (models[0].version, models[1].version), user, self.sessions)

    def pick(self, comparison_id: int, side: str, *, user: str) -> dict[str, Any]:
        """The writer prefers draft A or B; returns what was picked and which version wrote each."""
        with self.sessions.begin() as session:
            row = comparisons.decide(session, comparison_id, user, side)
            result = {"comparison_id": row.id, "chosen": side, "chosen_draft_id": row.chosen_draft_id,
                      "versions": {"A": row.version_a, "B": row.version_b},
                      "winner": row.version_a if side == "A" else row.version_b}
        self.jobs.maybe_auto_train()  # the pick is a preference, and training data
        return result

    def win_rates(self) -> list[dict[str, Any]]:
        """Per pair of versions that met: picks, the newer version's win rate and its 95% interval."""
        with self.sessions() as session:
            wins = comparisons.tally(session)
            order = {v.name: v.id for v in registry.list_versions(session)}
        pairs = {tuple(sorted(pair, key=lambda name: order.get(name, -1), reverse=True)) for pair in wins}
        rows = []
        for newer, older in sorted(pairs, key=lambda p: (order.get(p[0], -1), order.get(p[1], -1)), reverse=True):
            won, lost = wins[(newer, older)], wins[(older, newer)]
            low, high = wilson_interval(won, won + lost)
            rows.append({"version": newer, "against": older, "picks": won + lost, "wins": won,
                         "win_rate": won / (won + lost), "low": low, "high": high})
        return rows
