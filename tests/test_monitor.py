"""The Monitor's figures, on drafts and ratings written straight to a database with chosen times:
every count and percentile is worked out by hand here. Who may see them: admins only."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

import storage
from storage import registry, repository
from storage.models import Rating, VersionStatus
from studio.config import Settings
from studio.core.monitor import Monitor
from studio.errors import NotAllowed, StudioError
from studio.trust.accounts import Accounts
from studio.ui.monitor import ADMINS_ONLY, show

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=timezone.utc)
H = timedelta(hours=1)


@pytest.fixture
def sessions(tmp_path):
    return storage.open_database(f"sqlite:///{tmp_path / 'monitor.db'}")


def add(session, at, version="base", status="done", tokens=0, seconds=None, first=None, stars=(), rated_at=None):
    """A draft made at `at`, rated `stars` (one rating per writer) at `rated_at` (else at `at`)."""
    draft = repository.add_draft(
        session, template_id="poetry", template_name="Poem", fields={}, prompt="p", model_input="p", settings={},
        seed=0, model_name="tiny", model_version=version, text="t", new_tokens=tokens, generation_seconds=seconds,
        first_token_seconds=first, status=status, created_at=at)
    for n, given in enumerate(stars):
        when = rated_at or at
        session.add(Rating(draft_id=draft.id, user=f"writer{n}", stars=given, created_at=when, updated_at=when))
    return draft


def figures(sessions, days=7, user="local"):
    return Monitor(sessions, Accounts()).figures(days, user=user, now=NOW)


def test_an_empty_database_has_nothing_to_plot_and_says_so(sessions):
    got = figures(sessions)
    assert (got.drafts_per_hour, got.tokens_per_second, got.first_token, got.ratings_per_day, got.versions) == (
        [], [], [], [], [])
    outputs = show(Monitor(sessions, Accounts()), "local", 7, NOW)
    plots, notes = outputs[2:7], outputs[7:]
    assert outputs[1]["visible"] and not outputs[0]["visible"]
    assert all(p["value"] is None and not p["visible"] for p in plots)
    assert all(n["visible"] for n in notes)
    assert notes[0]["value"].startswith("No drafts yet in the last 7 days")


def test_drafts_per_hour_count_every_hour_of_the_span(sessions):
    with sessions.begin() as session:
        for at in (NOW, NOW - timedelta(minutes=30), NOW - timedelta(minutes=31), NOW - 3 * H):
            add(session, at)  # 12:30, 12:00, 11:59, 09:30
        add(session, NOW - timedelta(minutes=5), status="writing")  # still streaming: a draft all the same
        add(session, NOW - 24 * H)  # 12:30 yesterday: before the first hour of the last 24
        add(session, NOW + 2 * H)  # after the current hour
    hours = figures(sessions, days=1).drafts_per_hour
    start = datetime(2026, 3, 9, 13, tzinfo=timezone.utc)
    assert [r["hour"] for r in hours] == [start + n * H for n in range(24)]
    assert {r["hour"].hour: r["drafts"] for r in hours if r["drafts"]} == {12: 3, 11: 1, 9: 1}
    assert len(figures(sessions, days=7).drafts_per_hour) == 7 * 24
    assert sum(r["drafts"] for r in figures(sessions, days=7).drafts_per_hour) == 6


def test_speed_and_first_token_are_p50_and_p95_per_hour_of_finished_drafts(sessions):
    eleven = datetime(2026, 3, 10, 11, 10, tzinfo=timezone.utc)
    with sessions.begin() as session:
        for tokens, seconds, first in ((100, 10, 0.4), (200, 10, 0.1), (300, 10, 0.3), (400, 10, 0.2)):
            add(session, eleven, tokens=tokens, seconds=seconds, first=first)  # 10, 20, 30, 40 tokens/s
        add(session, eleven, status="writing", tokens=5000, seconds=1, first=9.0)  # figures not in yet
        add(session, eleven, status="interrupted", tokens=0, seconds=2.0)  # no tokens: no speed, no first token
        add(session, NOW, tokens=60, seconds=4, first=1.5, status="interrupted")  # a lone draft at 12:00
    hour = {11: eleven.replace(minute=0), 12: NOW.replace(minute=0)}
    got = figures(sessions)
    assert got.tokens_per_second == [
        {"hour": hour[11], "percentile": "p50", "tokens_per_second": 25.0},
        {"hour": hour[11], "percentile": "p95", "tokens_per_second": pytest.approx(38.5)},  # 30 + 0.85 x 10
        {"hour": hour[12], "percentile": "p50", "tokens_per_second": 15.0},
        {"hour": hour[12], "percentile": "p95", "tokens_per_second": 15.0},
    ]
    assert got.first_token == [
        {"hour": hour[11], "percentile": "p50", "seconds": pytest.approx(0.25)},
        {"hour": hour[11], "percentile": "p95", "seconds": pytest.approx(0.385)},
        {"hour": hour[12], "percentile": "p50", "seconds": 1.5},
        {"hour": hour[12], "percentile": "p95", "seconds": 1.5},
    ]
    assert sum(r["drafts"] for r in got.drafts_per_hour) == 7  # the one being written counts as written


def test_ratings_per_day_by_stars_count_each_rating_on_the_day_it_was_last_given(sessions):
    with sessions.begin() as session:
        add(session, NOW, stars=[5])
        add(session, NOW - timedelta(minutes=1), stars=[5])
        add(session, NOW, stars=[2, 4])  # two writers rated it
        add(session, NOW - 10 * 24 * H, stars=[3], rated_at=NOW - 2 * 24 * H)  # old draft, rated (again) lately
        add(session, NOW - 7 * 24 * H, stars=[1])  # 7 days ago: before the first of the last 7 days
    rows = figures(sessions).ratings_per_day
    days = [date(2026, 3, 4) + timedelta(days=n) for n in range(7)]
    assert [(r["day"], r["stars"]) for r in rows] == [(d, s) for d in days for s in range(1, 6)]
    assert {(r["day"], r["stars"]): r["ratings"] for r in rows if r["ratings"]} == {
        (date(2026, 3, 10), 5): 2, (date(2026, 3, 10), 2): 1, (date(2026, 3, 10), 4): 1, (date(2026, 3, 8), 3): 1}
    assert len(figures(sessions, days=30).ratings_per_day) == 30 * 5


def test_each_versions_share_of_rated_drafts_rated_4_or_more(sessions):
    with sessions.begin() as session:
        registry.ensure_base_version(session, "tiny")
        for name in ("v1", "v2", "v10"):  # made in this order; "v10" sorts before "v2" by name
            registry.add_version(session, name=name, base_model="tiny", adapter_path=f"/{name}",
                                 status=VersionStatus.PROMOTED, gate={})
        for stars in ([5], [4], [2], [5, 3]):  # base: liked, liked, not, mean 4 (liked)
            add(session, NOW - 100 * 24 * H, stars=stars)  # all time: long ago counts too
        add(session, NOW, version="v10", stars=[4, 3])  # mean 3.5: not liked
        add(session, NOW, version="v10", stars=[4])
        add(session, NOW, version="v2", stars=[1])
        add(session, NOW, version="v1")  # v1: no rated drafts, so no share
        add(session, NOW, version="gone", stars=[5])  # a version no longer in the table goes last
    assert figures(sessions).versions == [
        {"version": "base", "rated": 4, "liked": 3, "share": 0.75},
        {"version": "v2", "rated": 1, "liked": 0, "share": 0.0},
        {"version": "v10", "rated": 2, "liked": 1, "share": 0.5},
        {"version": "gone", "rated": 1, "liked": 1, "share": 1.0},
    ]
    outputs = show(Monitor(sessions, Accounts()), "local", 7, NOW)
    plot = outputs[2 + 4]
    assert list(plot["value"]["version"]) == ["base (4)", "v2 (1)", "v10 (2)", "gone (1)"]
    assert list(plot["value"]["share"]) == [75.0, 0.0, 50.0, 100.0]


def test_the_page_gets_a_plot_for_each_figure_with_data(sessions):
    with sessions.begin() as session:
        add(session, NOW - H, tokens=50, seconds=5, first=0.5, stars=[4])
    outputs = show(Monitor(sessions, Accounts()), "local", 1, NOW)
    plots, notes = outputs[2:7], outputs[7:]
    assert [p["visible"] for p in plots] == [True] * 5 and not any(n["visible"] for n in notes)
    drafts, ratings, speed, first, _ = (p["value"] for p in plots)
    assert len(drafts) == 24 and drafts["drafts"].sum() == 1
    assert list(ratings["stars"]) == ["1★", "2★", "3★", "4★", "5★"]
    assert list(ratings["ratings"]) == [0, 0, 0, 1, 0]
    assert list(speed["tokens_per_second"]) == [10.0, 10.0] and list(first["seconds"]) == [0.5, 0.5]


def test_a_writer_who_is_not_an_admin_sees_no_figures(sessions):
    accounts = Accounts.from_settings(Settings(auth=["alice:pw-a", "bob:pw-b"]))  # alice, the first, is the admin
    with sessions.begin() as session:
        add(session, NOW, tokens=50, seconds=5, first=0.5, stars=[5])
    monitor = Monitor(sessions, accounts)
    for user in ("bob", None):  # a writer, and a visitor not signed in
        with pytest.raises(NotAllowed, match="Only an admin can see the Monitor"):
            monitor.figures(7, user=user)
        outputs = show(monitor, user, 7, NOW)
        assert outputs[0] == {"__type__": "update", "value": ADMINS_ONLY, "visible": True}
        assert not outputs[1]["visible"]  # the plots' column stays hidden
        assert all(o["value"] is None and not o["visible"] for o in outputs[2:])
    assert monitor.figures(7, user="alice", now=NOW).versions[0]["rated"] == 1


def test_only_the_offered_spans_are_accepted(sessions):
    with pytest.raises(StudioError, match="last 1, 7, 30 days, not 365"):
        figures(sessions, days=365)


def test_the_figures_are_the_same_on_postgresql(sessions, postgres_url):
    """Bucketing happens in Python: both databases must give the same figures from the same rows."""
    on_postgres = storage.open_database(postgres_url)
    for target in (sessions, on_postgres):
        with target.begin() as session:
            registry.ensure_base_version(session, "tiny")
            add(session, NOW - H, tokens=50, seconds=5, first=0.5, stars=[4])
            add(session, NOW - 23 * H, tokens=90, seconds=3, first=0.2, stars=[2], rated_at=NOW - 30 * H)
            add(session, NOW, status="writing")
    assert figures(on_postgres) == figures(sessions)
    assert sum(r["drafts"] for r in figures(on_postgres).drafts_per_hour) == 3
