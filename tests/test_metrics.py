"""What an operator sees, through the app as `python app.py` starts it: /metrics counts drafts,
tokens, ratings, picks, waits and training outcomes as they happen; /healthz answers; /readyz
names each part and says 503 when one is down; a token guards /metrics when writers sign in;
--metrics off records and serves nothing."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from gradio_client import Client
from tests.waiting import wait_for
from prometheus_client.parser import text_string_to_metric_families



def get(url: str, token: str = "") -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a /metrics page by (name, labels)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(page: dict, name: str, **labels: str) -> float:
    return page.get((name, frozenset(labels.items())), 0.0)


def test_a_draft_written_rated_and_picked_through_the_api_shows_in_the_metrics(launch):
    studio, url = launch()
    client = Client(url, verbose=False)
    before = samples(get(f"{url}/metrics")[1])
    assert value(before, "studio_serving_version_info", version="base", base_model=studio.settings.model,
                 quantize="none") == 1
    assert value(before, "studio_queue_capacity") == studio.settings.queue_size
    assert value(before, "studio_drafts_started_total", template="fantasy", version="base") == 0

    draft = client.predict("fantasy", {}, {"max_new_tokens": 12, "seed": 3}, api_name="/generate")
    client.predict(draft["draft_id"], 4, "", api_name="/rate")
    other = client.predict("fantasy", {}, {"max_new_tokens": 5, "seed": 4}, api_name="/generate")
    studio.drafts.prefer(draft["draft_id"], [other["draft_id"]], user="local")

    status, text = get(f"{url}/metrics")
    page = samples(text)
    assert status == 200
    assert value(page, "studio_drafts_started_total", template="fantasy", version="base") == 2
    assert value(page, "studio_drafts_ended_total", template="fantasy", version="base", outcome="finished") == 2
    assert value(page, "studio_tokens_generated_total", version="base") == 17
    assert value(page, "studio_time_to_first_token_seconds_count") == 2
    assert 1 <= value(page, "studio_stream_gap_seconds_count") <= 15  # between chunks (a chunk may hold tokens)
    assert value(page, "studio_decode_batch_size_count") >= 15  # one step per token after the first
    assert value(page, "studio_ratings_total", stars="4") == 1
    assert value(page, "studio_picks_total") == 1
    assert value(page, "studio_ratings_since_promotion") == 1
    assert value(page, "studio_db_commit_seconds_count") > value(before, "studio_db_commit_seconds_count")
    assert value(page, "studio_model_load_seconds_count") == 1
    assert value(page, "studio_drafts_streaming") == 0


def test_a_stopped_draft_counts_as_stopped_and_a_waiting_request_as_waiting(launch, slower_model_dir):
    studio, url = launch(model=str(slower_model_dir), concurrency=1, queue_size=1)
    client = Client(url, verbose=False)
    running = client.submit("mystery", {}, {"max_new_tokens": 1500}, api_name="/generate")
    assert wait_for(lambda: len(running.outputs()) >= 1, 30)
    waiting = client.submit("poetry", {}, {"max_new_tokens": 4}, api_name="/generate")
    assert wait_for(lambda: value(samples(get(f"{url}/metrics")[1]), "studio_drafts_waiting") == 1, 30)
    page = samples(get(f"{url}/metrics")[1])
    assert value(page, "studio_queue_capacity") == 1 and value(page, "studio_drafts_streaming") == 1
    running.cancel()
    assert waiting.result()["done"]
    page = samples(get(f"{url}/metrics")[1])
    assert value(page, "studio_drafts_ended_total", template="mystery", version="base", outcome="stopped") == 1
    assert value(page, "studio_drafts_ended_total", template="poetry", version="base", outcome="finished") == 1
    assert value(page, "studio_drafts_waiting") == 0


def test_training_outcomes_come_from_the_database(launch):
    from studio.learning.jobs import execute_run

    studio, url = launch()
    run_id, _ = studio.versions.train("cli", user="local")
    studio.jobs.close()  # this test carries out the run itself, in this process
    with pytest.raises(Exception, match="Rate"):  # nothing rated: nothing to learn, nothing broken
        execute_run(studio.sessions, studio.settings, studio.versions.training_config(), run_id)
    page = samples(get(f"{url}/metrics")[1])
    assert value(page, "studio_training_runs_total", outcome="nothing_to_learn") == 1
    assert value(page, "studio_training_runs_total", outcome="failed") == 0


def test_health_answers_and_readiness_names_the_part_that_is_down(launch):
    studio, url = launch()
    assert get(f"{url}/healthz") == (200, '{"status":"ok"}')
    status, text = get(f"{url}/readyz")
    assert status == 200, text
    for part in ("database", "model", "batch_engine", "training_runner"):
        assert f'"{part}":{{"ready":true' in text
    studio.jobs.close()  # the runner that starts queued training runs stops
    status, text = get(f"{url}/readyz")
    assert status == 503 and '"training_runner":{"ready":false' in text and '"ready":false,"parts"' in text


def test_with_accounts_metrics_need_the_token(launch):
    _, url = launch(auth=["alice:pw-a"], metrics_token="s3cret")
    assert get(f"{url}/metrics")[0] == 401
    assert get(f"{url}/metrics", token="wrong")[0] == 401
    status, text = get(f"{url}/metrics", token="s3cret")
    assert status == 200 and "studio_drafts_started_total" in text
    assert get(f"{url}/healthz")[0] == 200  # a load balancer needs no token

    _, url = launch(auth=["alice:pw-a"])
    status, text = get(f"{url}/metrics")
    assert status == 403 and "--metrics-token" in text


def test_readiness_tells_anyone_which_part_is_down_and_only_the_operator_what_it_is_doing(launch, monkeypatch):
    """A broken database's error names its host and user: a load balancer needs ready or not, and
    which part (on 5b3b0f3 anyone read the details)."""
    from studio.core import health

    studio, url = launch(auth=["alice:pw-a"], metrics_token="s3cret")

    class Refused:
        def __enter__(self):
            raise OSError('connection to server at "db.internal" (10.0.0.7), port 5432 failed for user "studio"')

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(studio, "sessions", lambda: Refused())
    status, text = get(f"{url}/readyz")
    assert status == 503 and '"database":{"ready":false}' in text
    assert "db.internal" not in text and "studio" not in text.replace("studio_", "") and "detail" not in text
    status, text = get(f"{url}/readyz", token="s3cret")
    assert status == 503 and "db.internal" in text and '"model":{"ready":true,"detail":"base by transformers on cpu"' in text
    assert health.readiness(studio)["database"][0] is False


def test_metrics_off_records_and_serves_nothing(launch):
    studio, url = launch(metrics="off")
    Client(url, verbose=False).predict("fantasy", {}, {"max_new_tokens": 4}, api_name="/generate")
    assert get(f"{url}/metrics")[0] == 404
    assert samples(studio.metrics.exposition()[0].decode()) == {}
