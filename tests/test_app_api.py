"""The launched app driven through gradio_client, as a script or another program would use it."""

from __future__ import annotations

import threading

import pytest
from gradio_client import Client
from gradio_client.utils import Status

from studio.config import Settings
from tests.waiting import wait_for


@pytest.fixture
def settings(tmp_path, slower_model_dir):
    # A stream must still be running when the test cancels it, as a writer's would be.
    return Settings(model=str(slower_model_dir), data_dir=str(tmp_path / "data"))


@pytest.fixture
def app(running_app):
    studio, url = running_app
    return studio, Client(url, verbose=False)


def test_api_names_are_templates_generate_and_rate(app):
    _, client = app
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert names == {"/templates", "/generate", "/rate"}


def test_a_script_can_list_templates_stream_a_draft_and_rate_it(app):
    studio, client = app
    templates = client.predict(api_name="/templates")
    assert {"fantasy", "chinese_poem"} <= {t["id"] for t in templates}

    job = client.submit("fantasy", {"tone": "wry"}, {"max_new_tokens": 20, "seed": 9}, api_name="/generate")
    messages = list(job)
    final = job.outputs()[-1]
    assert len(messages) > 2  # streamed: several partial texts before the last
    assert final["done"] and final["draft_id"] and final["new_tokens"] == 20 and final["seed"] == 9
    assert studio.drafts.get(final["draft_id"], user="local")["text"] == final["text"]

    assert client.predict(final["draft_id"], 4, "good start", api_name="/rate") == {
        "draft_id": final["draft_id"], "stars": 4, "comment": "good start", "training_run": None}
    assert studio.drafts.get(final["draft_id"], user="local")["stars"] == 4


@pytest.mark.parametrize("args, api_name, message", [
    ((1, 9, ""), "/rate", "from 1 to 5, not 9"),
    ((42, 3, ""), "/rate", "Draft 42 does not exist"),
    (("westerns", {}, {}), "/generate", "Unknown template 'westerns'"),
    (("fantasy", {"premise": " "}, {}), "/generate", "“Premise” is required"),
    (("fantasy", {}, {"max_new_tokens": 5000}), "/generate", "max_new_tokens must be between"),
])
def test_bad_calls_get_the_readable_message(app, args, api_name, message, capfd):
    studio, client = app
    if api_name == "/rate" and args[0] == 1:
        job = client.submit("poetry", {}, {"max_new_tokens": 4}, api_name="/generate")
        job.result()
    capfd.readouterr()
    with pytest.raises(Exception, match=message):
        client.predict(*args, api_name=api_name)
    assert "Traceback" not in capfd.readouterr().err  # a writer's mistake is no fault for the operator's log


def test_calls_at_once_from_one_client_each_get_a_saved_draft(app):
    studio, client = app
    jobs = [client.submit("poetry", {}, {"max_new_tokens": 12, "seed": i}, api_name="/generate") for i in range(4)]
    results = [job.result() for job in jobs]
    assert all(r["done"] and r["draft_id"] and r["text"] and not r["stopped"] for r in results), results
    assert len({r["draft_id"] for r in results}) == 4
    assert sorted(d.id for d in studio.drafts.list(user="local")) == sorted(r["draft_id"] for r in results)


def test_a_cancelled_api_call_stops_generating_and_keeps_the_draft(app):
    studio, client = app
    job = client.submit("mystery", {}, {"max_new_tokens": 1500}, api_name="/generate")
    assert wait_for(lambda: len(job.outputs()) >= 3)
    job.cancel()
    # The draft leaves the batch (whose thread ends once idle), and what was written is saved as stopped.
    engine = studio.pool.load().engine
    assert engine is not None  # batching is on by default: the draft ran in the batch engine
    assert wait_for(lambda: len(studio.drafts.active) == 0)
    assert wait_for(lambda: len(engine) == 0 and not any(t.name == "batch-engine" for t in threading.enumerate()))
    drafts = studio.drafts.list(user="local")
    assert len(drafts) == 1 and drafts[0].stopped and drafts[0].new_tokens < 1500


def test_a_full_queue_tells_the_writer_to_try_again(settings):
    from studio.core.studio import Studio
    from studio.ui.page import build_ui
    from tests.conftest import _free_port

    settings.queue_size = 1
    studio = Studio(settings)
    demo = build_ui(studio)
    demo.queue(default_concurrency_limit=1, max_size=settings.queue_size)
    demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        running = client.submit("mystery", {}, {"max_new_tokens": 1500}, api_name="/generate")
        assert wait_for(lambda: len(running.outputs()) >= 1)
        waiting = client.submit("mystery", {}, {"max_new_tokens": 8}, api_name="/generate")
        assert wait_for(lambda: waiting.status().code == Status.IN_QUEUE)  # it holds the one place
        with pytest.raises(Exception, match="Queue is full! Please try again"):
            client.predict("poetry", {}, {"max_new_tokens": 8}, api_name="/generate")
        running.cancel()
        assert waiting.result()["done"]
    finally:
        demo.close()


def test_many_writers_rating_at_once_through_the_api_lose_and_duplicate_nothing(app):
    studio, client = app
    ids = [client.predict("poetry", {}, {"max_new_tokens": 3}, api_name="/generate")["draft_id"] for _ in range(4)]
    errors: list[BaseException] = []

    def rate_all(worker: int) -> None:
        own = Client(client.src, verbose=False)
        try:
            for round_ in range(5):
                for draft_id in ids:
                    own.predict(draft_id, 1 + (worker + round_) % 5, f"w{worker}", api_name="/rate")
        except BaseException as exc:  # collected: a failure in a thread must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=rate_all, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with studio.sessions() as session:
        from sqlalchemy import func, select

        from storage.models import Rating

        assert session.scalar(select(func.count()).select_from(Rating)) == len(ids)  # one per draft
    assert all(studio.drafts.get(i, user="local")["stars"] in range(1, 6) for i in ids)
