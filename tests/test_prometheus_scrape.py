"""A real Prometheus (Debian's binary) scrapes a running studio: a draft written through the API
shows in Prometheus' own query API, and so does the serving version. No mocks."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request

import pytest
from gradio_client import Client

from tests.conftest import _free_port
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

PROMETHEUS = shutil.which("prometheus")


def query(port: int, expression: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)["data"]["result"]
    except OSError:  # not listening yet
        return []


@pytest.fixture
def prometheus(tmp_path):
    """Start Prometheus scraping the given studio address every second: returns its port."""
    assert PROMETHEUS, "prometheus not found: install Debian's prometheus package (apt-get install prometheus)"
    processes = []

    def start(target: str) -> int:
        config = tmp_path / "prometheus.yml"
        config.write_text(f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: studio
    metrics_path: /metrics
    static_configs:
      - targets: ["{target}"]
""")
        port = _free_port()
        processes.append(subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "wb")))
        return port

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


def test_prometheus_scrapes_the_draft_counter_as_a_draft_is_written(launch, prometheus):
    studio, url = launch()
    port = prometheus(url.removeprefix("http://"))
    assert wait_for(lambda: [r for r in query(port, 'up{job="studio"}') if r["value"][1] == "1"], 60, 0.5), \
        "Prometheus never scraped the studio"
    draft = Client(url, verbose=False).predict("poetry", {}, {"max_new_tokens": 6}, api_name="/generate")
    assert draft["done"] and draft["draft_id"]
    counted = wait_for(lambda: [r for r in query(port, 'studio_drafts_started_total{template="poetry"}')
                                if float(r["value"][1]) >= 1], 60, 0.5)
    assert counted and counted[0]["metric"]["version"] == "base"
    assert wait_for(lambda: [r for r in query(port, "studio_tokens_generated_total") if float(r["value"][1]) >= 6],
                    60, 0.5)
    serving = query(port, "studio_serving_version_info")
    assert serving and serving[0]["metric"]["version"] == "base"
