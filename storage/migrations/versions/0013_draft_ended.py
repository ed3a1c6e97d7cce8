"""A draft records whether the model ended it (end-of-text), rather than the token limit cutting it:
training teaches where to end only from drafts that really ended.

Earlier drafts are filled in from what they recorded: done, not stopped, and fewer new tokens than their
limit (the end-of-text token counts as one; a continued draft's last limit is not kept, so it counts
as ended unless stopped, as before).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("drafts") as batch:
        batch.add_column(sa.Column("ended", sa.Boolean(), nullable=False, server_default=sa.false()))
    drafts = sa.table("drafts", sa.column("id", sa.Integer), sa.column("stopped", sa.Boolean),
                      sa.column("new_tokens", sa.Integer), sa.column("continuations", sa.Integer),
                      sa.column("settings", sa.JSON), sa.column("status", sa.String),
                      sa.column("ended", sa.Boolean))
    connection = op.get_bind()
    rows = connection.execute(sa.select(drafts.c.id, drafts.c.new_tokens, drafts.c.continuations, drafts.c.settings)
                              .where(drafts.c.stopped == sa.false(), drafts.c.status == "done")).all()
    ended = [row.id for row in rows
             if row.continuations or row.new_tokens < int((row.settings or {}).get("max_new_tokens") or 0)]
    for start in range(0, len(ended), 500):
        connection.execute(sa.update(drafts).where(drafts.c.id.in_(ended[start:start + 500])).values(ended=True))


def downgrade() -> None:
    with op.batch_alter_table("drafts") as batch:
        batch.drop_column("ended")
