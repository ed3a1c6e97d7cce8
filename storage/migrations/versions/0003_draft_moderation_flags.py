"""Moderation flags on drafts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite has it): no table rebuild. Server defaults fill the rows that
    # exist already: earlier drafts count as not flagged.
    op.add_column("drafts", sa.Column("flagged", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("drafts", sa.Column("flag_reason", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("drafts") as batch:
        batch.drop_column("flag_reason")
        batch.drop_column("flagged")
