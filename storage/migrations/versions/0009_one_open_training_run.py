"""At most one training run queued or running: a partial unique index.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN_RUN = "status IN ('queued', 'running')"  # spelled out: a migration keeps meaning what it meant


def upgrade() -> None:
    # A database that already holds several open runs (the race this index closes) keeps the
    # oldest; the others fail, saying why, so the index can be built.
    op.execute(sa.text(
        f"UPDATE training_runs SET status = 'failed', message = 'Failed.', "
        f"error = 'Queued twice by two processes at once; the older run was kept.' "
        f"WHERE {OPEN_RUN} AND id > (SELECT min(id) FROM training_runs WHERE {OPEN_RUN})"))
    op.create_index("uq_training_runs_one_open", "training_runs", [sa.text(f"({OPEN_RUN})")], unique=True,
                    sqlite_where=sa.text(OPEN_RUN), postgresql_where=sa.text(OPEN_RUN))


def downgrade() -> None:
    op.drop_index("uq_training_runs_one_open", table_name="training_runs")
