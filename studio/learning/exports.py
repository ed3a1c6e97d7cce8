"""The writers' ratings and picks as datasets in TRL's conversational formats, loadable with
``datasets.load_dataset("json", data_files=path)``: sft (prompt-completion), kto (unpaired
preference), dpo (prompt, chosen, rejected)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable

from sqlalchemy.orm import Session

from studio.errors import StudioError
from studio.learning.dataset import Example, all_rated, dedupe, preference_pairs, rated_examples
from studio.serving.generation import chat_messages

EXPORT_FORMATS = ("sft", "kto", "dpo")


def export_rows(session: Session, fmt: str, min_stars: int, system_prompt: Callable[[str], str]) -> list[dict[str, Any]]:
    """Rows in TRL's conversational formats; system_prompt(template_id) gives each prompt's system message.

    "sft": the highly rated, deduplicated drafts as prompt-completion pairs.
    "kto": every rated draft with label = (stars >= min_stars), TRL's unpaired preference format.
    "dpo": the writers' picks between candidates: prompt, chosen, rejected (flagged drafts left out).
    """
    if fmt not in EXPORT_FORMATS:
        raise StudioError(f"Unknown export format {fmt!r}; choose one of: {', '.join(EXPORT_FORMATS)}.")

    def prompt(example: Example) -> list[dict[str, str]]:
        return chat_messages(example.prompt, system_prompt(example.template_id))

    def answer(example: Example) -> list[dict[str, str]]:
        return [{"role": "assistant", "content": example.completion}]

    if fmt == "dpo":
        rows = [{"prompt": prompt(pair.chosen), "chosen": answer(pair.chosen), "rejected": answer(pair.rejected)}
                for pair in preference_pairs(session)]
        if not rows:
            raise StudioError("There are no preferences to export yet: compare candidates and pick one first.")
        return rows
    if fmt == "sft":
        examples = rated_examples(session, min_stars)
        examples, _ = dedupe(examples)
    else:
        examples = all_rated(session)
    if not examples:
        # An empty file would not even load as a dataset; say what is missing instead.
        wanted = f"drafts rated {min_stars} stars or higher" if fmt == "sft" else "rated drafts"
        raise StudioError(f"There are no {wanted} to export yet: rate some drafts first.")
    rows = []
    for example in examples:
        row: dict[str, Any] = {"prompt": prompt(example), "completion": answer(example)}
        if fmt == "kto":
            row["label"] = example.stars >= min_stars
        rows.append(row)
    return rows


def write_jsonl(rows: Iterable[dict[str, Any]], path: Path | str) -> None:
    """One JSON object a line, UTF-8, with non-ASCII text (Chinese drafts) kept readable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
