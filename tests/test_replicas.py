"""Two apps on one PostgreSQL database and one data dir behave as one studio: drafts and ratings
from either show in both, exactly one of them runs a queued training run, and a promotion or a
rollback made in one is what the other serves next."""

from __future__ import annotations

import pytest
from gradio_client import Client

from storage import registry
from studio.learning import jobs
from tests.drafts import seed_rated_drafts
from tests.test_kto import songs_and_dirges
from tests.waiting import wait_for


@pytest.mark.e2e
def test_two_replicas_on_one_database_behave_as_one_studio(launch, postgres_url, tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "POLL_SECONDS", 0.2)  # the test waits on the runners' looks, not on a clock
    shared = str(tmp_path / "shared-data")
    a, url_a = launch(db=postgres_url, data_dir=shared, auto_train_after=0)
    b, url_b = launch(db=postgres_url, data_dir=shared, auto_train_after=0)
    spawned, ticks = [], {"a": 0, "b": 0}
    for replica in (a, b):  # count the training processes each runner starts, and its looks at the queue
        name = "a" if replica is a else "b"

        def spawn(run_id, start=replica.jobs._spawn, name=name):
            spawned.append(name)
            return start(run_id)

        def tick(look=replica.jobs._tick, name=name):
            look()
            ticks[name] += 1

        replica.jobs._spawn, replica.jobs._tick = spawn, tick

    client_a, client_b = Client(url_a, verbose=False), Client(url_b, verbose=False)
    from_a = client_a.predict("poetry", {}, {"max_new_tokens": 5}, api_name="/generate")["draft_id"]
    from_b = client_b.predict("poetry", {}, {"max_new_tokens": 5}, api_name="/generate")["draft_id"]
    client_b.predict(from_a, 5, "rated in b", api_name="/rate")
    client_a.predict(from_b, 2, "rated in a", api_name="/rate")
    for replica in (a, b):
        stars = {d.id: d.stars for d in replica.drafts.list(user="local")}
        assert stars[from_a] == 5 and stars[from_b] == 2

    songs_and_dirges(a, 20)
    run_id, _ = b.versions.train("button", user="local")
    finished = wait_for(lambda: [r for r in a.versions.runs() if r["id"] == run_id and r["status"] != "running"
                                 and r["status"] != "queued"], seconds=300, interval=0.5)
    assert finished and finished[0]["status"] == "succeeded", finished
    seen = dict(ticks)
    assert wait_for(lambda: all(ticks[n] >= seen[n] + 2 for n in ticks), seconds=60), ticks
    assert len(spawned) == 1, spawned  # two more looks of both runners: neither started it again

    with a.sessions() as session:
        version = registry.get_run(session, run_id).version_id
        name = registry.get_version(session, version).name
    a.versions.promote(version, user="local")
    draft = client_b.predict("poetry", {}, {"max_new_tokens": 4}, api_name="/generate")
    assert b.drafts.get(draft["draft_id"], user="local")["model_version"] == name  # b serves a's promotion
    b.versions.rollback(user="local")
    draft = client_a.predict("poetry", {}, {"max_new_tokens": 4}, api_name="/generate")
    assert a.drafts.get(draft["draft_id"], user="local")["model_version"] == "base"  # and a serves b's rollback
    written_in_b = seed_rated_drafts(b, 1, start=900)
    assert written_in_b[0] in {d.id for d in a.drafts.list(user="local")}


def test_of_two_runners_that_both_see_a_queued_run_only_one_starts_a_process(tmp_path, tiny_model_dir):
    """Both look before either child has claimed it (children take seconds to start): the runner
    claims first, so the second finds it taken rather than starting a child that fails it."""
    import subprocess

    from studio.config import Settings
    from studio.core.studio import Studio

    settings = Settings(model=str(tiny_model_dir), data_dir=str(tmp_path), auto_train_after=0)
    a, b = Studio(settings), Studio(settings)
    started = []

    def spawn(run_id):  # a process that has not claimed anything yet, as a child still importing torch
        started.append(subprocess.Popen(["sleep", "30"]))
        return started[-1], tmp_path / "run.log"

    a.jobs._spawn = b.jobs._spawn = spawn
    run_id, _ = a.versions.train("button", user="local")
    try:
        a.jobs._tick()
        b.jobs._tick()
        assert len(started) == 1
        assert [r["status"] for r in b.versions.runs() if r["id"] == run_id] == ["running"]
    finally:
        for process in started:
            process.kill()
            process.wait()
