"""Fine-tuning on rated drafts with tiny models: the adapter learns, the gate decides, versions switch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from storage import registry, repository
from studio.errors import StudioError
from studio.learning.splits import NotEnoughDrafts
from studio.learning.jobs import execute_run, recover, worker_id
from tests.drafts import seed_picks, seed_rated_drafts

REPO = Path(__file__).resolve().parent.parent
def fast_config(studio, **overrides):
    return studio.versions.training_config(**{"epochs": 3, "learning_rate": 5e-3, "max_length": 128, "batch_size": 4,
                                              **overrides})


def train(studio, **overrides) -> tuple[int, dict]:
    run_id, _ = studio.versions.train("cli", user="local")
    return run_id, execute_run(studio.sessions, studio.settings, fast_config(studio, **overrides), run_id)


def _version(studio, name):
    return next(v for v in studio.versions.list() if v["name"] == name)


def trained_and_served(studio, n: int = 8) -> dict:
    """A fine-tune on liked drafts, served by hand (an admin's promotion: liked drafts alone cannot be
    examined, so the gate leaves such a run undecided)."""
    seed_rated_drafts(studio, n)
    _, summary = train(studio)
    studio.versions.promote(_version(studio, summary["version"])["id"], user="local")
    return summary


def test_a_run_on_liked_drafts_alone_trains_but_only_an_admin_can_serve_it(studio):
    """Held-out perplexity alone once promoted a fine-tune on shuffled ratings: a run with nothing to
    contrast liked drafts with trains, records, says why it cannot be judged, and waits for an admin."""
    ids = seed_rated_drafts(studio, 12)
    run_id, summary = train(studio)
    assert summary["method"] == "sft" and summary["decision"] == "undecided"
    assert "No judge can examine this candidate" in summary["reason"] and "serve this version by hand" in summary["reason"]

    v1 = _version(studio, "v1")
    assert not v1["active"] and v1["status"] == "rejected" and studio.pool.load().version == "base"
    assert set(v1["train_draft_ids"]) <= set(ids) and not set(v1["train_draft_ids"]) & set(v1["held_out_draft_ids"])
    assert len(v1["held_out_draft_ids"]) >= 2
    assert v1["hyperparameters"]["lora_r"] == 8 and v1["hyperparameters"]["seed"] == 0
    assert {p["split"] for p in v1["loss_curve"]} == {"train"}  # the held-out drafts are the gate's alone
    assert v1["gate"]["decision"] == "undecided" and v1["gate"]["against"] == "base"
    run = studio.versions.runs()[0]
    assert (run["id"], run["status"], run["progress"]) == (run_id, "succeeded", 1.0)
    assert run["message"].startswith("v1 undecided: No judge can examine")

    # The adapter is an ordinary PEFT folder whose LoRA weights moved away from their zero start.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(studio.settings.model)
    tuned = PeftModel.from_pretrained(base, v1["adapter_path"])
    lora_b = [p for n, p in tuned.named_parameters() if "lora_B" in n]
    assert lora_b and all(float(p.abs().max()) > 0 for p in lora_b)

    # Served by hand: the serving model switches without a restart, and new drafts say which version wrote them.
    studio.versions.promote(v1["id"], user="local")
    assert _version(studio, "base")["status"] == "retired"
    drafting = studio.drafts.write("fantasy", {}, {"max_new_tokens": 4}, user="local")
    list(drafting)
    assert studio.drafts.get(drafting.draft_id, user="local")["model_version"] == "v1"


def test_rollback_returns_to_the_parent_version(studio):
    trained_and_served(studio)
    assert studio.pool.load().version == "v1"
    assert studio.versions.rollback(user="local") == "base"
    assert studio.pool.load().version == "base"
    with pytest.raises(Exception, match="nothing to roll back to"):
        studio.versions.rollback(user="local")


def test_a_stream_that_started_before_promotion_finishes_on_its_version(studio):
    drafting = studio.drafts.write("fantasy", {}, {"max_new_tokens": 40}, user="local")
    chunks = iter(drafting)
    next(chunks)
    trained_and_served(studio)
    list(chunks)
    assert studio.drafts.get(drafting.draft_id, user="local")["model_version"] == "base"
    assert studio.pool.load().version == "v1"


def test_too_few_rated_drafts_fail_the_run_with_the_count_needed(studio):
    seed_rated_drafts(studio, 3)
    with pytest.raises(NotEnoughDrafts, match="needs at least 6"):
        train(studio)
    run = studio.versions.runs()[0]
    assert run["status"] == "failed" and "Rate at least 3 more drafts" in run["error"]
    assert [v["name"] for v in studio.versions.list()] == ["base"]


def test_enough_new_high_ratings_queue_a_run_automatically(settings):
    from studio.core.studio import Studio

    settings.auto_train_after = 3
    studio = Studio(settings)
    seed_rated_drafts(studio, 2)  # rated straight in the database: not through Studio.rate
    drafting = studio.drafts.write("fantasy", {}, {"max_new_tokens": 4}, user="local")
    list(drafting)
    assert studio.drafts.rate(drafting.draft_id, 3, user="local")["training_run"] is None  # 3 stars is not "high"
    queued = studio.drafts.rate(drafting.draft_id, 4, user="local")["training_run"]
    assert queued is not None and studio.versions.runs()[0]["status"] == "queued"
    assert studio.drafts.rate(drafting.draft_id, 5, user="local")["training_run"] is None  # already queued: not twice


@pytest.mark.parametrize("method, queues", [("auto", True), ("sft", False)])
def test_disliked_drafts_count_towards_a_run_when_training_learns_from_them(settings, method, queues):
    from studio.core.studio import Studio

    settings.auto_train_after, settings.train_method = 3, method
    studio = Studio(settings)
    seed_rated_drafts(studio, 2, stars=1)
    drafting = studio.drafts.write("fantasy", {}, {"max_new_tokens": 4}, user="local")
    list(drafting)
    queued = studio.drafts.rate(drafting.draft_id, 2, user="local")["training_run"]
    assert (queued is not None) == queues


def _spawn_training(studio, run_id) -> subprocess.Popen:
    s = studio.settings
    return subprocess.Popen(
        [sys.executable, "-m", "studio", "train", "--run-id", str(run_id), "--model", s.model,
         "--data-dir", s.data_dir, "--db", s.database_url, "--epochs", "50"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


@pytest.mark.e2e
def test_killing_the_training_process_leaves_ratings_and_the_active_version_untouched(studio):
    seed_rated_drafts(studio, 12)
    with studio.sessions() as session:
        ratings_before = [(r.draft_id, r.stars) for _, r in repository.list_rated_drafts(session)]
    run_id, _ = studio.versions.train("button", user="local")
    process = _spawn_training(studio, run_id)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "Training: step" not in studio.versions.runs()[0]["message"]:
        time.sleep(0.2)
    assert "Training: step" in studio.versions.runs()[0]["message"]
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    assert recover(studio.sessions, studio.settings.data_path) == [run_id]
    run = studio.versions.runs()[0]
    assert run["status"] == "failed" and "stopped unexpectedly" in run["error"]
    assert studio.pool.load().version == "base"
    assert [v["status"] for v in studio.versions.list() if v["name"] == "v1"] == ["failed"]
    with studio.sessions() as session:
        assert [(r.draft_id, r.stars) for _, r in repository.list_rated_drafts(session)] == ratings_before
    # The next run trains a new version on its merits: the failed v1 blocks nothing.
    _, summary = train(studio)
    assert summary["version"] == "v2" and summary["decision"] == "undecided"  # liked drafts alone


def _claim_as(studio, run_id: int, pid: int, silent_for: timedelta) -> None:
    """The run held by process pid on this host, its last report silent_for ago."""
    import socket

    with studio.sessions.begin() as session:
        assert registry.claim_run(session, run_id, f"{socket.gethostname()}:{pid}", pid)
        registry.get_run(session, run_id).heartbeat_at = datetime.now(timezone.utc) - silent_for


def test_a_run_that_fell_silent_is_failed_though_its_pid_is_alive(studio):
    """A hung process, or another process that got the PID after a restart, does not hold training for good."""
    run_id, _ = studio.versions.train("button", user="local")
    _claim_as(studio, run_id, os.getpid(), timedelta(minutes=1))  # alive and reporting: left alone
    assert recover(studio.sessions, studio.settings.data_path) == []
    with studio.sessions.begin() as session:
        registry.get_run(session, run_id).heartbeat_at = datetime.now(timezone.utc) - timedelta(minutes=20)
    assert recover(studio.sessions, studio.settings.data_path) == [run_id]
    assert studio.versions.train("button", user="local")[1]  # training is open again


def test_the_runner_ends_a_child_that_hangs(studio, monkeypatch, tmp_path):
    hanging = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    monkeypatch.setattr(studio.jobs, "_spawn", lambda run_id: (hanging, tmp_path / "run.log"))
    run_id, _ = studio.versions.train("button", user="local")
    studio.jobs._tick()  # the runner claims the queued run and starts it (here: a process that will never report)
    with studio.sessions.begin() as session:  # which took it over, then fell silent 20 minutes ago
        assert registry.hand_over_run(session, run_id, worker_id(), worker_id(hanging.pid), hanging.pid)
        registry.get_run(session, run_id).heartbeat_at = datetime.now(timezone.utc) - timedelta(minutes=20)
    studio.jobs._tick()
    assert hanging.poll() is not None  # ended, not left holding the CPU
    run = studio.versions.runs()[0]
    assert run["status"] == "failed" and "heartbeat was silent" in run["error"]


@pytest.mark.e2e
def test_the_app_runner_trains_in_a_child_process_and_never_runs_a_run_twice(studio):
    seed_rated_drafts(studio, 8)
    run_id, created = studio.versions.train("button", user="local")
    assert created and studio.versions.train("button", user="local") == (run_id, False)
    studio.jobs.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and studio.versions.runs()[0]["status"] in ("queued", "running"):
            time.sleep(0.5)
    finally:
        studio.jobs.close()
    run = studio.versions.runs()[0]
    assert run["status"] == "succeeded", run
    assert len(studio.versions.runs()) == 1
    # Nobody can claim a finished run again.
    with studio.sessions.begin() as session:
        assert not registry.claim_run(session, run_id, "elsewhere:1", 1)


def test_with_enough_picks_the_run_learns_them_by_dpo_and_faces_the_same_exam(studio):
    """Picks train by DPO on the teaching half; the examiner, fitted on the other half's picks, must rank
    the held-out picks as the writer did and then judge what the candidate writes, as for every method."""
    picks = seed_picks(studio, 24)  # 48 pairs over 24 prompts
    messages = []
    run_id, _ = studio.versions.train("cli", user="local")
    config = fast_config(studio, method="auto", min_pairs=8, gate_samples=8)
    summary = execute_run(studio.sessions, studio.settings, config, run_id, echo=messages.append)
    assert summary["method"] == "dpo" and summary["train_pairs"] >= 4, summary
    assert any("Learning by dpo from" in m and "kept to examine the result" in m for m in messages)
    # The examiner ranks every held-out pick as the writer did (the song over the dirges), beyond chance
    # at the share of alpha the first test may spend, so the candidate's drafts were judged.
    assert summary["judge_accuracy"] == 1.0 and summary["judge_p"] <= summary["judge_alpha"] == 0.025, summary
    assert summary["decision"] in ("promoted", "rejected") and summary["samples"] == 8 * summary["looks"], summary["reason"]

    v1 = _version(studio, "v1")
    assert v1["gate"]["method"] == "dpo" and v1["hyperparameters"]["method"] == "dpo"
    # Both drafts of a held-out pick are held out for good (the gate scores both), whole prompts at a
    # time, and none of them was trained on.
    held, trained = set(v1["held_out_draft_ids"]), set(v1["train_draft_ids"])
    assert held and trained and not held & trained
    assert all(held >= {c, *r} or not held & {c, *r} for c, r in picks)
    assert len(trained) == 3 * summary["train_pairs"] // 2  # the teaching half's picks, each a song over two dirges


def test_too_few_picks_fall_back_to_rated_drafts_and_say_so(studio):
    seed_picks(studio, 2)  # 4 pairs: fewer than 8
    seed_rated_drafts(studio, 12)
    messages = []
    run_id, _ = studio.versions.train("cli", user="local")
    summary = execute_run(studio.sessions, studio.settings, fast_config(studio, min_pairs=8), run_id,
                          echo=messages.append)
    assert summary["method"] == "sft" and summary["train_pairs"] == 0
    assert any("Learning from liked drafts" in m and "4 usable picks" in m and "needs at least 8" in m
               for m in messages)


def test_asking_for_dpo_without_enough_picks_fails_the_run_with_what_is_missing(studio):
    seed_picks(studio, 1)
    seed_rated_drafts(studio, 12)
    with pytest.raises(StudioError, match="2 usable picks.*needs at least 8.*6 more times"):
        train(studio, method="dpo", min_pairs=8)
    assert studio.versions.runs()[0]["status"] == "failed"
    assert [v["name"] for v in studio.versions.list()] == ["base"]


def test_the_run_process_gets_the_training_options_the_app_was_started_with(settings):
    from studio.__main__ import _parser
    from studio.config import settings_from
    from studio.learning.jobs import train_command

    settings.gate_alpha, settings.train_method, settings.train_min_pairs = 0.07, "sft", 3
    settings.train_min_stars, settings.train_max_per_writer = 5, 9
    command = train_command(settings, 5)
    assert command[1:3] == ["-m", "studio"]
    child = settings_from(_parser().parse_args(command[3:]), environ={})  # no STUDIO_* variables
    assert (child.gate_alpha, child.train_method, child.train_min_pairs, child.train_min_stars,
            child.train_max_per_writer) == (0.07, "sft", 3, 5, 9)


def test_the_database_password_is_on_no_command_line_and_in_no_log_line(settings):
    import io
    import logging

    from studio.__main__ import _parser
    from studio.config import child_environment, settings_from
    from studio.learning.jobs import train_command
    from studio.logs import configure_logging

    settings.db = "postgresql+psycopg://studio:s3cret-pw@db.internal:5432/studio"
    command, environment = train_command(settings, 5), child_environment(settings)
    assert not any("s3cret-pw" in part for part in command)  # `ps` shows every local user the command line
    child = settings_from(_parser().parse_args(command[3:]), environ=environment)
    assert child.database_url == settings.db  # the child still reaches the database
    stream, saved = io.StringIO(), logging.getLogger().handlers[:]
    try:
        logging.getLogger().handlers[:] = []  # a fresh process, as the app and command line start
        configure_logging("%(message)s", stream=stream)  # as the app and the command line set it up
        logging.getLogger("studio").info("Data in %s, database %s", "/data", settings.db)
        try:
            raise RuntimeError(f"could not connect to {settings.db}")
        except RuntimeError:
            logging.getLogger("sqlalchemy.pool").exception("pool error")
    finally:
        logging.getLogger().handlers[:] = saved
    lines = stream.getvalue()
    assert "s3cret-pw" not in lines and "postgresql+psycopg://studio:***@db.internal:5432/studio" in lines
    assert "could not connect to" in lines  # the traceback is kept, without the password


@pytest.mark.parametrize("method, queued", [("auto", ["auto"]), ("sft", [])])
def test_enough_new_picks_queue_a_run_automatically_unless_training_ignores_picks(settings, method, queued):
    from studio.core.studio import Studio

    settings.auto_train_after, settings.train_method = 2, method
    studio = Studio(settings)
    drafts = studio.drafts.candidates("fantasy", {}, {"max_new_tokens": 4}, count=3, user="local")
    for drafting in drafts:
        list(drafting)
    a, b, c = (d.draft_id for d in drafts)
    studio.drafts.prefer(a, [b], user="local")
    assert studio.versions.runs() == []  # one pick so far
    studio.drafts.prefer(a, [c], user="local")
    assert [r["trigger"] for r in studio.versions.runs()] == queued


def test_a_run_trains_in_the_precision_asked_for_and_refuses_one_it_does_not_know():
    from studio.learning.config import TrainingConfig
    from studio.learning.finetune import trains_in_bf16

    assert trains_in_bf16("bf16") and not trains_in_bf16("fp32")
    assert TrainingConfig(precision="fp32").precision == "fp32"
    with pytest.raises(StudioError, match="precision must be one of auto, bf16, fp32, not 'fp16'"):
        TrainingConfig(precision="fp16")
