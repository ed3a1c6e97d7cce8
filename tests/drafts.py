"""Rated drafts written straight to the database, for tests that need training data."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from storage import repository
from studio.serving.generation import model_input

WORDS = {
    "adj": ["bright", "calm", "silver", "little", "quiet", "golden", "gentle", "dark"],
    "noun": ["moon", "sea", "boat", "sailor", "harbour", "wave", "star", "lantern"],
    "verb": ["sings to", "drifts past", "shines on", "waits for", "dreams of", "follows"],
}

# Seeded drafts get fixed save times: with their ids these draw which are held out, so every run of a
# test holds out the same drafts (a draw by the clock made a test fail now and then).
SEEDED_AT = datetime(2026, 1, 1, tzinfo=timezone.utc)


def song(seed: int, words: dict[str, list[str]] = WORDS, verses: int = 8) -> str:
    """Verses from a small vocabulary: each text differs, but the style is easy to learn."""
    pick = random.Random(seed).choice
    return " ".join(f"the {pick(words['adj'])} {pick(words['noun'])} {pick(words['verb'])} "
                    f"the {pick(words['adj'])} {pick(words['noun'])}." for _ in range(verses))


def seed_rated_drafts(studio, n: int, stars: int = 5, user: str = "local", start: int = 0, text=None) -> list[int]:
    """Rated drafts with learnable text (the tiny model starts random), written straight to the DB:
    songs by default, or text(i) for draft i."""
    loaded = studio.pool.load()
    ids = []
    with studio.sessions.begin() as session:
        for i in range(start, start + n):
            prompt = f"Write song number {i} about the sea."
            draft = repository.add_draft(
                session, template_id="poetry", template_name="Poem", fields={}, prompt=prompt,
                model_input=model_input(loaded, prompt), settings={}, seed=i, model_name=studio.settings.model,
                model_version="base", text=(text or song)(i), user=user, created_at=SEEDED_AT + timedelta(minutes=i),
                ended=True,  # whole verses, as the model ended them
            )
            repository.rate_draft(session, draft.id, stars, user=user)
            ids.append(draft.id)
    return ids


DIRGE_WORDS = {
    "adj": ["grim", "iron", "ashen", "broken", "hollow", "bitter", "cold", "rusty"],
    "noun": ["tomb", "crow", "chain", "ruin", "grave", "storm", "bone", "furnace"],
    "verb": ["crushes", "mourns", "buries", "haunts", "breaks", "curses"],
}


def dirge(seed: int, verses: int = 8) -> str:
    """Verses in the songs' shape but another vocabulary: what the writers pass over."""
    return song(seed, DIRGE_WORDS, verses)


VERSES = 2  # what the verse model (conftest.build_verse_model) writes before it ends a draft


def short_song(seed: int) -> str:
    return song(seed, verses=VERSES)


def short_dirge(seed: int) -> str:
    return dirge(seed, verses=VERSES)


def seed_picks(studio, prompts: int, user: str = "local", start: int = 0) -> list[tuple[int, list[int]]]:
    """For each prompt, three drafts and the writer's pick: the song over two dirges (2 pairs each)."""
    from storage.preferences import record_preference

    loaded = studio.pool.load()
    picks = []
    with studio.sessions.begin() as session:
        for i in range(start, start + prompts):
            prompt = f"Write ballad number {i} about the harbour."
            ids = []
            for n, text in enumerate([song(1000 + i), dirge(2 * i), dirge(2 * i + 1)]):
                draft = repository.add_draft(
                    session, template_id="poetry", template_name="Poem", fields={}, prompt=prompt,
                    model_input=model_input(loaded, prompt), settings={}, seed=n, model_name=studio.settings.model,
                    model_version="base", text=text, user=user, created_at=SEEDED_AT + timedelta(hours=1, minutes=3 * i + n),
                    ended=True,
                )
                ids.append(draft.id)
            record_preference(session, user, ids[0], ids[1:])
            picks.append((ids[0], ids[1:]))
    return picks
