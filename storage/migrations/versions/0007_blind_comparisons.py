"""Blind comparisons of two model versions on one prompt, and the writer's pick.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blind_comparisons",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user", sa.String(length=200), nullable=False),
        sa.Column("draft_a_id", sa.Integer(), nullable=False),
        sa.Column("draft_b_id", sa.Integer(), nullable=False),
        sa.Column("version_a", sa.String(length=100), nullable=False),
        sa.Column("version_b", sa.String(length=100), nullable=False),
        sa.Column("chosen_draft_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blind_comparisons")),
        sa.ForeignKeyConstraint(["draft_a_id"], ["drafts.id"], ondelete="CASCADE",
                                name=op.f("fk_blind_comparisons_draft_a_id_drafts")),
        sa.ForeignKeyConstraint(["draft_b_id"], ["drafts.id"], ondelete="CASCADE",
                                name=op.f("fk_blind_comparisons_draft_b_id_drafts")),
        sa.CheckConstraint("version_a <> version_b", name=op.f("ck_blind_comparisons_two_versions")),
        sa.CheckConstraint("chosen_draft_id IS NULL OR chosen_draft_id IN (draft_a_id, draft_b_id)",
                           name=op.f("ck_blind_comparisons_chosen_is_shown")),
    )
    op.create_index(op.f("ix_blind_comparisons_user"), "blind_comparisons", ["user"])


def downgrade() -> None:
    op.drop_index(op.f("ix_blind_comparisons_user"), table_name="blind_comparisons")
    op.drop_table("blind_comparisons")
