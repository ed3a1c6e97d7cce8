"""A training run records how it ended (promoted, rejected, undecided, nothing_to_learn, failed),
so the metrics count outcomes from the database, whichever process ran the run.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ALTER TABLE, not a batch: a batch rebuilds the table on SQLite and would drop the one-open-run
# index (0009), an expression index Alembic cannot copy. SQLite has dropped columns since 3.35.
def upgrade() -> None:
    op.add_column("training_runs", sa.Column("outcome", sa.String(length=20), nullable=True))


def downgrade() -> None:
    op.drop_column("training_runs", "outcome")
