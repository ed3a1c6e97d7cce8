"""Story Studio storage: drafts, ratings and their database.

Knows nothing of models, Gradio or the ``studio`` package; ``studio`` uses it.
"""

from storage.db import current_revision, make_engine, migrate, open_database
from storage.models import Base, Draft, Rating, UTCDateTime
from storage.repository import (
    DraftSummary,
    InvalidRatingError,
    NotFoundError,
    StorageError,
    add_draft,
    get_draft,
    get_rating,
    list_drafts,
    rate_draft,
    update_draft,
)

__all__ = [
    "Base",
    "Draft",
    "DraftSummary",
    "InvalidRatingError",
    "NotFoundError",
    "Rating",
    "StorageError",
    "UTCDateTime",
    "add_draft",
    "current_revision",
    "get_draft",
    "get_rating",
    "list_drafts",
    "make_engine",
    "migrate",
    "open_database",
    "rate_draft",
    "update_draft",
]
