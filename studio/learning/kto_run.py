"""A run by KTO: every rated draft teaches (liked ones desirable, disliked ones not), and the
ranking gate decides (ranking_gate.py). Held-out drafts are chosen by a hash of their id
(splits.py), so no version ever trains on a draft any version is judged on.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from storage import registry
from storage.models import VersionStatus
from studio.config import Settings
from studio.errors import StudioError
from studio.learning.config import TrainingConfig
from studio.learning.splits import build_rated_split
from studio.learning.finetune import Report, train_kto_adapter
from studio.learning.judge import Judge
from studio.learning.ranking import accuracy, permutation_p_value
from studio.learning.ranking_gate import (GateOptions, Samples, build_held_out, decide, enough_held_out,
                                          judge_trusted, score)
from studio.learning.lease import RunLease
from studio.learning.run import record_verdict, save_candidate
from studio.learning.samples import fluency, judge_picks, sample_requests, write_samples
from studio.serving.models import load_model

log = logging.getLogger(__name__)


class NotEnoughRatings(StudioError):
    """KTO needs drafts on both sides of the writers' judgement to learn from."""


NOTHING_TO_LEARN = "Nothing to learn yet"
PICK_PROMPTS = 8  # the newest distinct training prompts the judge's picks are written of


class NoConsistentPreference(StudioError):
    """The held-out ratings disagree with the rest: training now would learn noise, so it does not start."""


def choose_rated(session, config: TrainingConfig):
    """The training drafts (liked or disliked), the gate's held-out set, the liked test and how many liked.
    Raises NotEnoughRatings when one side is missing."""
    def liked(e):
        return e.stars >= config.min_stars

    def disliked(e):
        return e.stars <= config.max_disliked_stars

    split = build_rated_split(session, held_out_fraction=config.held_out_fraction, max_per_writer=config.max_per_writer,
                              sides=((liked, config.gate_min_liked), (disliked, config.gate_min_disliked)))

    train = [e for e in split.train if liked(e) or disliked(e)]
    up = sum(liked(e) for e in train)
    if up < 1 or len(train) - up < 1 or len(train) < config.min_train:
        raise NotEnoughRatings(
            f"Learning from ratings needs drafts on both sides: {up} rated {config.min_stars}+ and "
            f"{len(train) - up} rated {config.max_disliked_stars} or less are there to train on (held-out drafts "
            f"aside), and a run needs at least one of each and {config.min_train} in all. Rate more drafts, "
            "the ones you like and the ones you do not.")
    return train, build_held_out(split.held_out, liked, disliked), liked, up


def _options(config: TrainingConfig) -> GateOptions:
    return GateOptions(alpha=config.gate_alpha, margin=config.rank_margin, min_diversity=config.min_diversity,
                       max_perplexity_increase=config.max_perplexity_increase,
                       max_sample_perplexity_increase=config.max_sample_perplexity_increase, min_liked=config.gate_min_liked,
                       min_disliked=config.gate_min_disliked, held_out_share=config.held_out_fraction, seed=config.seed)


@dataclass
class _Run:
    """What one run knows before it trains (read in one transaction)."""

    train: list
    held: Any
    liked: Any
    up: int
    serving_adapter: str | None
    serving_name: str
    serving_diversity: float  # the serving version's distinct-2 against the base's (gate.diversity_vs_base)
    requests: list[dict[str, Any]]  # held-out prompts the gate's samples are written of
    pick_requests: list[dict[str, Any]]  # training prompts the judge's picks are written of
    judge: Judge
    judge_scores: dict[int, float]  # the judge on the held-out drafts
    trusted: bool  # enough held out, and the judge ranks it as the writers did (else the run stopped)
    candidate_id: int
    candidate_name: str


def _judge_ratings(train: list, held, liked, options: GateOptions) -> tuple[Judge, dict[int, float], bool]:
    """The gate's first step, before any training: a judge learned from the training ratings must
    rank the held-out ones as the writers did, or there is nothing consistent to learn (yet)."""
    judge = Judge.fit(train, liked)
    scores = dict(zip([e.draft_id for e in held.drafts], judge.scores([e.completion for e in held.drafts])))
    enough = enough_held_out(held, options)
    if enough and not judge_trusted(held, scores, options):
        raise NoConsistentPreference(
            f"{NOTHING_TO_LEARN}: a judge learned from the {len(train)} ratings to train on ranks "
            f"{accuracy(scores, held.pairs):.0%} of {len(held.pairs)} held-out pairs as the writers did "
            f"(p = {permutation_p_value(scores, held.clusters, options.seed):.3f}, needs <= {options.alpha:g}): the "
            "ratings do not yet show a consistent preference, and training on them would learn noise. Rate more "
            "drafts; nothing was trained.")
    return judge, scores, enough  # past the check, enough held out means trusted


def _start(lease: RunLease, settings: Settings, config: TrainingConfig) -> _Run:
    with lease.sessions() as session:  # a read: removing near duplicates and fitting the judge hold no lock
        train, held, liked, up = choose_rated(session, config)
        judge, judge_scores, trusted = _judge_ratings(train, held, liked, _options(config))
        requests = sample_requests(session, [e.draft_id for e in held.drafts])
        pick_requests = sample_requests(session, [e.draft_id for e in train], limit=PICK_PROMPTS)
    with lease.write() as session:
        registry.ensure_base_version(session, settings.model)
        active = registry.active_version(session)  # what is served now: the parent, and what to beat
        candidate = registry.add_version(
            session, name=registry.next_version_name(session), parent_id=active.id, base_model=settings.model,
            adapter_path=None, status=VersionStatus.TRAINING, is_active=False,
            train_draft_ids=[e.draft_id for e in train], held_out_draft_ids=[e.draft_id for e in held.drafts],
            hyperparameters=config.to_dict(), loss_curve=[], gate={})
        lease.record(session, version_id=candidate.id)
        # Unknown (the base, a version from before this figure, one served by hand undecided): as the base's.
        diversity = (active.gate or {}).get("diversity_vs_base") or 1.0
        return _Run(train, held, liked, up, active.adapter_path, active.name, diversity, requests, pick_requests,
                    judge, judge_scores, trusted, candidate.id, candidate.name)


def _judge_candidate(config: TrainingConfig, run: _Run, base, serving, model, base_scores,
                     report: Report) -> tuple[Any, dict[str, Any]]:
    """The gate's verdict on the trained candidate (a PeftModel over the base), and the before/after.
    serving is the serving version's model, or None when that is the base."""
    report(0.85, "Scoring held-out drafts with the candidate…", [])
    held, judge, judge_scores = run.held, run.judge, run.judge_scores
    candidate_scores = score(model, base.tokenizer, held.drafts, config.max_length)
    options = _options(config)
    trusted = run.trusted
    count = config.gate_samples if trusted else 1  # without a trusted judge, one draft each for the before/after
    if run.requests:
        report(0.9, f"The candidate and {run.serving_name} write {count} draft{'s' * (count > 1)} each of held-out "
                    "prompts…", [])
    candidate_texts = write_samples(model, base.tokenizer, run.requests, count, chat=base.is_chat)
    if serving is None:
        serving_scores = base_scores
        with model.disable_adapter():  # the LoRA switched off: the base itself
            serving_texts = write_samples(model, base.tokenizer, run.requests, count, chat=base.is_chat)
    else:
        serving_scores = score(serving.model, serving.tokenizer, held.drafts, config.max_length)
        serving_texts = write_samples(serving.model, serving.tokenizer, run.requests, count, chat=serving.is_chat)
    samples = None
    if trusted and run.requests:
        report(0.97, "The base model reads both versions' drafts (how naturally they read)…", [])
        with model.disable_adapter():
            samples = Samples(candidate_texts, serving_texts,
                              fluency(model, base.tokenizer, run.requests, candidate_texts, config.max_length),
                              fluency(model, base.tokenizer, run.requests, serving_texts, config.max_length))
    verdict = decide(held, base_scores, serving_scores, candidate_scores, judge_scores, judge.scores, samples, options,
                     serving_diversity=run.serving_diversity)
    before_after = {}
    if run.requests and candidate_texts[0] and serving_texts[0]:
        before_after = {**run.requests[0], "parent": run.serving_name, "parent_text": serving_texts[0][0],
                        "text": candidate_texts[0][0]}
    return verdict, {"before_after": before_after, "judge_likes": judge.top_words()}


def _pick(config: TrainingConfig, run: _Run, serving, report: Report,
          allowed: Callable[[str, str], bool] | None) -> tuple[list, int]:
    """The judge's picks among the serving version's drafts of training prompts (samples.judge_picks)
    and how many are liked; none unless the judge is trusted, since an untrusted judge would teach
    its own noise."""
    if not (run.trusted and config.judge_samples and run.pick_requests):
        return [], 0
    report(0.03, f"{run.serving_name} writes {config.judge_samples} drafts of {len(run.pick_requests)} training "
                 "prompt(s); the judge picks what to learn from…", [])
    picks = judge_picks(serving.model, serving.tokenizer, run.pick_requests, config.judge_samples, run.judge.scores,
                        chat=serving.is_chat, allowed=allowed)
    liked = sum(run.liked(e) for e in picks)
    report(0.04, f"The judge picked {liked} of {run.serving_name}'s drafts to learn from as liked and "
                 f"{len(picks) - liked} as disliked.", [])
    return picks, liked


def run_kto(lease: RunLease, settings: Settings, config: TrainingConfig, report: Report,
            allowed: Callable[[str, str], bool] | None = None) -> dict[str, Any]:
    """One KTO run end to end, on the run this process holds; returns the candidate's figures. Raises
    on failure (the caller records it), RunLost once the run is no longer this process's.
    allowed(text, prompt): whether the content filter lets a draft of the model's own train."""
    config = config.resolved("kto")
    run = _start(lease, settings, config)
    report(0.02, f"Learning from {run.up} liked and {len(run.train) - run.up} disliked drafts by KTO; "
                 f"{len(run.held.drafts)} held out ({len(run.held.pairs)} liked-disliked pairs to judge on).", [])
    base = load_model(settings.model, settings.data_path, settings.device)
    base_scores = score(base.model, base.tokenizer, run.held.drafts, config.max_length)  # before LoRA is added
    serving = None if run.serving_adapter is None else load_model(
        settings.model, settings.data_path, settings.device, adapter=run.serving_adapter)
    picks, picked_liked = _pick(config, run, serving or base, report, allowed)
    with tempfile.TemporaryDirectory(prefix="studio-train-") as scratch:
        model, curve, stats = train_kto_adapter(base.model, base.tokenizer, run.train + picks, run.liked, config,
                                                Path(scratch), report)
    save_candidate(lease, settings, run.candidate_id, run.candidate_name, model, curve)
    verdict, extra = _judge_candidate(config, run, base, serving, model, base_scores, report)
    figures = {**verdict.to_dict(), "against": run.serving_name, "method": "kto", "train_liked": run.up,
               "train_disliked": len(run.train) - run.up, "picked_liked": picked_liked,
               "picked_disliked": len(picks) - picked_liked, **extra}
    record_verdict(lease, run.candidate_id, run.candidate_name, figures,
                   {**config.to_dict(), **stats, "method": "kto"})
    log.info("Run %s: %s %s by kto: %s", lease.run_id, run.candidate_name, verdict.decision, verdict.reason)
    return {"version": run.candidate_name, **figures, **stats, "train_drafts": len(run.train),
            "held_out_drafts": len(run.held.drafts)}
