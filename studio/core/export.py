"""Drafts as documents a writer can keep: Markdown with the facts of how the draft was made."""

from __future__ import annotations

from typing import Any

from studio.text import word_count


def draft_markdown(record: dict[str, Any]) -> str:
    """A draft (as Studio.draft returns it) as a Markdown document."""
    stars = record.get("stars")
    rating = f"{'★' * stars}{'☆' * (5 - stars)} ({stars}/5)" if stars else "not rated"
    settings = ", ".join(f"{k} {v}" for k, v in record["settings"].items() if k != "seed")
    lines = [
        f"# {record['template_name']} — draft {record['id']}",
        "",
        record["text"].strip(),
        "",
        "---",
        "",
        f"- Written: {record['created_at']}",
        f"- Template: {record['template_name']} (`{record['template_id']}`)",
        f"- Model: {record['model_name']} (version {record['model_version']})",
        f"- Settings: {settings}; seed {record['seed']}",
        f"- Length: {word_count(record['text'])} words, {record['new_tokens']} tokens",
        f"- Rating: {rating}",
    ]
    if record.get("comment"):
        lines.append(f"- Comment: {record['comment']}")
    if record.get("flagged"):
        lines.append(f"- ⚠ Flagged: {record['flag_reason']}. Not used for training.")
    if record.get("stopped"):
        lines.append("- Stopped by the writer before the end.")
    lines += ["", "## Fields", ""]
    lines += [f"- **{name}**: {value}" for name, value in record["fields"].items() if value]
    return "\n".join(lines) + "\n"
