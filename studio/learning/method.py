"""Which signal a run learns from when the method is auto: the strongest the writers have given.

1. dpo: enough picks between candidates (a writer compared drafts of one prompt side by side);
2. kto: rated drafts on both sides, liked and disliked (every rating teaches, and the ranking gate
   can tell learning from noise);
3. sft: only liked drafts (nothing to contrast them with: learn to write like them, judged by
   held-out perplexity).
"""

from __future__ import annotations

from studio.errors import StudioError
from studio.learning.config import TrainingConfig
from studio.learning.splits import build_preference_split
from studio.learning.kto_run import NotEnoughRatings, choose_rated


def choose_method(session, config: TrainingConfig) -> tuple[str, str]:
    """config.method, or for auto the first of dpo, kto, sft the writers' signal allows; and why
    (empty when nothing needs saying)."""
    if config.method != "auto":
        return config.method, ""
    try:
        build_preference_split(session, held_out_fraction=config.held_out_fraction, min_held_out=config.min_held_out,
                               min_pairs=config.min_pairs, max_per_writer=config.max_per_writer)
        return "dpo", ""
    except StudioError as exc:  # too few picks, or all for one prompt
        picks = str(exc)
    try:
        choose_rated(session, config)
        return "kto", f"Learning from rated drafts, liked and disliked: {picks}"
    except NotEnoughRatings:
        return "sft", f"Learning from rated drafts: {picks}"
