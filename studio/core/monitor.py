"""The Monitor's figures: drafts per hour, how fast they were written, ratings per day, and each
version's share of drafts rated 4+. Read from the database, so they survive restarts and every
replica shows the same.

Rows come from plain selects and are bucketed here, in Python: hour and day arithmetic in SQL is
spelled differently on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import numpy as np
from sqlalchemy import select

from storage.models import Draft, DraftStatus, ModelVersion, Rating, utcnow
from studio.errors import StudioError
from studio.trust.accounts import Accounts

RANGES = (1, 7, 30)  # the spans, in days, the page offers
LIKED_STARS = 4  # "rated 4+": the drafts writers liked
PERCENTILES = (("p50", 50), ("p95", 95))  # numpy's default (linear) interpolation between drafts
HOUR, DAY = timedelta(hours=1), timedelta(days=1)

Row = dict[str, Any]


@dataclass
class Figures:
    """One list of plain rows per plot; hours and days are UTC."""

    days: int
    drafts_per_hour: list[Row]  # hour, drafts: every hour of the span (zeros too), or none without drafts
    tokens_per_second: list[Row]  # hour, percentile, tokens_per_second: hours with finished drafts
    first_token: list[Row]  # hour, percentile, seconds
    ratings_per_day: list[Row]  # day, stars, ratings: every day of the span and star count, or none
    versions: list[Row]  # version, rated, liked, share (liked / rated): all time, versions in the order made


def _hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _percentiles(by_hour: dict[datetime, list[float]], column: str) -> list[Row]:
    return [{"hour": hour, "percentile": name, column: float(np.percentile(values, q))}
            for hour, values in sorted(by_hour.items()) for name, q in PERCENTILES]


def _drafts(rows, hours: list[datetime]) -> tuple[list[Row], list[Row], list[Row]]:
    counts = Counter(_hour(r.created_at) for r in rows)
    speed, first = defaultdict(list), defaultdict(list)
    for r in rows:
        if r.status == DraftStatus.WRITING:  # its figures are not in yet
            continue
        if r.new_tokens and r.generation_seconds:  # no tokens or no time: no speed to measure
            speed[_hour(r.created_at)].append(r.new_tokens / r.generation_seconds)
        if r.first_token_seconds is not None:
            first[_hour(r.created_at)].append(r.first_token_seconds)
    per_hour = [{"hour": h, "drafts": counts[h]} for h in hours] if rows else []
    return per_hour, _percentiles(speed, "tokens_per_second"), _percentiles(first, "seconds")


def _ratings(rows, days: list[date]) -> list[Row]:
    """A rating counts once, with its current stars, on the day it was last given."""
    if not rows:
        return []
    counts = Counter((r.updated_at.date(), r.stars) for r in rows)
    return [{"day": d, "stars": s, "ratings": counts[d, s]} for d in days for s in range(1, 6)]


def _versions(rows, order: list[str]) -> list[Row]:
    """Each version's rated drafts and how many of them were liked; a draft rated by several
    writers counts once, by its mean stars."""
    stars: dict[int, list[int]] = defaultdict(list)
    version_of: dict[int, str] = {}
    for r in rows:
        stars[r.id].append(r.stars)
        version_of[r.id] = r.model_version
    rated, liked = Counter(), Counter()
    for draft_id, given in stars.items():
        rated[version_of[draft_id]] += 1
        liked[version_of[draft_id]] += sum(given) / len(given) >= LIKED_STARS
    rank = {name: i for i, name in enumerate(order)}
    names = sorted(rated, key=lambda name: (rank.get(name, len(rank)), name))  # unknown names last
    return [{"version": n, "rated": rated[n], "liked": liked[n], "share": liked[n] / rated[n]} for n in names]


class Monitor:
    """What an admin watches; everyone in single-user mode (the accounts decide)."""

    def __init__(self, sessions, accounts: Accounts):
        self.sessions = sessions
        self.accounts = accounts

    def figures(self, days: int = 7, *, user: str | None, now: datetime | None = None) -> Figures:
        """The figures of the last `days` days: that many hours x 24 ending with the current one,
        and that many days ending today."""
        self.accounts.require_admin(user, "see the Monitor")
        if days not in RANGES:
            raise StudioError(f"The Monitor shows the last {', '.join(map(str, RANGES))} days, not {days!r}.")
        current = _hour((now or utcnow()).astimezone(timezone.utc))
        end = current + HOUR
        hours = [end - HOUR * n for n in range(days * 24, 0, -1)]
        day_list = [current.date() - DAY * n for n in range(days - 1, -1, -1)]
        first_day = datetime.combine(day_list[0], time(), timezone.utc)
        with self.sessions() as session:
            drafts = session.execute(
                select(Draft.created_at, Draft.status, Draft.new_tokens, Draft.first_token_seconds,
                       Draft.generation_seconds).where(Draft.created_at >= hours[0], Draft.created_at < end)).all()
            ratings = session.execute(select(Rating.updated_at, Rating.stars).where(
                Rating.updated_at >= first_day, Rating.updated_at < end)).all()
            rated = session.execute(select(Draft.id, Draft.model_version, Rating.stars)
                                    .join(Rating, Rating.draft_id == Draft.id)).all()
            order = list(session.scalars(select(ModelVersion.name).order_by(ModelVersion.id)))
        per_hour, speed, first = _drafts(drafts, hours)
        return Figures(days, per_hour, speed, first, _ratings(ratings, day_list), _versions(rated, order))
