"""The shipped Prometheus alert rules and example config are valid, and the alerts fire when they should.

promtool (from Debian's `prometheus` package, which CI installs) checks the files and runs the unit
tests in deploy/prometheus/alerts_test.yml: each alert fires on its case and stays quiet on the others.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "deploy" / "prometheus"


def _promtool(*args: str | Path) -> subprocess.CompletedProcess:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install Debian's `prometheus` package (apt-get install prometheus)")
    return subprocess.run([promtool, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=300)


def _shown(result: subprocess.CompletedProcess) -> str:
    return f"promtool exited {result.returncode}:\n{result.stdout}\n{result.stderr}"


def test_the_alert_rules_are_valid():
    result = _promtool("check", "rules", "deploy/prometheus/alerts.yml")
    assert result.returncode == 0, _shown(result)


def test_the_example_prometheus_config_is_valid():
    result = _promtool("check", "config", "deploy/prometheus/prometheus.yml")
    assert result.returncode == 0, _shown(result)


def test_each_alert_fires_on_its_case_and_not_on_the_others():
    result = _promtool("test", "rules", "deploy/prometheus/alerts_test.yml")
    assert result.returncode == 0, _shown(result)


def test_a_broken_rule_fails_its_tests(tmp_path):
    """Without its guard, StudioQueueFull fires on an unbounded queue (capacity 0), and the tests say so."""
    rules = (RULES / "alerts.yml").read_text()
    guard = " and studio_queue_capacity > 0"
    assert rules.count(guard) == 1
    (tmp_path / "alerts.yml").write_text(rules.replace(guard, ""))
    shutil.copy(RULES / "alerts_test.yml", tmp_path / "alerts_test.yml")
    result = _promtool("test", "rules", tmp_path / "alerts_test.yml")
    assert result.returncode != 0, _shown(result)
    failed = re.findall(r"alertname: (\w+)", result.stdout + result.stderr)
    assert failed and set(failed) == {"StudioQueueFull"}, _shown(result)
    assert 'instance="127.0.0.1:7862"' in result.stdout + result.stderr, _shown(result)
