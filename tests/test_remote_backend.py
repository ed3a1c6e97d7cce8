"""--backend openai against a real OpenAI-compatible server: `transformers serve` on a tiny local model."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request

import pytest

from studio.config import Settings
from studio.core.studio import Studio
from studio.errors import GenerationError
from tests.conftest import _free_port

SERVE = "import sys; from transformers.cli.transformers import main; sys.argv[0] = 'transformers'; main()"


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, "serve", str(tiny_model_dir), "--host", "127.0.0.1", "--port", str(port),
         "--device", "cpu"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/models", timeout=1).read()
            break
        except OSError:
            if process.poll() is not None:
                pytest.fail("transformers serve exited before it was ready")
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("transformers serve did not come up within 90 s")
    yield url
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture
def remote_studio(server, tiny_model_dir, tmp_path):
    return Studio(Settings(model=str(tiny_model_dir), data_dir=str(tmp_path), backend="openai", base_url=server))


def test_a_draft_streams_from_the_server_and_is_saved(remote_studio, tiny_model_dir):
    drafting = remote_studio.drafts.write("fantasy", {"tone": "wry"}, {"max_new_tokens": 24, "seed": 3}, user="local")
    chunks = list(drafting)
    assert len(chunks) > 1
    record = remote_studio.drafts.get(drafting.draft_id, user="local")
    assert record["text"] == "".join(chunks) and record["stopped"] is False
    assert record["new_tokens"] == 24 and drafting.stream.result.ended is False  # the server said: cut at the limit
    assert record["model_version"] == str(tiny_model_dir)
    assert remote_studio.pool.load().model is None  # only the tokenizer is loaded here: the server generates


def test_stop_ends_a_remote_stream_and_keeps_the_draft(remote_studio):
    drafting = remote_studio.drafts.write("mystery", {}, {"max_new_tokens": 1500}, key="tab", user="local")
    for n, _ in enumerate(drafting):
        if n == 3:
            remote_studio.drafts.stop("tab")
    record = remote_studio.drafts.get(drafting.draft_id, user="local")
    assert record["stopped"] and record["new_tokens"] < 1500


def test_an_unreachable_server_gets_a_clear_error(tiny_model_dir, tmp_path):
    studio = Studio(Settings(model=str(tiny_model_dir), data_dir=str(tmp_path), backend="openai",
                             base_url=f"http://127.0.0.1:{_free_port()}/v1"))
    with pytest.raises(GenerationError, match="Cannot reach the generation server"):
        list(studio.drafts.write("fantasy", {}, {"max_new_tokens": 4}, user="local"))
    assert studio.drafts.list(user="local") == []


def test_backend_options_are_checked():
    with pytest.raises(ValueError, match="needs --base-url"):
        Settings(backend="openai")
    with pytest.raises(ValueError, match="local or openai"):
        Settings(backend="grpc")
