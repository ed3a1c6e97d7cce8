"""kill -9 of the running app: committed drafts and ratings survive, and the next start is clean."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client

from storage import revisions
from studio.config import Settings
from studio.core.drafts import INTERRUPTED_AFTER_SECONDS
from studio.core.studio import Studio
from studio.serving.drafting import CHECKPOINT_SECONDS
from tests.conftest import _free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent


def _start_app(model: Path, data_dir: Path, port: int) -> subprocess.Popen:
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "app.log"  # its tail goes into the failure message
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "app.py", "--model", str(model), "--data-dir", str(data_dir), "--port", str(port)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
            return process
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"the app exited ({process.returncode}) while starting:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
    process.kill()
    pytest.fail("the app did not start within 90 s")


def test_kill_9_mid_stream_loses_at_most_seconds_of_the_draft_and_the_app_restarts(slower_model_dir, tmp_path):
    data_dir, port = tmp_path / "data", _free_port()
    app = _start_app(slower_model_dir, data_dir, port)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        kept = client.predict("poetry", {}, {"max_new_tokens": 8}, api_name="/generate")
        client.predict(kept["draft_id"], 5, "keep me", api_name="/rate")
        job = client.submit("mystery", {}, {"max_new_tokens": 1500}, api_name="/generate")
        deadline = time.monotonic() + 120
        while len(job.outputs()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(job.outputs()) >= 3, "the draft did not start streaming"
        time.sleep(2 * CHECKPOINT_SECONDS + 1)  # streaming for a while: at least one checkpoint saved
        streamed = job.outputs()[-1]["text"]
        os.kill(app.pid, signal.SIGKILL)  # mid-stream
        app.wait()
    finally:
        if app.poll() is None:
            app.kill()
    assert not job.outputs()[-1]["done"]  # it really was killed mid-stream

    app = _start_app(slower_model_dir, data_dir, port)  # the next start migrates, recovers, serves
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        again = client.predict("poetry", {}, {"max_new_tokens": 4}, api_name="/generate")
        assert again["done"] and again["draft_id"]
        studio = Studio(Settings(model=str(slower_model_dir), data_dir=str(data_dir)))
        deadline = time.monotonic() + INTERRUPTED_AFTER_SECONDS + 30  # the app marks it once it is quiet long enough
        while True:
            (cut,) = [d for d in studio.drafts.list(user="local") if d.template_id == "mystery"]
            record = studio.drafts.get(cut.id, user="local")
            if record["status"] == "interrupted" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        app.terminate()
        app.wait(timeout=30)
    assert record["status"] == "interrupted" and record["stopped"]
    assert record["text"] and streamed.startswith(record["text"])  # what was streamed, to the last checkpoint
    assert len(record["text"]) > len(streamed) / 3  # at most the last few seconds are lost
    with studio.sessions() as session:
        assert [r.reason for r in revisions.list_revisions(session, cut.id)] == ["interrupted"]
    record = studio.drafts.get(kept["draft_id"], user="local")
    assert (record["stars"], record["comment"], record["text"]) == (5, "keep me", kept["text"])
    assert studio.pool.load().version == "base"


def test_kill_9_of_the_app_during_training_keeps_ratings_and_a_servable_version(slower_model_dir, tmp_path):
    from tests.drafts import seed_rated_drafts

    data_dir, port = tmp_path / "data", _free_port()
    app = _start_app(slower_model_dir, data_dir, port)
    outside = Studio(Settings(model=str(slower_model_dir), data_dir=str(data_dir)))
    seed_rated_drafts(outside, 10)
    run_id, _ = outside.versions.train("button", user="local")  # the app's runner starts it in a child process
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and outside.versions.runs()[0]["status"] == "queued":
            time.sleep(0.2)
        assert outside.versions.runs()[0]["status"] == "running"
        os.kill(app.pid, signal.SIGKILL)
        app.wait()
        app = _start_app(slower_model_dir, data_dir, port)
        # The training child outlived the app; the restarted app lets it finish rather than run it again.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and outside.versions.runs()[0]["status"] == "running":
            time.sleep(0.5)
        run = outside.versions.runs()[0]
        assert run["id"] == run_id and run["status"] in ("succeeded", "failed") and len(outside.versions.runs()) == 1
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        assert client.predict("poetry", {}, {"max_new_tokens": 4}, api_name="/generate")["done"]
    finally:
        app.terminate()
        app.wait(timeout=30)
    assert [d.stars for d in outside.drafts.list(min_stars=5, user="local")] == [5] * 10
    active = [v for v in outside.versions.list() if v["active"]]
    assert len(active) == 1 and active[0]["name"] in ("base", "v1")
