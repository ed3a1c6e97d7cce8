"""Draft revisions (undo to any earlier text).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "draft_revisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("draft_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_draft_revisions")),
        sa.ForeignKeyConstraint(["draft_id"], ["drafts.id"], ondelete="CASCADE",
                                name=op.f("fk_draft_revisions_draft_id_drafts")),
    )
    op.create_index(op.f("ix_draft_revisions_draft_id"), "draft_revisions", ["draft_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_draft_revisions_draft_id"), table_name="draft_revisions")
    op.drop_table("draft_revisions")
