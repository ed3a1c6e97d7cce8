"""The command line: python -m studio templates | generate | continue | rate | list | show | export.

Every subcommand works on the same database as the page and prints JSON with --json.
Errors print one readable line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .config import add_arguments, settings_from
from .errors import USER_ERRORS
from .sampling import SamplerSettings

SAMPLER_OPTIONS = ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens", "seed")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    add_arguments(common, only=("model", "data_dir", "db", "device", "user"))
    common.add_argument("--json", action="store_true", help="Print the result as JSON.")

    parser = argparse.ArgumentParser(prog="python -m studio", description="Story Studio from the command line.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("templates", parents=[common], help="List the genre templates and their fields.")

    gen = commands.add_parser("generate", parents=[common], help="Write a draft from a template (streams to stdout).")
    gen.add_argument("template", help="Template id, as `templates` lists them.")
    gen.add_argument("--field", "-f", action="append", default=[], metavar="NAME=VALUE",
                     help="A field value; repeat for several. Fields left out take their defaults.")
    for name in SAMPLER_OPTIONS:
        meta = SamplerSettings.__dataclass_fields__[name].metadata
        kind = float if name in ("temperature", "top_p", "repetition_penalty") else int
        gen.add_argument("--" + name.replace("_", "-"), type=kind, help=f"{meta['help']} Default: the template's.")

    cont = commands.add_parser("continue", parents=[common], help="Extend a draft.")
    cont.add_argument("draft_id", type=int)
    cont.add_argument("--max-new-tokens", type=int, help="How many more tokens at most (default: as before).")

    rate = commands.add_parser("rate", parents=[common], help="Rate a draft 1-5 stars; rating again replaces it.")
    rate.add_argument("draft_id", type=int)
    rate.add_argument("stars", type=int)
    rate.add_argument("--comment", default="")

    lst = commands.add_parser("list", parents=[common], help="List drafts, newest first.")
    lst.add_argument("--template", help="Only drafts of this template.")
    lst.add_argument("--min-stars", type=int, help="Only drafts rated at least this.")
    lst.add_argument("--unrated", action="store_true", help="Only drafts not rated yet.")
    lst.add_argument("--limit", type=int, default=50)

    show = commands.add_parser("show", parents=[common], help="Show one draft with its rating and settings.")
    show.add_argument("draft_id", type=int)

    export = commands.add_parser("export", parents=[common], help="Export a draft as Markdown.")
    export.add_argument("draft_id", type=int)
    export.add_argument("--output", "-o", type=Path, help="File to write (default: stdout).")
    return parser


def _fields(pairs: list[str]) -> dict[str, str]:
    fields = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--field takes NAME=VALUE, not {pair!r}.")
        fields[name.strip()] = value
    return fields


def _print(args, data: Any, text: str) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str) if args.json else text)


def _stream(args, drafting) -> int:
    """Print the draft as it streams; Ctrl-C stops it (the draft is still saved)."""
    chunks = iter(drafting)
    try:
        for chunk in chunks:
            if not args.json:
                print(chunk, end="", flush=True)
    except KeyboardInterrupt:
        chunks.close()  # ends generation and saves what was written, marked stopped
    result = drafting.stream.result
    data = {"draft_id": drafting.draft_id, "text": drafting.text, "stopped": result.stopped,
            "new_tokens": result.new_tokens, "seed": drafting.stream.settings.seed,
            "first_token_seconds": result.first_token_seconds, "generation_seconds": result.generation_seconds}
    if args.json:
        _print(args, data, "")
    else:
        speed = result.new_tokens / result.generation_seconds if result.generation_seconds else 0.0
        print(f"\n\n[draft {drafting.draft_id}: {result.new_tokens} tokens, {speed:.1f} tokens/s]", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    from .service import Studio

    studio = Studio(settings_from(args))
    if args.command == "templates":
        data = [t.to_dict() for t in studio.catalog]
        _print(args, data, "\n".join(f"{t['id']:<20} {t['name']} — {t['description']}" for t in data))
    elif args.command == "generate":
        sampler = {name: getattr(args, name) for name in SAMPLER_OPTIONS if getattr(args, name) is not None}
        drafting = studio.write(args.template, _fields(args.field), sampler)
        return _stream(args, drafting)
    elif args.command == "continue":
        drafting = studio.continue_draft(args.draft_id, args.max_new_tokens)
        if not args.json:
            print(drafting.text, end="", flush=True)
        return _stream(args, drafting)
    elif args.command == "rate":
        saved = studio.rate(args.draft_id, args.stars, args.comment)
        _print(args, saved, f"Draft {args.draft_id} rated {'★' * saved['stars']}.")
    elif args.command == "list":
        rows = studio.drafts(template_id=args.template, min_stars=args.min_stars,
                             unrated_only=args.unrated, limit=args.limit)
        data = [_summary(r) for r in rows]
        lines = [f"{r['id']:>5}  {r['created_at'][:16]}  {r['template_id']:<16} {('★' * r['stars']) if r['stars'] else '-':<5}  {r['excerpt'][:60]}" for r in data]
        _print(args, data, "\n".join(lines) or "No drafts yet.")
    elif args.command == "show":
        record = studio.draft(args.draft_id)
        _print(args, record, studio.export_markdown(args.draft_id))
    elif args.command == "export":
        markdown = studio.export_markdown(args.draft_id)
        if args.output:
            args.output.write_text(markdown, encoding="utf-8")
        data = {"draft_id": args.draft_id, "path": str(args.output) if args.output else None, "markdown": markdown}
        if args.json or args.output:
            _print(args, data, f"Wrote {args.output}")
        else:
            print(markdown, end="")
    return 0


def _summary(row) -> dict[str, Any]:
    from dataclasses import asdict

    data = asdict(row)
    data["created_at"] = row.created_at.isoformat()
    return data


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # migrations report only problems
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except (*USER_ERRORS, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
