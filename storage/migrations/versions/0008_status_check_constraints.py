"""CHECK constraints on the status of model versions and training runs.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported from storage.models: a migration must keep meaning what it
# meant when written. tests/test_storage.py checks these match the models' constraints.
VERSION_CHECK = "status IN ('training', 'rejected', 'promoted', 'retired', 'failed')"
RUN_CHECK = "status IN ('queued', 'running', 'succeeded', 'failed')"


def upgrade() -> None:
    # SQLite cannot add a constraint to a table: batch mode copies it into a new one (a row with
    # any other status fails the copy, and the whole migration rolls back). PostgreSQL gets an
    # ALTER TABLE ... ADD CONSTRAINT.
    with op.batch_alter_table("model_versions") as batch:
        batch.create_check_constraint(op.f("ck_model_versions_status"), VERSION_CHECK)
    with op.batch_alter_table("training_runs") as batch:
        batch.create_check_constraint(op.f("ck_training_runs_status"), RUN_CHECK)


def downgrade() -> None:
    with op.batch_alter_table("training_runs") as batch:
        batch.drop_constraint(op.f("ck_training_runs_status"), type_="check")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_constraint(op.f("ck_model_versions_status"), type_="check")
