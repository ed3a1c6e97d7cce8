"""Writers' signal -> LoRA fine-tune -> held-out gate -> a new model version, promoted only if better.

The signal is the writers' picks between candidates when there are enough of them (DPO), and
their highly rated drafts otherwise (supervised fine-tuning); see finetune.py for both. The
gate is the same either way: it scores the candidate and the active version on held-out drafts
the writers liked (mean negative log-likelihood per target token) and promotes the candidate
only when its perplexity beats the active version's by the configured margin. Preference runs
also record how often each version ranks the held-out picks the way the writers did.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage import registry
from storage.models import VersionStatus
from studio.config import Settings
from studio.errors import StudioError
from studio.files import atomic_folder
from studio.learning.config import TrainingConfig
from studio.learning.dataset import Example, PreferencePair
from studio.learning.finetune import Report, train_adapter, train_preference_adapter
from studio.learning.gate import GateResult, HeldOutScores, gate_words, score_held_out
from studio.learning.lease import RunLease
from studio.learning.splits import DatasetSplit, PreferenceSplit, build_preference_split, build_split
from studio.serving.models import load_model

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """What one run trains on, chosen by choose_data."""

    method: str  # "sft" or "dpo"
    split: DatasetSplit | PreferenceSplit  # what the method's trainer takes
    gate_examples: list[Example]  # held-out drafts the writers liked: the gate scores these
    train_draft_ids: list[int]
    held_out_draft_ids: list[int]  # every draft the gate scores (a held-out pick's rejected draft too): never to train
    note: str = ""  # why this method, for the run's messages

    @property
    def held_out_pairs(self) -> list[PreferencePair]:
        """The held-out picks whose ranking the gate reports (none for rated drafts)."""
        return self.split.held_out if self.method == "dpo" else []


def choose_data(session, config: TrainingConfig) -> TrainingData:
    """Picks when there are enough of them (or when asked for), else rated drafts."""
    note = ""
    if config.method in ("auto", "dpo"):
        try:
            pairs = build_preference_split(
                session, held_out_fraction=config.held_out_fraction, min_held_out=config.min_held_out,
                min_pairs=config.min_pairs, max_per_writer=config.max_per_writer)
        except StudioError as exc:  # too few picks, or all for one prompt
            if config.method == "dpo":
                raise
            note = f"Learning from rated drafts: {exc}"
        else:
            trained = sorted({d for p in pairs.train for d in (p.chosen.draft_id, p.rejected.draft_id)})
            held = list({p.chosen.draft_id: p.chosen for p in pairs.held_out}.values())
            return TrainingData("dpo", pairs, held, trained, pairs.held_out_draft_ids,
                                note=f"Learning from {len(pairs.train)} picks between candidates, "
                                     f"{len(pairs.held_out)} held out.")
    split = build_split(session, min_stars=config.min_stars, held_out_fraction=config.held_out_fraction,
                        min_held_out=config.min_held_out, min_train=config.min_train,
                        max_per_writer=config.max_per_writer)
    dropped = f", {len(split.duplicates_dropped)} duplicates dropped" if split.duplicates_dropped else ""
    summary = f"{len(split.train)} drafts to train on, {len(split.held_out)} held out{dropped}."
    return TrainingData("sft", split, split.held_out, [e.draft_id for e in split.train],
                        [e.draft_id for e in split.held_out], note=f"{note} {summary}".strip())


def _gate_figures(gate: GateResult, active: HeldOutScores, candidate: HeldOutScores, held_pairs: list,
                  against: str, method: str) -> dict[str, Any]:
    """What the version row keeps of the gate: its decision, and how each version ranks held-out picks."""
    figures = {**gate.to_dict(), "against": against, "method": method}
    if held_pairs:
        figures.update(held_out_pairs=len(held_pairs),
                       active_pair_accuracy=active.pair_accuracy, active_pair_margin=active.pair_margin,
                       candidate_pair_accuracy=candidate.pair_accuracy, candidate_pair_margin=candidate.pair_margin)
    return figures


def save_candidate(lease: RunLease, settings: Settings, version_id: int, name: str, model, curve: list) -> None:
    """Write the candidate's adapter folder (whole or not at all) and record it with its loss curve."""
    adapter = settings.data_path / "adapters" / name
    lease.check()
    with atomic_folder(adapter) as staging:
        model.save_pretrained(staging)
    with lease.write() as session:
        registry.update_version(session, version_id, adapter_path=str(adapter), loss_curve=curve)


def record_verdict(lease: RunLease, version_id: int, name: str, figures: dict[str, Any],
                   hyperparameters: dict[str, Any]) -> None:
    """The gate's verdict on the candidate, its promotion if it earned one, and the run's end, in one
    transaction that holds only while this process still holds the run: a run declared dead meanwhile
    neither serves its version nor turns from failed to succeeded."""
    with lease.write() as session:
        registry.update_version(session, version_id, gate=figures, hyperparameters=hyperparameters,
                                status=VersionStatus.REJECTED)
        if figures["decision"] == "promoted":
            registry.activate(session, version_id)
        lease.succeed(session, f"{name} {figures['decision']}: {gate_words(figures)}", outcome=figures["decision"])


def run_training(lease: RunLease, settings: Settings, config: TrainingConfig, report: Report) -> dict[str, Any]:
    """One training run end to end, on the run this process holds; returns the candidate's figures.
    Raises on failure (the caller records it), RunLost once the run is no longer this process's."""
    with lease.sessions() as session:  # a read: removing near duplicates holds no lock
        data = choose_data(session, config)
    with lease.write() as session:
        registry.ensure_base_version(session, settings.model)
        active = registry.active_version(session)  # what is served now: the parent, and what to beat
        candidate = registry.add_version(
            session, name=registry.next_version_name(session), parent_id=active.id, base_model=settings.model,
            adapter_path=None, status=VersionStatus.TRAINING, is_active=False, train_draft_ids=data.train_draft_ids,
            held_out_draft_ids=data.held_out_draft_ids,
            hyperparameters=config.to_dict(), loss_curve=[], gate={})
        lease.record(session, version_id=candidate.id)
        active_info = (active.id, active.name, active.adapter_path)
        candidate_id, candidate_name = candidate.id, candidate.name
    report(0.02, data.note, [])
    held_pairs = data.held_out_pairs
    base = load_model(settings.model, settings.data_path, settings.device)

    def score(model, tokenizer) -> HeldOutScores:
        return score_held_out(model, tokenizer, data.gate_examples, held_pairs, config.max_length)

    active_scores = None
    if active_info[2] is None:
        # The active version is the base itself: score it now, on the model already loaded,
        # before LoRA layers are added to it (rather than loading it a second time).
        active_scores = score(base.model, base.tokenizer)
    with tempfile.TemporaryDirectory(prefix="studio-train-") as scratch:
        trainer = train_preference_adapter if data.method == "dpo" else train_adapter
        peft_model, curve, stats = trainer(base.model, base.tokenizer, data.split, config, Path(scratch), report)
    save_candidate(lease, settings, candidate_id, candidate_name, peft_model, curve)

    report(0.85, "Scoring the candidate and the active version on held-out drafts…", curve)
    candidate_scores = score(peft_model, base.tokenizer)
    del peft_model
    if active_scores is None:
        active = load_model(settings.model, settings.data_path, settings.device, adapter=active_info[2])
        active_scores = score(active.model, active.tokenizer)
    gate = GateResult(active_scores.nll, candidate_scores.nll, candidate_scores.tokens, config.gate_margin)
    figures = _gate_figures(gate, active_scores, candidate_scores, held_pairs, active_info[1], data.method)
    record_verdict(lease, candidate_id, candidate_name, figures,
                   {**config.to_dict(), **stats, "method": data.method,
                    "train_pairs": len(data.split.train) if data.method == "dpo" else 0})
    summary = {"version": candidate_name, **figures, **stats, "train_drafts": len(data.train_draft_ids),
               "held_out_drafts": len(data.gate_examples)}
    log.info("Run %s: %s %s by %s (held-out perplexity %.2f -> %.2f)", lease.run_id, candidate_name,
             figures["decision"], data.method, gate.active_perplexity, gate.candidate_perplexity)
    return summary
