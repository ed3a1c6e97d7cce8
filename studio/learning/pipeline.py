"""One training run, whatever the method: plan -> train -> gate -> record.

plan.py decides in one read what trains, what examines and what is held out; a trainer per method
(finetune.py) trains a LoRA on the serving version's base model; the gate (verdict.py) judges the
candidate on the same kind of evidence for every method and returns one verdict (decision,
reason in words, figures); the verdict, the version's promotion if it earned one, and the run's
end are recorded in one transaction that holds only while this process still holds the run.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from storage import registry
from storage.models import VersionStatus
from studio.config import Settings
from studio.files import atomic_folder
from studio.learning.config import TrainingConfig
from studio.learning.finetune import Report, train_adapter, train_kto_adapter, train_preference_adapter
from studio.learning.lease import RunLease
from studio.learning.neighbours import load_word_vectors
from studio.learning.plan import Plan, plan_run
from studio.learning.samples import LOOK_SEED_OFFSET, fluency, judge_picks, reseeded, write_drafts
from studio.learning.verdict import GateOptions, Samples, Verdict, decide, score, settled
from studio.serving.models import load_model

log = logging.getLogger(__name__)


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
        lease.succeed(session, f"{name} {figures['decision']}: {figures['reason']}", outcome=figures["decision"])


def _options(config: TrainingConfig, plan: Plan, look: int = 1) -> GateOptions:
    return GateOptions(alpha=config.gate_alpha, judge_alpha=plan.alpha, test=plan.test, margin=config.rank_margin,
                       min_diversity=config.min_diversity, max_perplexity_increase=config.max_perplexity_increase,
                       max_sample_perplexity_increase=config.max_sample_perplexity_increase, seed=config.seed,
                       look=look, looks=config.gate_looks)


def _teach(config: TrainingConfig, plan: Plan, serving, report: Report, allowed) -> tuple[list, int]:
    """The teacher's picks among the serving version's drafts of training prompts (samples.judge_picks)
    and how many are liked; none without a teacher that ranked ratings it never saw as the writers did."""
    if plan.teacher is None or not plan.pick_requests:
        return [], 0
    wanted = max(0, config.teach_liked - plan.train_liked)
    report(0.03, f"The serving version writes {config.judge_samples} drafts of {len(plan.pick_requests)} training "
                 f"prompt(s) (more, up to {config.judge_max_samples}, while the teacher finds fewer than {wanted} "
                 "liked); the teacher picks what to learn from…", [])
    picks = judge_picks(serving.model, serving.tokenizer, plan.pick_requests, config.judge_samples,
                        plan.teacher.scores, chat=serving.is_chat, allowed=allowed, liked_wanted=wanted,
                        most=config.judge_max_samples)
    liked = sum(plan.liked(e) for e in picks)
    report(0.04, f"The teacher picked {liked} drafts to learn from as liked and {len(picks) - liked} as disliked.", [])
    return picks, liked


def _train(config: TrainingConfig, plan: Plan, base, picks: list, scratch: Path, report: Report):
    if plan.method == "dpo":
        return train_preference_adapter(base.model, base.tokenizer, plan.pairs, config, scratch, report)
    if plan.method == "sft":
        return train_adapter(base.model, base.tokenizer, plan.train, config, scratch, report)
    return train_kto_adapter(base.model, base.tokenizer, plan.train + picks, plan.liked, config, scratch, report)


def _split(drafts: list[list[tuple[str, bool]]]) -> tuple[list[list[str]], list[list[bool]]]:
    """Each prompt's drafts as texts, and whether each ended (samples.write_drafts)."""
    return [[t for t, _ in group] for group in drafts], [[e for _, e in group] for group in drafts]


def _write_both(plan: Plan, base, serving, model, count: int, offset: int) -> tuple[list, list]:
    """count drafts by the candidate and by the serving version (the base: the candidate with its
    LoRA switched off) of the held-out prompts, from the same seeds, each shifted by offset."""
    requests = reseeded(plan.requests, offset)
    candidate = write_drafts(model, base.tokenizer, requests, count, chat=base.is_chat)
    if serving is None:
        with model.disable_adapter():
            return candidate, write_drafts(model, base.tokenizer, requests, count, chat=base.is_chat)
    return candidate, write_drafts(serving.model, serving.tokenizer, requests, count, chat=serving.is_chat)


def _look(config: TrainingConfig, plan: Plan, base, serving, model, serving_name: str,
          report: Report) -> tuple[Samples, int]:
    """Both versions' samples for the gate, written look after look (verdict.settled) until the
    count is settled; the samples without their fluency, and how many looks it took."""
    exam = plan.exam
    count = 1 if exam.undecided else config.gate_samples  # without an exam, one draft each for the before/after
    candidate, serving_side = [[] for _ in plan.requests], [[] for _ in plan.requests]
    for look in range(1, config.gate_looks + 1):  # settled() stops an undecided exam at the first
        report(0.9, f"The candidate and {serving_name} write {count} draft{'s' * (count > 1)} each of held-out "
                    f"prompts{f' (look {look})' if look > 1 else ''}…", [])
        written = _write_both(plan, base, serving, model, count, (look - 1) * LOOK_SEED_OFFSET)
        candidate = [old + new for old, new in zip(candidate, written[0])]
        serving_side = [old + new for old, new in zip(serving_side, written[1])]
        (candidate_texts, candidate_ended), (serving_texts, serving_ended) = _split(candidate), _split(serving_side)
        samples = Samples(candidate_texts, serving_texts, candidate_ended=candidate_ended, serving_ended=serving_ended)
        if settled(exam, samples, _options(config, plan, look)):
            return samples, look
    raise AssertionError("the last look always settles")


def _examine(config: TrainingConfig, plan: Plan, base, serving, model, base_scores, serving_name: str,
             serving_diversity: float, report: Report) -> tuple[Verdict, dict[str, Any]]:
    """The gate's verdict on the trained candidate (a PeftModel over the base), and the before/after.
    serving is the serving version's model, or None when that is the base."""
    report(0.85, "Scoring held-out drafts with the candidate…", [])
    held, exam = plan.held, plan.exam
    candidate_scores = score(model, base.tokenizer, held.drafts, config.max_length)
    serving_scores = base_scores if serving is None else score(serving.model, serving.tokenizer, held.drafts,
                                                               config.max_length)
    samples, looks = _look(config, plan, base, serving, model, serving_name, report) if plan.requests else (None, 1)
    if samples is not None and not exam.undecided:
        report(0.97, "The base model reads both versions' drafts (how naturally they read)…", [])
        with model.disable_adapter():
            samples.candidate_fluency = fluency(model, base.tokenizer, plan.requests, samples.candidate,
                                                config.max_length)
            samples.serving_fluency = fluency(model, base.tokenizer, plan.requests, samples.serving, config.max_length)
    verdict = decide(held, exam, base_scores, serving_scores, candidate_scores,
                     None if exam.undecided else samples, _options(config, plan, looks),
                     serving_diversity=serving_diversity)
    before_after = {}
    if samples is not None and samples.candidate[0] and samples.serving[0]:
        before_after = {**plan.requests[0], "parent": serving_name, "parent_text": samples.serving[0][0],
                        "text": samples.candidate[0][0]}
    return verdict, {"before_after": before_after,
                     "judge_likes": exam.judge.top_words() if exam.judge is not None else []}


class Phases(dict):
    """Seconds spent in each phase of a run (plan, load, teach, train, examine): where a round's time goes."""

    @contextmanager
    def timed(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self[name] = round(self.get(name, 0.0) + time.perf_counter() - started, 1)


def run_training(lease: RunLease, settings: Settings, config: TrainingConfig, report: Report,
                 allowed: Callable[[str, str], bool] | None = None) -> dict[str, Any]:
    """One run end to end, on the run this process holds; returns the candidate's figures. Raises on
    failure (the caller records it), RunLost once the run is no longer this process's.
    allowed(text, prompt): whether the content filter lets a draft of the model's own train."""
    phases = Phases()
    with phases.timed("plan"):
        vectors = load_word_vectors(settings.model, settings.data_path) if config.judge_nearest else None
        with lease.sessions() as session:  # a read: near duplicates and judges hold no lock
            plan = plan_run(session, config, vectors)
    config = config.resolved(plan.method)
    with lease.write() as session:
        registry.ensure_base_version(session, settings.model)
        active = registry.active_version(session)  # what is served now: the parent, and what to beat
        candidate = registry.add_version(
            session, name=registry.next_version_name(session), parent_id=active.id, base_model=settings.model,
            adapter_path=None, status=VersionStatus.TRAINING, is_active=False, train_draft_ids=plan.train_draft_ids,
            held_out_draft_ids=[e.draft_id for e in plan.held.drafts], hyperparameters=config.to_dict(),
            loss_curve=[], gate={})
        lease.record(session, version_id=candidate.id)
        # Unknown (the base, a version from before this figure, one served by hand undecided): as the base's.
        serving_diversity = (active.gate or {}).get("diversity_vs_base") or 1.0
        serving_adapter, serving_name, candidate_id, candidate_name = (active.adapter_path, active.name, candidate.id,
                                                                       candidate.name)
    if plan.method == "kto" and config.warm_start and serving_adapter:
        config = dataclasses.replace(config, start_adapter=serving_adapter)
    report(0.02, plan.note, [])
    with phases.timed("load"):
        base = load_model(settings.model, settings.data_path, settings.device)
        base_scores = score(base.model, base.tokenizer, plan.held.drafts, config.max_length)  # before LoRA is added
        serving = None if serving_adapter is None else load_model(
            settings.model, settings.data_path, settings.device, adapter=serving_adapter)
    with phases.timed("teach"):
        picks, picked_liked = _teach(config, plan, serving or base, report, allowed)
    with phases.timed("train"), tempfile.TemporaryDirectory(prefix="studio-train-") as scratch:
        model, curve, stats = _train(config, plan, base, picks, Path(scratch), report)
    save_candidate(lease, settings, candidate_id, candidate_name, model, curve)
    with phases.timed("examine"):
        verdict, extra = _examine(config, plan, base, serving, model, base_scores, serving_name, serving_diversity,
                                  report)
    up = plan.train_liked if plan.method == "kto" else len(plan.train)
    figures = {**verdict.to_dict(), "against": serving_name, "method": plan.method, "train_liked": up,
               "train_disliked": len(plan.train) - up, "train_pairs": len(plan.pairs), "examining": len(plan.examining),
               "picked_liked": picked_liked, "picked_disliked": len(picks) - picked_liked, "phase_seconds": dict(phases),
               **extra}
    record_verdict(lease, candidate_id, candidate_name, figures, {**config.to_dict(), **stats, "method": plan.method})
    log.info("Run %s: %s %s by %s: %s", lease.run_id, candidate_name, verdict.decision, plan.method, verdict.reason)
    return {"version": candidate_name, **figures, **stats, "train_drafts": len(plan.train_draft_ids),
            "held_out_drafts": len(plan.held.drafts)}
