"""Pairwise preferences between drafts.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "preferences",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user", sa.String(length=200), nullable=False),
        sa.Column("chosen_draft_id", sa.Integer(), nullable=False),
        sa.Column("rejected_draft_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_preferences")),
        sa.ForeignKeyConstraint(["chosen_draft_id"], ["drafts.id"], ondelete="CASCADE",
                                name=op.f("fk_preferences_chosen_draft_id_drafts")),
        sa.ForeignKeyConstraint(["rejected_draft_id"], ["drafts.id"], ondelete="CASCADE",
                                name=op.f("fk_preferences_rejected_draft_id_drafts")),
        sa.UniqueConstraint("user", "chosen_draft_id", "rejected_draft_id", name=op.f("uq_preferences_pair")),
        sa.CheckConstraint("chosen_draft_id <> rejected_draft_id", name=op.f("ck_preferences_distinct_drafts")),
    )
    op.create_index(op.f("ix_preferences_user"), "preferences", ["user"])
    op.create_index(op.f("ix_preferences_chosen_draft_id"), "preferences", ["chosen_draft_id"])
    op.create_index(op.f("ix_preferences_rejected_draft_id"), "preferences", ["rejected_draft_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_preferences_rejected_draft_id"), table_name="preferences")
    op.drop_index(op.f("ix_preferences_chosen_draft_id"), table_name="preferences")
    op.drop_index(op.f("ix_preferences_user"), table_name="preferences")
    op.drop_table("preferences")
