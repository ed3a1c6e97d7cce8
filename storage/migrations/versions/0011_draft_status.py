"""Drafts are saved as they stream: a status says whether one is still being written, done, or
was interrupted by a crash.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("drafts") as batch:
        batch.add_column(sa.Column("status", sa.String(length=20), nullable=False, server_default="done"))


def downgrade() -> None:
    with op.batch_alter_table("drafts") as batch:
        batch.drop_column("status")
