"""One run on several processes: `accelerate launch --num_processes N -m studio train`.

The main process (rank 0) carries out the run as a process alone does: it claims it, reads the
writers' data, writes the judge's picks, records progress, saves the adapter and runs the gate.
The other processes never open the database and write no file. Right before training, the main
process sends them what it is about to train on (the examples themselves: writers may rate drafts
meanwhile, and the judge's picks are sampled), every process trains on its share of each batch
(the Trainer's DDP averages the gradients), and the others exit, leaving the gate to rank 0.
"""

from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)

# The others wait at the first broadcast while rank 0 prepares (loads or converts the model, writes
# the judge's picks): on a slow start that is longer than NCCL's default of 10 minutes.
WAIT = timedelta(hours=1)
_sent = False  # whether this main process has sent the others what to train (once a run)


def state():
    """This process's place in the launch (alone when not launched): accelerate's PartialState."""
    import torch
    from accelerate import PartialState

    # As the Trainer sets itself up (use_cpu): on CPU, without cpu=True a launch would look like one process.
    return PartialState(cpu=not torch.cuda.is_available(), timeout=WAIT)


def _broadcast(payload: Any) -> Any:
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([payload])[0]


def train_everywhere(fit: Callable, model, tokenizer, data: Any, config, output: Path, report) -> Any:
    """fit(model, tokenizer, data, config, output, report) here, the main process, and on the others
    with the same data and config (fit: a module-level function, data: plain picklable values)."""
    global _sent
    launch = state()
    assert launch.is_main_process, "the other processes train through follow()"
    if launch.num_processes > 1:
        _broadcast((fit, data, config))
        _sent = True
    return fit(model, tokenizer, data, config, output, report)


@contextmanager
def leading() -> Iterator[None]:
    """The main process's part of a run: if it ends before training (too few ratings, an error), the
    other processes are told there is nothing to train instead of waiting for it."""
    try:
        yield
    finally:
        if not _sent and state().num_processes > 1:
            _broadcast(None)


def follow(settings) -> int:
    """Another process's part: wait for what the main process trains, train it beside it, exit 0."""
    from studio.serving.models import load_model

    launch = state()
    received = _broadcast(None)
    if received is None:
        log.info("Process %d: the run ended before training; nothing to train.", launch.process_index)
        return 0
    fit, data, config = received
    # Loaded once rank 0 has (a first load converts the embedded model into the data dir), on this process's device.
    base = load_model(settings.model, settings.data_path, settings.device)
    with tempfile.TemporaryDirectory(prefix="studio-train-") as scratch:  # stays empty: only rank 0 saves checkpoints
        fit(base.model, base.tokenizer, data, config, Path(scratch), lambda *_: None)
    log.info("Process %d: trained its share; the main process saves and judges the candidate.", launch.process_index)
    return 0
