"""Tests for the storage package, each on its own fresh SQLite file."""

from __future__ import annotations

import json
import random
import threading
from datetime import datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, Column, Integer, MetaData, delete, func, inspect, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

import storage
from storage import (
    Base,
    Draft,
    InvalidRatingError,
    NotFoundError,
    Rating,
    StorageError,
    add_draft,
    current_revision,
    get_draft,
    get_rating,
    list_drafts,
    make_engine,
    migrate,
    open_database,
    rate_draft,
    registry,
    update_draft,
)
from storage.models import ModelVersion, RunStatus, TrainingRun, VersionStatus, compared_by_alembic


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/t.db"


@pytest.fixture
def factory(url):
    session_factory = open_database(url)
    yield session_factory
    session_factory.kw["bind"].dispose()


def engine_of(session_factory: sessionmaker[Session]):
    return session_factory.kw["bind"]


def draft_columns(**overrides):
    columns = dict(
        template_id="fairy_tale",
        template_name="Fairy tale",
        fields={"hero": "小红帽", "place": "森林", "mood": "eerie"},
        prompt="Write a fairy tale about 小红帽 in 森林.",
        model_input="<|user|>\nWrite a fairy tale about 小红帽 in 森林.<|assistant|>\n",
        settings={"temperature": 0.8, "top_p": 0.95, "max_new_tokens": 400},
        seed=2**62 + 7,  # needs BigInteger
        model_name="example-org/tiny-story-model",
        model_version="abc123",
        text="从前，有一个小女孩。\nShe walked into the forest.",
        new_tokens=42,
        first_token_seconds=0.25,
        generation_seconds=3.5,
    )
    columns.update(overrides)
    return columns


def new_draft(session_factory, **overrides) -> int:
    with session_factory.begin() as s:
        return add_draft(s, **draft_columns(**overrides)).id


def rating_rows(session_factory, draft_id=None) -> list[Rating]:
    with session_factory() as s:
        stmt = select(Rating)
        if draft_id is not None:
            stmt = stmt.where(Rating.draft_id == draft_id)
        return list(s.scalars(stmt))


# --- schema and migrations ------------------------------------------------

HEAD = "0013"


def test_migrate_creates_tables_and_is_idempotent(url):
    engine = make_engine(url)
    assert current_revision(engine) is None

    migrate(engine)
    assert current_revision(engine) == HEAD
    assert {"drafts", "ratings", "model_versions", "training_runs", "alembic_version"} <= set(
        inspect(engine).get_table_names())

    migrate(engine)  # already at head: nothing to do, nothing breaks
    assert current_revision(engine) == HEAD
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM alembic_version")) == 1
    engine.dispose()


def test_models_and_migrations_agree(factory):
    with engine_of(factory).connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_object": compared_by_alembic})
        assert compare_metadata(context, Base.metadata) == []

        # And the check really looks: a column missing from the migration shows up.
        drifted = MetaData()
        for table in Base.metadata.tables.values():
            table.to_metadata(drifted)
        drifted.tables["drafts"].append_column(Column("extra", Integer))
        diffs = compare_metadata(context, drifted)
        assert [d[0] for d in diffs] == ["add_column"]


def test_check_constraints_agree_with_the_models(factory):
    """compare_metadata skips CHECK constraints: compare what the migrations made with the models."""
    inspector = inspect(engine_of(factory))
    names = set()
    for table in Base.metadata.sorted_tables:
        in_models = {c.name: str(c.sqltext) for c in table.constraints if isinstance(c, CheckConstraint)}
        in_database = {c["name"]: c["sqltext"] for c in inspector.get_check_constraints(table.name)}
        assert in_database == in_models, table.name
        names |= set(in_models)
    assert {"ck_model_versions_status", "ck_training_runs_status"} <= names


def test_downgrade_removes_tables(url):
    from alembic import command

    from storage.db import _alembic_config

    engine = make_engine(url)
    migrate(engine)
    with engine.begin() as conn:
        command.downgrade(_alembic_config(conn), "base")
    assert current_revision(engine) is None
    assert not {"drafts", "ratings", "model_versions", "training_runs", "user_templates", "preferences", "draft_revisions"} & set(inspect(engine).get_table_names())
    engine.dispose()


def test_sqlite_pragmas(factory):
    with engine_of(factory).connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL: a confirmed commit survives a power cut


def test_make_engine_creates_missing_folder(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/a/b/studio.db")
    migrate(engine)
    assert (tmp_path / "a" / "b" / "studio.db").exists()
    engine.dispose()


def test_foreign_keys_are_enforced(factory):
    with pytest.raises(IntegrityError):
        with factory.begin() as s:
            s.add(Rating(draft_id=999, stars=3))
    assert rating_rows(factory) == []


def test_stars_check_constraint_is_in_the_database(factory):
    draft_id = new_draft(factory)
    # Bypasses rate_draft's validation: the database itself must refuse.
    with pytest.raises(IntegrityError):
        with factory.begin() as s:
            s.add(Rating(draft_id=draft_id, stars=9))
    assert rating_rows(factory) == []


def assert_statuses_are_checked(factory) -> None:
    """The database refuses a status outside VersionStatus / RunStatus, inserted or updated."""
    with factory.begin() as s:
        version_id = registry.ensure_base_version(s, "example-org/tiny-story-model").id
        run_id = registry.enqueue_run(s, "cli")[0].id
        assert registry.claim_run(s, run_id, "w:1", 1)
    bad_writes = {
        "new version": lambda s: s.add(ModelVersion(name="v1", base_model="m", status="bogus")),
        "new run": lambda s: s.add(TrainingRun(trigger="cli", status="bogus")),
        "version update": lambda s: registry.update_version(s, version_id, status="bogus"),
        "run update": lambda s: registry.update_run(s, run_id, "w:1", status="bogus"),
        # Plain SQL, no ORM in the way.
        "sql update": lambda s: s.execute(update(ModelVersion).values(status="bogus")),
    }
    for what, write in bad_writes.items():
        with pytest.raises(IntegrityError):
            with factory.begin() as s:
                write(s)
                s.flush()
        with factory() as s:
            assert [(v.name, v.status) for v in registry.list_versions(s)] == [("base", "promoted")], what
            assert [r.status for r in registry.list_runs(s)] == ["running"], what
    with factory() as s:
        # Rows read back as plain text, equal to the enum members.
        status = registry.get_version(s, version_id).status
        assert type(status) is str and status == VersionStatus.PROMOTED
        assert registry.get_run(s, run_id).status == RunStatus.RUNNING


def test_status_check_constraints_are_in_the_database(factory):
    assert_statuses_are_checked(factory)


def test_failed_transaction_leaves_nothing_behind(factory):
    draft_id = new_draft(factory)
    with pytest.raises(RuntimeError):
        with factory.begin() as s:
            rate_draft(s, draft_id, 4)  # insert runs inside a SAVEPOINT
            raise RuntimeError("boom")
    # The released savepoint must not have committed on its own.
    assert rating_rows(factory) == []


# --- drafts -----------------------------------------------------------------


def test_draft_round_trip_keeps_every_column(factory):
    columns = draft_columns(stopped=True, continuations=2, user="ann")
    with factory.begin() as s:
        draft_id = add_draft(s, **columns).id
    assert isinstance(draft_id, int)

    with factory() as s:
        draft = get_draft(s, draft_id)
        for name, value in columns.items():
            assert getattr(draft, name) == value, name
        assert draft.fields["hero"] == "小红帽"
        for stamp in (draft.created_at, draft.updated_at):
            assert stamp.tzinfo is not None
            assert stamp.utcoffset() == timedelta(0)
            assert abs(datetime.now(timezone.utc) - stamp) < timedelta(minutes=1)


def test_draft_defaults(factory):
    columns = draft_columns()
    del columns["first_token_seconds"], columns["generation_seconds"], columns["new_tokens"]
    with factory.begin() as s:
        draft = add_draft(s, **columns)
    with factory() as s:
        draft = get_draft(s, draft.id)
        assert draft.user == "local"
        assert draft.new_tokens == 0
        assert draft.stopped is False
        assert draft.continuations == 0
        assert draft.first_token_seconds is None
        assert draft.generation_seconds is None


def test_timestamps_in_other_zones_are_stored_as_utc(factory):
    tokyo = timezone(timedelta(hours=9))
    moment = datetime(2025, 3, 1, 9, 30, tzinfo=tokyo)
    draft_id = new_draft(factory, created_at=moment)
    with factory() as s:
        stored = get_draft(s, draft_id).created_at
    assert stored == moment
    assert stored.tzinfo == timezone.utc
    assert stored.hour == 0


def test_naive_timestamps_are_refused(factory):
    with pytest.raises(Exception, match="timezone-aware"):
        new_draft(factory, created_at=datetime(2025, 1, 1))


def test_get_draft_missing_or_other_user(factory):
    draft_id = new_draft(factory, user="ann")
    with factory() as s:
        assert get_draft(s, draft_id, user="ann").id == draft_id
        with pytest.raises(NotFoundError, match=f"^Draft {draft_id + 1} does not exist.$"):
            get_draft(s, draft_id + 1)
        with pytest.raises(NotFoundError, match=f"Draft {draft_id} does not exist."):
            get_draft(s, draft_id, user="bob")
        with pytest.raises(NotFoundError):
            get_draft(s, "1")  # type: ignore[arg-type]
    assert issubclass(NotFoundError, StorageError)


def test_update_draft_for_continue(factory):
    draft_id = new_draft(factory)
    with factory() as s:
        before = get_draft(s, draft_id).updated_at

    with factory.begin() as s:
        update_draft(
            s, draft_id, text="longer text", new_tokens=99, continuations=1, stopped=True,
            generation_seconds=7.0,
        )
    with factory() as s:
        draft = get_draft(s, draft_id)
        assert (draft.text, draft.new_tokens, draft.continuations, draft.stopped) == (
            "longer text", 99, 1, True,
        )
        assert draft.generation_seconds == 7.0
        assert draft.prompt == draft_columns()["prompt"]  # untouched
        assert draft.updated_at > before

    with factory.begin() as s:
        with pytest.raises(NotFoundError):
            update_draft(s, draft_id + 1, text="x")
        with pytest.raises(TypeError, match="txet"):
            update_draft(s, draft_id, txet="typo")


# --- ratings ------------------------------------------------------------------


def test_rate_then_rerate_updates_in_place(factory):
    draft_id = new_draft(factory)
    with factory.begin() as s:
        first = rate_draft(s, draft_id, 3, "fine")
        first_id, first_updated = first.id, first.updated_at

    with factory.begin() as s:
        second = rate_draft(s, draft_id, 5, "lovely on reread")

    rows = rating_rows(factory)
    assert len(rows) == 1
    (row,) = rows
    assert (row.id, row.draft_id, row.user, row.stars, row.comment) == (
        first_id, draft_id, "local", 5, "lovely on reread",
    )
    assert second.id == first_id
    assert row.updated_at > first_updated
    assert row.created_at.tzinfo is not None

    with factory() as s:
        assert get_rating(s, draft_id).stars == 5
        assert get_rating(s, draft_id, user="someone else") is None


def test_each_user_has_their_own_rating(factory):
    draft_id = new_draft(factory)
    with factory.begin() as s:
        rate_draft(s, draft_id, 2, user="ann")
        rate_draft(s, draft_id, 4, user="bob")
    rows = sorted(rating_rows(factory), key=lambda r: r.user)
    assert [(r.user, r.stars) for r in rows] == [("ann", 2), ("bob", 4)]


@pytest.mark.parametrize("stars", [0, 6, -1, "3", True, False, 2.5, 3.0, None])
def test_bad_stars_are_rejected_and_nothing_is_written(factory, stars):
    draft_id = new_draft(factory)
    with factory.begin() as s:
        with pytest.raises(InvalidRatingError, match="whole number of stars from 1 to 5"):
            rate_draft(s, draft_id, stars)
    assert rating_rows(factory) == []


def test_rating_message_is_readable():
    with pytest.raises(InvalidRatingError) as caught:
        rate_draft(None, 1, 7)  # type: ignore[arg-type]  # fails before using the session
    assert str(caught.value) == "A rating must be a whole number of stars from 1 to 5, not 7."
    assert isinstance(caught.value, StorageError)


def test_long_comment_is_rejected(factory):
    draft_id = new_draft(factory)
    with factory.begin() as s:
        rate_draft(s, draft_id, 4, "x" * 2000)  # the limit itself is fine
    with factory.begin() as s:
        with pytest.raises(InvalidRatingError, match="at most 2000 characters"):
            rate_draft(s, draft_id, 1, "x" * 2001)
    (row,) = rating_rows(factory)
    assert row.stars == 4


def test_rating_a_missing_draft(factory):
    with factory.begin() as s:
        with pytest.raises(NotFoundError, match="Draft 12345 does not exist."):
            rate_draft(s, 12345, 4)
    assert rating_rows(factory) == []


def test_deleting_a_draft_deletes_its_ratings(factory):
    orm_id, sql_id, kept_id = new_draft(factory), new_draft(factory), new_draft(factory)
    with factory.begin() as s:
        for draft_id in (orm_id, sql_id, kept_id):
            rate_draft(s, draft_id, 4, user="ann")
            rate_draft(s, draft_id, 2, user="bob")

    with factory.begin() as s:
        s.delete(get_draft(s, orm_id))
    with factory.begin() as s:
        # Plain SQL, no ORM cascade: ON DELETE CASCADE in the database does it.
        s.execute(delete(Draft).where(Draft.id == sql_id))

    assert {r.draft_id for r in rating_rows(factory)} == {kept_id}
    assert len(rating_rows(factory)) == 2


def test_insert_race_falls_back_to_update(factory, monkeypatch):
    """Another session inserted the rating after we looked: update it instead."""
    draft_id = new_draft(factory)
    with factory.begin() as s:
        rate_draft(s, draft_id, 1, "first")

    real_get_rating = storage.repository.get_rating
    calls = []

    def stale_first_read(session, draft_id, user="local"):
        calls.append(user)
        # The first read misses the row, as if the other insert committed just after it.
        return None if len(calls) == 1 else real_get_rating(session, draft_id, user)

    monkeypatch.setattr(storage.repository, "get_rating", stale_first_read)
    with factory.begin() as s:
        rating = rate_draft(s, draft_id, 5, "second")
        assert rating.stars == 5
    assert len(calls) == 2  # the fallback path ran

    (row,) = rating_rows(factory)
    assert (row.stars, row.comment) == (5, "second")


def test_concurrent_rating_leaves_one_row(factory):
    draft_id = new_draft(factory)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            start.wait()
            for _ in range(20):
                with factory.begin() as s:
                    rate_draft(s, draft_id, rng.randint(1, 5), f"from thread {seed}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    rows = rating_rows(factory, draft_id)
    assert len(rows) == 1
    assert 1 <= rows[0].stars <= 5
    assert rows[0].comment.startswith("from thread ")


# --- listing -----------------------------------------------------------------


@pytest.fixture
def listed(factory):
    """Five drafts created a minute apart, inserted out of time order."""
    base = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
    ids = {}
    for name, minutes, template, user in [
        ("c", 2, "mystery", "local"),
        ("a", 0, "fairy_tale", "local"),
        ("e", 4, "fairy_tale", "local"),
        ("b", 1, "mystery", "local"),
        ("d", 3, "fairy_tale", "ann"),
    ]:
        ids[name] = new_draft(
            factory,
            created_at=base + timedelta(minutes=minutes),
            template_id=template,
            user=user,
            text=f"draft {name}\nline two",
        )
    with factory.begin() as s:
        rate_draft(s, ids["a"], 5, "best")
        rate_draft(s, ids["b"], 2)
        rate_draft(s, ids["c"], 4)
        rate_draft(s, ids["d"], 3, user="ann")
        # A rating by someone other than the draft's author does not count.
        rate_draft(s, ids["e"], 5, user="ann")
    return factory, ids


def names(summaries, ids):
    by_id = {v: k for k, v in ids.items()}
    return [by_id[s.id] for s in summaries]


def test_list_drafts_newest_first_with_own_rating(listed):
    factory, ids = listed
    with factory() as s:
        summaries = list_drafts(s)
    assert names(summaries, ids) == ["e", "d", "c", "b", "a"]

    by_name = dict(zip(names(summaries, ids), summaries))
    assert by_name["a"].stars == 5 and by_name["a"].comment == "best"
    assert by_name["d"].stars == 3  # ann's own rating of ann's draft
    assert by_name["e"].stars is None and by_name["e"].comment == ""
    assert by_name["e"].template_id == "fairy_tale"
    assert by_name["e"].template_name == "Fairy tale"
    assert by_name["e"].model_version == "abc123"
    assert by_name["e"].new_tokens == 42
    assert by_name["e"].stopped is False
    assert by_name["e"].created_at == datetime(2025, 6, 1, 12, 4, tzinfo=timezone.utc)


def test_list_drafts_filters(listed):
    factory, ids = listed
    with factory() as s:
        assert names(list_drafts(s, template_id="mystery"), ids) == ["c", "b"]
        assert names(list_drafts(s, min_stars=4), ids) == ["c", "a"]
        assert names(list_drafts(s, min_stars=3, template_id="fairy_tale"), ids) == ["d", "a"]
        assert names(list_drafts(s, unrated_only=True), ids) == ["e"]
        assert names(list_drafts(s, user="ann"), ids) == ["d"]
        assert names(list_drafts(s, user="nobody"), ids) == []


def test_list_drafts_limit(listed):
    factory, ids = listed
    with factory() as s:
        assert names(list_drafts(s, limit=2), ids) == ["e", "d"]
        with pytest.raises(StorageError):
            list_drafts(s, limit=0)


def test_list_drafts_excerpt(factory):
    long_text = "第一行\n" + "x" * 200
    draft_id = new_draft(factory, text=long_text)
    new_draft(factory, text="short\r\nand sweet")
    with factory() as s:
        excerpts = {summary.id: summary.excerpt for summary in list_drafts(s)}
    assert excerpts[draft_id] == ("第一行 " + "x" * 200)[:120]
    assert len(excerpts[draft_id]) == 120
    assert "short and sweet" in excerpts.values()


# --- PostgreSQL (optional) ---------------------------------------------------


def test_postgres_round_trip(postgres_url):
    engine = make_engine(postgres_url)
    Base.metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    try:
        migrate(engine)
        assert current_revision(engine) == HEAD
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"include_object": compared_by_alembic})
            assert compare_metadata(context, Base.metadata) == []

        factory = sessionmaker(engine, expire_on_commit=False)
        columns = draft_columns()
        draft_id = new_draft(factory)
        with factory.begin() as s:
            rate_draft(s, draft_id, 2)
            rate_draft(s, draft_id, 4, "again")
        with factory() as s:
            draft = get_draft(s, draft_id)
            for name, value in columns.items():
                assert getattr(draft, name) == value, name
            assert draft.created_at.tzinfo is not None
            assert s.scalar(select(func.count()).select_from(Rating)) == 1
            assert get_rating(s, draft_id).stars == 4
            assert [d.stars for d in list_drafts(s)] == [4]
    finally:
        Base.metadata.drop_all(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        engine.dispose()


def test_postgres_status_check_constraints(postgres_url):
    engine = make_engine(postgres_url)
    try:
        migrate(engine)
        assert_statuses_are_checked(sessionmaker(engine, expire_on_commit=False))
    finally:
        engine.dispose()


def test_two_processes_queueing_at_once_on_postgres_get_one_run(postgres_url):
    """Both look, both see no open run, both insert: the schema lets one through, and the other
    is handed that run instead."""
    import threading

    engine = make_engine(postgres_url)
    try:
        migrate(engine)
        factory = sessionmaker(engine, expire_on_commit=False)
        with factory.begin() as s:
            s.execute(delete(TrainingRun))
        first = factory()
        first.begin()
        mine, created = registry.enqueue_run(first, "button")  # inserted, not yet committed
        assert created
        other = {}

        def second_process():
            with factory.begin() as s:
                run, made = registry.enqueue_run(s, "auto")  # sees no open run yet, inserts, waits on the index
                other.update(id=run.id, created=made)

        thread = threading.Thread(target=second_process)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive()  # held at the index until the first transaction ends
        first.commit()
        first.close()
        thread.join(10)
        assert other == {"id": mine.id, "created": False}
        with factory() as s:
            assert [(r.id, r.status) for r in registry.list_runs(s)] == [(mine.id, "queued")]
        with factory.begin() as s:
            s.execute(delete(TrainingRun))
    finally:
        engine.dispose()


def test_a_second_open_run_is_refused_by_the_schema(factory):
    with factory.begin() as s:
        registry.enqueue_run(s, "cli")
    with pytest.raises(IntegrityError):
        with factory.begin() as s:
            s.add(TrainingRun(trigger="cli", status="queued"))
    with factory.begin() as s:
        run = registry.open_run(s)
        assert registry.end_run(s, run.id, "succeeded", message="Done.")
        s.add(TrainingRun(trigger="cli", status="queued"))  # once the first ends, a new one may open


def test_upgrading_a_database_with_data_keeps_every_draft_and_rating(url):
    """Migrations after 0002 run on a database that already holds a rated draft."""
    from alembic import command

    from storage.db import _alembic_config

    engine = make_engine(url)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0002")
        conn.exec_driver_sql(
            "INSERT INTO drafts (id, created_at, updated_at, user, template_id, template_name, fields, prompt,"
            " model_input, settings, seed, model_name, model_version, text, new_tokens, stopped, continuations)"
            " VALUES (1, '2026-01-01', '2026-01-01', 'local', 'poetry', 'Poem', '{}', 'p', 'p', '{}', 1, 'm',"
            " 'base', 'a poem', 3, 0, 0)")
        conn.exec_driver_sql(
            "INSERT INTO ratings (id, draft_id, user, stars, comment, created_at, updated_at)"
            " VALUES (1, 1, 'local', 5, 'keep', '2026-01-01', '2026-01-01')")
    migrate(engine)
    assert current_revision(engine) == HEAD
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT stars, comment FROM ratings").fetchall() == [(5, "keep")]
        assert conn.exec_driver_sql("SELECT text, flagged FROM drafts").fetchall() == [("a poem", 0)]
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # back on afterwards
    engine.dispose()


def test_upgrading_marks_which_earlier_drafts_the_model_ended(url):
    """0013 fills in ended from what each draft recorded: done, not stopped, and short of its token
    limit (a draft that reached it was cut); a continued draft counts as ended unless stopped."""
    from alembic import command

    from storage.db import _alembic_config

    drafts = [  # (status, stopped, new tokens, limit, continuations) -> ended
        ("done", 0, 40, 96, 0, True), ("done", 0, 96, 96, 0, False), ("done", 1, 10, 96, 0, False),
        ("writing", 0, 0, 96, 0, False), ("done", 0, 200, 96, 1, True), ("done", 0, 5, None, 0, False)]
    engine = make_engine(url)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0012")
        for n, (status, stopped, tokens, limit, continued, _) in enumerate(drafts, 1):
            conn.execute(text(
                "INSERT INTO drafts (id, created_at, updated_at, user, template_id, template_name, fields, prompt,"
                " model_input, settings, seed, model_name, model_version, text, new_tokens, stopped, continuations,"
                " status) VALUES (:id, '2026-01-01', '2026-01-01', 'local', 'poetry', 'Poem', '{}', 'p', 'p', :settings,"
                " 1, 'm', 'base', 'a poem', :tokens, :stopped, :continued, :status)"),
                dict(id=n, settings=json.dumps({"max_new_tokens": limit} if limit else {}), tokens=tokens,
                     stopped=stopped, continued=continued, status=status))
    migrate(engine)
    with engine.connect() as conn:
        ended = [bool(e) for (e,) in conn.exec_driver_sql("SELECT ended FROM drafts ORDER BY id")]
    assert ended == [row[-1] for row in drafts]
    engine.dispose()


def insert_versions_and_runs(conn, version_statuses, run_statuses) -> None:
    """Rows as migration 0007 stored them: the first version is the active base, the rest its children."""
    for n, status in enumerate(version_statuses, 1):
        conn.execute(text(
            "INSERT INTO model_versions (id, name, parent_id, base_model, adapter_path, status, is_active,"
            " train_draft_ids, held_out_draft_ids, hyperparameters, loss_curve, gate, created_at, updated_at)"
            " VALUES (:id, :name, :parent, 'm', :adapter, :status, :active, '[]', '[]', '{}', '[]', '{}',"
            " '2026-01-01', '2026-01-01')"),
            dict(id=n, name=f"v{n}", parent=None if n == 1 else 1, adapter=None if n == 1 else f"/a/{n}",
                 status=status, active=n == 1))
    for n, status in enumerate(run_statuses, 1):
        conn.execute(text(
            "INSERT INTO training_runs (id, status, \"trigger\", version_id, progress, message, error, worker,"
            " created_at) VALUES (:id, :status, 'cli', :version, 0.5, '', '', '', '2026-01-01')"),
            dict(id=n, status=status, version=n))


def test_upgrading_to_status_checks_keeps_versions_and_runs(url):
    """0008 rebuilds both tables on SQLite: every row, foreign key and the one-active index survive."""
    from alembic import command

    from storage.db import _alembic_config

    engine = make_engine(url)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0007")
        insert_versions_and_runs(conn, ["promoted", "retired", "rejected", "training", "failed"],
                                 ["succeeded", "failed", "running", "queued"])
    with engine.connect() as conn:
        before = [conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY id").fetchall()
                  for table in ("model_versions", "training_runs")]
    migrate(engine, "0008")
    with engine.connect() as conn:
        after = [conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY id").fetchall()
                 for table in ("model_versions", "training_runs")]
        assert after == before
        # Every status the enums allow was there to carry over.
        assert {row.status for row in after[0]} == set(VersionStatus)
        assert {row.status for row in after[1]} == set(RunStatus)
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1

    factory = sessionmaker(engine, expire_on_commit=False)
    with factory.begin() as s:
        registry.activate(s, 3)  # a rejected version may still serve: it is promoted, the base retires
    with factory() as s:
        assert [(v.id, v.status, v.is_active) for v in registry.list_versions(s) if v.id in (1, 3)] == [
            (3, "promoted", True), (1, "retired", False)]
    with pytest.raises(IntegrityError):  # still at most one active version
        with factory.begin() as s:
            s.execute(update(ModelVersion).values(is_active=True))
    # Core updates name only the columns they set: later migrations add columns the ORM model has.
    with pytest.raises(IntegrityError):  # the foreign keys came through the rebuild
        with factory.begin() as s:
            s.execute(update(TrainingRun).where(TrainingRun.id == 1).values(version_id=99))
    with pytest.raises(IntegrityError):
        with factory.begin() as s:
            s.execute(update(TrainingRun).where(TrainingRun.id == 1).values(status="bogus"))
    engine.dispose()


def test_upgrading_with_two_open_runs_keeps_the_older_and_fails_the_other_saying_why(url):
    engine = make_engine(url)
    migrate(engine, "0008")
    with engine.begin() as conn:
        insert_versions_and_runs(conn, ["promoted", "training", "training"], ["succeeded", "running", "queued"])
    migrate(engine)
    assert current_revision(engine) == HEAD
    with sessionmaker(engine)() as s:
        runs = {r.id: r for r in registry.list_runs(s)}
        assert [runs[i].status for i in (1, 2, 3)] == ["succeeded", "running", "failed"]
        assert "Queued twice" in runs[3].error
    engine.dispose()


def test_upgrade_refuses_a_status_outside_the_enum_and_changes_nothing(url):
    from alembic import command

    from storage.db import _alembic_config

    engine = make_engine(url)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0007")
        insert_versions_and_runs(conn, ["promoted", "archived"], ["succeeded"])
    with pytest.raises(IntegrityError):
        migrate(engine)
    assert current_revision(engine) == "0007"
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT name, status FROM model_versions ORDER BY id").fetchall() == [
            ("v1", "promoted"), ("v2", "archived")]
        assert conn.exec_driver_sql("SELECT status FROM training_runs").fetchall() == [("succeeded",)]
    assert not inspect(engine).get_check_constraints("model_versions")
    engine.dispose()
