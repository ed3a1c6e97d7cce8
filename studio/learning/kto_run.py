"""A run by KTO: every rated draft teaches (liked ones desirable, disliked ones not), and the
ranking gate decides (ranking_gate.py). Held-out drafts are chosen by a hash of their id
(dataset.held_out), so no version ever trains on a draft any version is judged on.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from storage import registry
from storage.models import VersionStatus
from studio.config import Settings
from studio.errors import StudioError
from studio.learning.config import TrainingConfig
from studio.learning.dataset import build_rated_split
from studio.learning.finetune import Report, train_kto_adapter
from studio.learning.ranking_gate import build_held_out, judge, score
from studio.learning.run import save_candidate
from studio.serving.models import load_model

log = logging.getLogger(__name__)


class NotEnoughRatings(StudioError):
    """KTO needs drafts on both sides of the writers' judgement to learn from."""


def _choose(session, config: TrainingConfig):
    split = build_rated_split(session, held_out_fraction=config.held_out_fraction,
                              max_per_writer=config.max_per_writer)

    def liked(e):
        return e.stars >= config.min_stars

    def disliked(e):
        return e.stars <= config.max_disliked_stars

    train = [e for e in split.train if liked(e) or disliked(e)]
    up = sum(liked(e) for e in train)
    if up < 1 or len(train) - up < 1 or len(train) < config.min_train:
        raise NotEnoughRatings(
            f"Learning from ratings needs drafts on both sides: {up} rated {config.min_stars}+ and "
            f"{len(train) - up} rated {config.max_disliked_stars} or less are there to train on (held-out drafts "
            f"aside), and a run needs at least one of each and {config.min_train} in all. Rate more drafts, "
            "the ones you like and the ones you do not.")
    return train, build_held_out(split.held_out, liked, disliked), liked, up


def run_kto(sessions, settings: Settings, config: TrainingConfig, run_id: int, report: Report) -> dict[str, Any]:
    """One KTO run end to end; returns the candidate's figures. Raises on failure."""
    with sessions.begin() as session:
        active = registry.ensure_base_version(session, settings.model)
        train, held, liked, up = _choose(session, config)
        candidate = registry.add_version(
            session, name=registry.next_version_name(session), parent_id=active.id, base_model=settings.model,
            adapter_path=None, status=VersionStatus.TRAINING, is_active=False,
            train_draft_ids=[e.draft_id for e in train], held_out_draft_ids=[e.draft_id for e in held.drafts],
            hyperparameters=config.to_dict(), loss_curve=[], gate={})
        registry.update_run(session, run_id, version_id=candidate.id)
        serving_adapter, serving_name = active.adapter_path, active.name
        candidate_id, candidate_name = candidate.id, candidate.name
    report(0.02, f"Learning from {up} liked and {len(train) - up} disliked drafts by KTO; {len(held.drafts)} held "
                 f"out ({len(held.pairs)} liked-disliked pairs to judge on).", [])
    try:
        base = load_model(settings.model, settings.data_path, settings.device)
        base_scores = score(base.model, base.tokenizer, held.drafts, config.max_length)  # before LoRA is added
        with tempfile.TemporaryDirectory(prefix="studio-train-") as scratch:
            model, curve, stats = train_kto_adapter(base.model, base.tokenizer, train, liked, config, Path(scratch),
                                                    report)
        save_candidate(sessions, settings, candidate_id, candidate_name, model, curve)
        report(0.85, "Ranking held-out drafts with the candidate and the serving version…", curve)
        candidate_scores = score(model, base.tokenizer, held.drafts, config.max_length)
        del model
        serving_scores = base_scores
        if serving_adapter is not None:
            serving = load_model(settings.model, settings.data_path, settings.device, adapter=serving_adapter)
            serving_scores = score(serving.model, serving.tokenizer, held.drafts, config.max_length)
        verdict = judge(held, base_scores, serving_scores, candidate_scores, margin=config.rank_margin,
                        max_perplexity_increase=config.max_perplexity_increase, min_liked=config.gate_min_liked,
                        min_disliked=config.gate_min_disliked, seed=config.seed)
        figures = {**verdict.to_dict(), "against": serving_name, "method": "kto",
                   "train_liked": up, "train_disliked": len(train) - up}
        with sessions.begin() as session:
            registry.update_version(session, candidate_id, gate=figures, status=VersionStatus.REJECTED,
                                    hyperparameters={**config.to_dict(), **stats, "method": "kto"})
            if verdict.decision == "promoted":
                registry.activate(session, candidate_id)
    except BaseException:
        with sessions.begin() as session:
            registry.update_version(session, candidate_id, status=VersionStatus.FAILED)
        raise
    log.info("Run %s: %s %s by kto: %s", run_id, candidate_name, verdict.decision, verdict.reason)
    return {"version": candidate_name, **figures, **stats, "train_drafts": len(train),
            "held_out_drafts": len(held.drafts)}
