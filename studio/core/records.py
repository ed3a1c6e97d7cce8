"""Rows as plain data for the page, the API and the command line (JSON-ready)."""

from __future__ import annotations

from typing import Any


BLIND = "hidden until you pick A or B"  # the version of a draft in an undecided blind comparison


def draft_record(draft, rating, blind: bool = False) -> dict[str, Any]:
    """The draft as its writer reads it; blind: one side of a comparison not yet decided."""
    return {
        "id": draft.id,
        "created_at": draft.created_at.isoformat(),
        "user": draft.user,
        "template_id": draft.template_id,
        "template_name": draft.template_name,
        "fields": draft.fields,
        "prompt": draft.prompt,
        "settings": draft.settings,
        "seed": draft.seed,
        "model_name": draft.model_name,
        "model_version": BLIND if blind else draft.model_version,
        "text": draft.text,
        "new_tokens": draft.new_tokens,
        "first_token_seconds": draft.first_token_seconds,
        "generation_seconds": draft.generation_seconds,
        "stopped": draft.stopped,
        "status": draft.status,  # writing, done, or interrupted (its process died while it streamed)
        "continuations": draft.continuations,
        "stars": rating.stars if rating else None,
        "comment": rating.comment if rating else "",
        "flagged": draft.flagged,
        "flag_reason": draft.flag_reason,
    }


def version_record(v) -> dict[str, Any]:
    return {
        "id": v.id, "name": v.name, "status": v.status, "active": v.is_active, "parent_id": v.parent_id,
        "adapter_path": v.adapter_path, "created_at": v.created_at.isoformat(),
        "train_drafts": len(v.train_draft_ids), "held_out_drafts": len(v.held_out_draft_ids),
        "train_draft_ids": v.train_draft_ids, "held_out_draft_ids": v.held_out_draft_ids,
        "hyperparameters": v.hyperparameters, "loss_curve": v.loss_curve, "gate": v.gate,
    }


def run_record(r) -> dict[str, Any]:
    return {
        "id": r.id, "status": r.status, "trigger": r.trigger, "version_id": r.version_id,
        "progress": r.progress, "message": r.message, "error": r.error,
        "created_at": r.created_at.isoformat(),
        "started_at": r.started_at.isoformat() if r.started_at else None,
        "finished_at": r.finished_at.isoformat() if r.finished_at else None,
    }
