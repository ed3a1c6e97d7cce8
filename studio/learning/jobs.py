"""When and where training runs: queued in the database, executed in a separate process.

The page, the auto-trigger and `python -m studio train` all queue a run row. The app's runner
thread starts `python -m studio train --run-id N` as a child process for the oldest queued run;
the child claims the run with a conditional UPDATE, so a run never executes twice, and records
progress, the outcome or the error, each write only while it still holds the run (lease.py). A
crash of the child cannot take the studio down; a run whose process died or fell silent is marked
failed by whichever replica, runner or command line looks next. With --train-processes N the
child is `accelerate launch` of N processes, and its rank 0 does all that.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import traceback
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from storage import preferences, registry
from storage.models import RunStatus
from storage.registry import RunLost
from studio.config import Settings, child_environment
from studio.errors import USER_ERRORS, StudioError
from studio.learning.config import FROM_SETTINGS, TrainingConfig
from studio.learning.lease import STALE_AFTER, claim, fail_run, worker_id
from studio.learning.pipeline import run_training

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
POLL_SECONDS = 2.0
END_SECONDS = 60.0  # how long a child asked to stop may take (accelerate launch stops its processes first)
PROGRESS_SECONDS = 1.0  # a run records its progress at most this often (each a short write)
# A staging folder untouched this long belongs to no live save (a save writes its files in seconds):
# another replica's save in progress is younger.
STAGING_ABANDONED_AFTER = timedelta(hours=1)
DEAD = ("The training process stopped unexpectedly (killed, its machine restarted, or silent for {minutes} "
        "minutes). The active version and all ratings are unchanged.")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed child stays a zombie until its parent reaps it: that is not alive either.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (OSError, IndexError):
        return True
    return state != "Z"


def train_command(settings: Settings, run_id: int, claimed_by: str = "") -> list[str]:
    """The command line that carries out one queued run (or one claimed_by a runner for it) in a
    process of its own (run from REPO_ROOT, with child_environment(settings): the database URL
    travels there, not here), or with --train-processes N, in N processes started by accelerate."""
    launcher = [sys.executable]
    if settings.train_processes > 1:
        # --multi_gpu is accelerate's DDP launch (torchrun), on GPUs and on CPU (gloo) alike: without it a
        # CPU machine would get one process. Port 0: a free one. Mixed precision: the trainer sets bf16 on
        # CUDA. --quiet: a failed run's log ends with its error, not the launcher's traceback.
        launcher += ["-m", "accelerate.commands.launch", "--multi_gpu", "--quiet",
                     "--num_processes", str(settings.train_processes), "--num_machines", "1",
                     "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command = [*launcher, "-m", "studio", "train", "--run-id", str(run_id), "--model", settings.model,
               "--data-dir", str(settings.data_path.resolve()), "--device", settings.device]
    if claimed_by:
        command += ["--claimed-by", claimed_by]
    for name in FROM_SETTINGS.values():  # options given to the app, not only its environment, reach the run
        command += ["--" + name.replace("_", "-"), str(getattr(settings, name))]
    return command


def end_dead_runs(sessions) -> list[int]:
    """Fail the runs whose process is gone: on this host a PID that no longer runs (known at once),
    on any host a heartbeat silent for STALE_AFTER (a PID alone proves nothing there: after a
    container restart it may be another's). Any replica, the runner and the command line call this,
    so a dead run never holds training; return the ids ended."""
    now = datetime.now(timezone.utc)
    silent_since = now - STALE_AFTER
    with sessions() as session:
        running = [(r.id, r.worker, r.heartbeat_at) for r in registry.running_runs(session)]
    ended = []
    for run_id, worker, heartbeat in running:
        host, _, pid = worker.partition(":")
        gone = host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid))
        if not gone and heartbeat is not None and heartbeat > silent_since:
            continue
        # A run found gone is ended as held by that worker; one found silent only while still silent.
        if fail_run(sessions, run_id, DEAD.format(minutes=int(STALE_AFTER.total_seconds() // 60)),
                    worker=worker if gone else None, silent_since=None if gone else silent_since):
            ended.append(run_id)
    return ended


def remove_abandoned_staging(data_dir: Path) -> None:
    """Delete half-written adapter folders that no save is writing any more (replicas share the data
    dir: a folder another one is writing right now is left alone)."""
    cutoff = time.time() - STAGING_ABANDONED_AFTER.total_seconds()
    for staging in (Path(data_dir) / "adapters").glob(".staging-*"):
        try:
            newest = max([staging.stat().st_mtime] + [f.stat().st_mtime for f in staging.rglob("*")])
        except OSError:  # removed meanwhile
            continue
        if newest < cutoff:
            shutil.rmtree(staging, ignore_errors=True)


def recover(sessions, data_dir: Path) -> list[int]:
    """At start: end the runs whose process is gone and delete abandoned half-written adapters."""
    ended = end_dead_runs(sessions)
    remove_abandoned_staging(data_dir)
    return ended


def execute_run(sessions, settings: Settings, config: TrainingConfig, run_id: int,
                echo: Callable[[str], None] | None = None, claimed_by: str = "",
                allowed: Callable[[str, str], bool] | None = None) -> dict[str, Any]:
    """Claim a queued run for this process (or take it from the runner that claimed it for this
    process) and carry it out; it always ends recorded, by this process or, if it loses the run
    (declared dead), by whoever ended it. allowed(text, prompt): the content filter's verdict on
    the drafts a run writes itself and trains on (writers' drafts carry theirs)."""
    lease = claim(sessions, run_id, claimed_by)
    if lease is None:
        with sessions() as session:
            run = registry.get_run(session, run_id)
        raise StudioError(f"Training run {run_id} is {run.status} ({run.worker or 'no one'}'s), not "
                          f"{'claimed by ' + claimed_by if claimed_by else 'queued'}: nothing to do.")

    last_write = float("-inf")

    def report(progress: float, message: str, curve: list) -> None:
        nonlocal last_write
        if echo:
            echo(f"[{progress:4.0%}] {message}")
        lease.check()
        if time.monotonic() - last_write < PROGRESS_SECONDS:
            return  # a tiny model's steps take milliseconds: the Training tab needs no more than this
        with lease.write() as session:
            lease.record(session, progress=progress, message=message)
            version_id = registry.get_run(session, run_id).version_id
            if curve and version_id is not None:
                registry.update_version(session, version_id, loss_curve=list(curve))
        last_write = time.monotonic()

    with lease.kept():
        try:
            return run_training(lease, settings, config, report, allowed)
        except RunLost:
            raise  # ended by another process as dead: the record is theirs now
        except USER_ERRORS as exc:  # too few ratings, none consistent, a bad option: nothing broke
            # A run stopped because the ratings showed no consistent preference spent one of the gate's tests.
            lease.fail(str(exc), outcome=getattr(exc, "outcome", "nothing_to_learn"))
            raise
        except BaseException as exc:
            lease.fail(f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
            raise


def _end(process: subprocess.Popen) -> None:
    """Stop a child: asked first, since accelerate launch then stops the processes it started (a
    killed launcher would leave them training, and rank 0 recording), killed if it will not go."""
    process.terminate()
    try:
        process.wait(timeout=END_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class TrainingJobs:
    """Queues runs and, in the app, runs them one at a time in child processes."""

    def __init__(self, sessions, settings: Settings):
        self.sessions = sessions
        self.settings = settings
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._child: tuple[int, subprocess.Popen, Path] | None = None

    def request(self, trigger: str) -> tuple[int, bool]:
        """Queue a run (unless one is queued or running, by a live process): (run id, whether it is new)."""
        end_dead_runs(self.sessions)
        with self.sessions.begin() as session:
            run, created = registry.enqueue_run(session, trigger)
            return run.id, created

    def maybe_auto_train(self) -> int | None:
        """Queue a run when enough new signal has come in since the last one: highly rated drafts, and
        unless training is sft only, drafts rated low (they teach too) and picks."""
        threshold = self.settings.auto_train_after
        if threshold <= 0:
            return None
        with self.sessions() as session:
            last = registry.last_run(session)
            since = last.created_at if last else None
            liked_only = self.settings.train_method in ("sft", "dpo")
            fresh = registry.count_high_ratings_since(session, self.settings.train_min_stars, since,
                                                      max_low_stars=0 if liked_only else TrainingConfig.max_disliked_stars)
            if self.settings.train_method != "sft":
                fresh += preferences.count_preferences_since(session, since)
        if fresh < threshold:
            return None
        run_id, created = self.request("auto")
        return run_id if created else None

    # -- the runner (app only) -----------------------------------------------------------------

    def start(self) -> None:
        recovered = recover(self.sessions, self.settings.data_path)
        if recovered:
            log.warning("Marked interrupted training runs as failed: %s", recovered)
        self._thread = threading.Thread(target=self._loop, name="training-runner", daemon=True)
        self._thread.start()

    def readiness(self) -> tuple[bool, str]:
        """Whether the runner that starts queued runs is alive (for /readyz)."""
        if self._thread is None:
            return False, "not started"
        if not self._thread.is_alive():
            return False, "stopped: queued runs will not start"
        return True, f"running training run {self._child[0]}" if self._child else "waiting for runs"

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                self._tick()
            except Exception:  # the runner must outlive a database hiccup; the next tick retries
                log.exception("Training runner check failed")

    def _tick(self) -> None:
        if self._child is not None:
            self._watch_child()
            return
        ended = end_dead_runs(self.sessions)  # any replica's, or a command line's, that died
        if ended:
            log.warning("Marked training runs whose process is gone as failed: %s", ended)
        with self.sessions() as session:
            run = registry.open_run(session)
            queued = run.id if run is not None and run.status == RunStatus.QUEUED else None
        if queued is None:
            return
        # Claimed here, before a process is started: with replicas on one database, every runner
        # sees the queued run, and only the one whose claim lands starts a process for it.
        with self.sessions.begin() as session:
            claimed = registry.claim_run(session, queued, worker_id(), os.getpid())
        if not claimed:
            return
        try:
            self._child = (queued, *self._spawn(queued))
        except BaseException as exc:  # no process to carry it out: say so now, not when it goes stale
            fail_run(self.sessions, queued, f"The training process could not start: {exc}", worker=worker_id())
            raise

    def _watch_child(self) -> None:
        run_id, process, log_path = self._child
        if process.poll() is None:
            silent_since = datetime.now(timezone.utc) - STALE_AFTER
            with self.sessions() as session:
                run = registry.get_run(session, run_id)
                mine, heartbeat = run.worker == worker_id(), run.heartbeat_at
            if mine and run.status == RunStatus.RUNNING:  # the child is still starting: hold the run for it
                try:
                    with self.sessions.begin() as session:
                        registry.hold_run(session, run_id, worker_id())
                except RunLost:  # the child took it over meanwhile
                    pass
            elif heartbeat is not None and heartbeat <= silent_since:
                # Alive but silent (its heartbeat thread stuck): end it, so it neither holds the CPU
                # nor blocks the next run.
                _end(process)
                self._child = None
                fail_run(self.sessions, run_id, f"The training process's heartbeat was silent for "
                                                f"{int(STALE_AFTER.total_seconds() // 60)} minutes and it was ended. "
                                                "The active version and all ratings are unchanged.",
                         silent_since=silent_since)
            return
        self._child = None
        if process.returncode != 0:
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:] if log_path.exists() else ""
            fail_run(self.sessions, run_id, f"The training process exited with status {process.returncode}.\n{tail}")

    def _spawn(self, run_id: int) -> tuple[subprocess.Popen, Path]:
        settings = self.settings
        logs = settings.data_path / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"training-run-{run_id}.log"
        command = train_command(settings, run_id, claimed_by=worker_id())
        log.info("Starting training run %s in a separate process", run_id)
        with open(log_path, "ab") as out:
            process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=child_environment(settings))
        return process, log_path
