"""The command line: python -m studio templates | generate | continue | rate | list | show | export
| train | versions | blind | promote | rollback | backup | add-user.

Every subcommand works on the same database as the page and prints JSON with --json; the
command line acts as the writer --user names. Errors print one readable line on stderr and exit
with status 2. `train` also runs under `accelerate launch`: rank 0 carries out the run, the other
processes only train (studio/learning/processes.py).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from storage.backup import backup_sqlite, timestamped_backup
from studio.config import add_arguments, settings_from
from studio.errors import USER_ERRORS
from studio.logs import configure_logging, redact
from studio.learning.config import FROM_SETTINGS, TrainingConfig
from studio.learning.exports import EXPORT_FORMATS, write_jsonl
from studio.learning import processes
from studio.learning.verdict import gate_words
from studio.learning.jobs import execute_run
from studio.serving.sampling import SAMPLER_NAMES, SamplerSettings
from studio.trust.accounts import OPERATOR, add_user

# -- the commands: each takes (args, studio) and returns the exit status ---------------------------


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


def parse_fields(pairs: list[str]) -> dict[str, str]:
    """--field NAME=VALUE options as a dict (the benchmarks take them too)."""
    fields = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--field takes NAME=VALUE, not {pair!r}.")
        fields[name.strip()] = value
    return fields


def cmd_templates(args, studio) -> int:
    data = [t.to_dict() for t in studio.templates.for_writer(user=args.user)]
    _print(args, data, "\n".join(f"{t['id']:<20} {t['name']} — {t['description']}" for t in data))
    return 0


def cmd_generate(args, studio) -> int:
    sampler = {name: getattr(args, name) for name in SAMPLER_NAMES if getattr(args, name) is not None}
    return _stream(args, studio.drafts.write(args.template, parse_fields(args.field), sampler, user=args.user))


def cmd_continue(args, studio) -> int:
    drafting = studio.drafts.continue_draft(args.draft_id, args.max_new_tokens, user=args.user)
    if not args.json:
        print(drafting.text, end="", flush=True)
    return _stream(args, drafting)


def cmd_rate(args, studio) -> int:
    saved = studio.drafts.rate(args.draft_id, args.stars, args.comment, user=args.user)
    _print(args, saved, f"Draft {args.draft_id} rated {'★' * saved['stars']}.")
    return 0


def cmd_list(args, studio) -> int:
    rows = studio.drafts.list(template_id=args.template, min_stars=args.min_stars, unrated_only=args.unrated,
                              limit=args.limit, user=args.user)
    data = [{**asdict(r), "created_at": r.created_at.isoformat()} for r in rows]
    lines = [f"{r['id']:>5}  {r['created_at'][:16]}  {r['template_id']:<16} "
             f"{('★' * r['stars']) if r['stars'] else '-':<5}  {r['excerpt'][:60]}" for r in data]
    _print(args, data, "\n".join(lines) or "No drafts yet.")
    return 0


def cmd_show(args, studio) -> int:
    _print(args, studio.drafts.get(args.draft_id, user=args.user),
           studio.drafts.export_markdown(args.draft_id, user=args.user))
    return 0


def cmd_export(args, studio) -> int:
    if args.format != "markdown":
        rows = studio.drafts.export_dataset(args.format, args.min_stars)
        write_jsonl(rows, args.output)
        data = {"format": args.format, "path": str(args.output), "rows": len(rows)}
        _print(args, data, f"Wrote {len(rows)} rows to {args.output}")
        return 0
    markdown = studio.drafts.export_markdown(args.draft_id, user=args.user)
    if args.output:
        args.output.write_text(markdown, encoding="utf-8")
    data = {"draft_id": args.draft_id, "path": str(args.output) if args.output else None, "markdown": markdown}
    if args.json or args.output:
        _print(args, data, f"Wrote {args.output}")
    else:
        print(markdown, end="")
    return 0


def cmd_train(args, studio) -> int:
    """Queue a run (or take the given one) and carry it out here, printing progress."""
    overrides = {name: getattr(args, name) for name in ("epochs", "learning_rate") if getattr(args, name) is not None}
    config = studio.versions.training_config(**overrides)
    run_id = args.run_id if args.run_id is not None else studio.versions.train("cli", user=OPERATOR)[0]
    echo = (lambda line: print(line, file=sys.stderr, flush=True))
    summary = execute_run(studio.sessions, studio.settings, config, run_id, echo=echo, claimed_by=args.claimed_by or "",
                          allowed=studio.content_filter.allows)
    _print(args, {"run_id": run_id, **summary},
           f"Run {run_id}: {summary['version']} {summary['decision']} — {gate_words(summary)} "
           f"({summary['train_seconds']:.0f} s, {summary['train_tokens_per_second']:.0f} tokens/s)")
    return 0


def _gate_line(gate: dict) -> str:
    return f"{gate['decision']}: {gate_words(gate)}" if gate else ""


def cmd_versions(args, studio) -> int:
    data = studio.versions.list()
    lines = [f"{v['name']:<8} {v['status']:<9} {'serving' if v['active'] else '':<8} {_gate_line(v['gate'])}"
             for v in data]
    _print(args, data, "\n".join(lines))
    return 0


def cmd_blind(args, studio) -> int:
    data = studio.blind.win_rates()
    lines = [f"{r['version']} over {r['against']}: {r['win_rate']:.0%} of {r['picks']} picks "
             f"(95% interval {r['low']:.0%}-{r['high']:.0%})" for r in data]
    _print(args, data, "\n".join(lines) or "No blind picks yet: use Blind A/B on the Write tab.")
    return 0


def cmd_promote(args, studio) -> int:
    version = next((v for v in studio.versions.list() if v["name"] == args.version), None)
    if version is None:
        raise ValueError(f"There is no version {args.version!r}; `versions` lists them.")
    name = studio.versions.promote(version["id"], user=OPERATOR)
    _print(args, {"serving": name}, f"Now serving {name}.")
    return 0


def cmd_rollback(args, studio) -> int:
    name = studio.versions.rollback(user=OPERATOR)
    _print(args, {"serving": name}, f"Rolled back: now serving {name}.")
    return 0


def cmd_backup(args, studio) -> int:
    settings = studio.settings
    path = (backup_sqlite(settings.database_url, args.output) if args.output
            else timestamped_backup(settings.database_url, settings.data_path / "backups"))
    _print(args, {"path": str(path)}, f"Backed up to {path}")
    return 0


def cmd_add_user(args) -> int:
    """Needs no studio: it writes the auth file the app reads."""
    password = getpass.getpass(f"Password for {args.name}: ") if sys.stdin.isatty() else sys.stdin.readline()
    add_user(args.auth_file, args.name, password.rstrip("\n"), admin=args.admin)
    print(f"{'Admin' if args.admin else 'Writer'} {args.name} saved in {args.auth_file}.")
    return 0


def _check_export(args: argparse.Namespace) -> None:
    """Refuse a bad combination of export options before the database is opened."""
    if args.format == "markdown":
        if args.draft_id is None:
            raise ValueError("export needs a DRAFT_ID, or --format sft|kto|dpo to export the rated drafts or preferences.")
        return
    if args.output is None:
        raise ValueError(f"--output is required with --format {args.format}: the dataset is a JSON lines file.")
    if args.draft_id is not None:
        raise ValueError(f"--format {args.format} exports every rated draft; leave out the draft id.")


# -- the parser ------------------------------------------------------------------------------------


def _add_drafting_commands(commands, common) -> None:
    gen = commands.add_parser("generate", parents=[common], help="Write a draft from a template (streams to stdout).")
    gen.add_argument("template", help="Template id, as `templates` lists them.")
    gen.add_argument("--field", "-f", action="append", default=[], metavar="NAME=VALUE",
                     help="A field value; repeat for several. Fields left out take their defaults.")
    for name in SAMPLER_NAMES:
        f = SamplerSettings.__dataclass_fields__[name]
        kind = float if f.type == "float" else int
        gen.add_argument("--" + name.replace("_", "-"), type=kind, help=f"{f.metadata['help']} Default: the template's.")
    gen.set_defaults(func=cmd_generate)

    cont = commands.add_parser("continue", parents=[common], help="Extend a draft.")
    cont.add_argument("draft_id", type=int)
    cont.add_argument("--max-new-tokens", type=int, help="How many more tokens at most (default: as before).")
    cont.set_defaults(func=cmd_continue)

    rate = commands.add_parser("rate", parents=[common], help="Rate a draft 1-5 stars; rating again replaces it.")
    rate.add_argument("draft_id", type=int)
    rate.add_argument("stars", type=int)
    rate.add_argument("--comment", default="")
    rate.set_defaults(func=cmd_rate)

    lst = commands.add_parser("list", parents=[common], help="List drafts, newest first.")
    lst.add_argument("--template", help="Only drafts of this template.")
    lst.add_argument("--min-stars", type=int, help="Only drafts rated at least this.")
    lst.add_argument("--unrated", action="store_true", help="Only drafts not rated yet.")
    lst.add_argument("--limit", type=int, default=50)
    lst.set_defaults(func=cmd_list)

    show = commands.add_parser("show", parents=[common], help="Show one draft with its rating and settings.")
    show.add_argument("draft_id", type=int)
    show.set_defaults(func=cmd_show)

    export = commands.add_parser(
        "export", parents=[common],
        help="Export a draft as Markdown, or the rated drafts as a training dataset (JSON lines).")
    export.add_argument("draft_id", type=int, nargs="?", help="The draft to export (with --format markdown).")
    export.add_argument("--format", choices=("markdown", *EXPORT_FORMATS), default="markdown",
                        help="markdown: one draft; sft: drafts rated --min-stars or more, deduplicated; "
                             "kto: every rated draft, labelled by --min-stars; "
                             "dpo: the writers' picks between candidates (prompt, chosen, rejected).")
    export.add_argument("--min-stars", type=int, default=4, help="The rating that counts as good (sft, kto).")
    export.add_argument("--output", "-o", type=Path, help="File to write (default: stdout; required for sft, kto, dpo).")
    export.set_defaults(func=cmd_export)


def _add_model_commands(commands, common) -> None:
    train = commands.add_parser("train", parents=[common], help="Fine-tune on the writers' ratings now, in this process "
                                "(or data parallel: accelerate launch --num_processes N -m studio train).")
    train.add_argument("--run-id", type=int, help="Carry out this queued run (what the app's runner does).")
    train.add_argument("--claimed-by", help="The runner (host:pid) that claimed --run-id for this process.")
    add_arguments(train, only=tuple(FROM_SETTINGS.values()))
    for name in ("epochs", "learning_rate"):
        f = TrainingConfig.__dataclass_fields__[name]
        train.add_argument("--" + name.replace("_", "-"), type=float if "float" in f.type else int,  # "float | None"
                           help=f"{f.metadata['help']} Default: {f.default}.")
    train.set_defaults(func=cmd_train)

    commands.add_parser("versions", parents=[common], help="List the model versions with their gate figures."
                        ).set_defaults(func=cmd_versions)
    commands.add_parser("blind", parents=[common], help="Blind A/B win rates: how often writers picked the newer "
                        "of two versions.").set_defaults(func=cmd_blind)
    promote = commands.add_parser("promote", parents=[common], help="Serve a version (e.g. a rejected candidate).")
    promote.add_argument("version", help="Version name, e.g. v2.")
    promote.set_defaults(func=cmd_promote)
    commands.add_parser("rollback", parents=[common], help="Serve the version the active one was trained from."
                        ).set_defaults(func=cmd_rollback)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    add_arguments(common, only=("model", "data_dir", "db", "device", "user"))
    common.add_argument("--json", action="store_true", help="Print the result as JSON.")

    parser = argparse.ArgumentParser(prog="python -m studio", description="Story Studio from the command line.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("templates", parents=[common], help="List the genre templates and their fields."
                        ).set_defaults(func=cmd_templates)
    _add_drafting_commands(commands, common)
    _add_model_commands(commands, common)

    backup = commands.add_parser("backup", parents=[common], help="Copy the SQLite database while the studio runs.")
    backup.add_argument("--output", "-o", type=Path, help="The copy (default: DATA_DIR/backups/studio-TIME.db).")
    backup.set_defaults(func=cmd_backup)

    add_user_cmd = commands.add_parser("add-user", help="Add (or reset) a writer account in an auth file.")
    add_user_cmd.add_argument("name")
    add_user_cmd.add_argument("--auth-file", type=Path, required=True, help="The file the app reads with --auth-file.")
    add_user_cmd.add_argument("--admin", action="store_true", help="May start training, promote and roll back.")
    add_user_cmd.set_defaults(func=cmd_add_user, needs_studio=False)
    return parser


def run(args: argparse.Namespace) -> int:
    if not getattr(args, "needs_studio", True):
        return args.func(args)
    if args.command == "export":
        _check_export(args)
    settings = settings_from(args)
    if args.func is not cmd_train:
        return _run_in_studio(args, settings)
    if not processes.state().is_main_process:  # another process of `accelerate launch`: it trains, no more
        return processes.follow(settings)
    with processes.leading():
        return _run_in_studio(args, settings)


def _run_in_studio(args: argparse.Namespace, settings) -> int:
    from studio.core.studio import Studio

    args.user = settings.user  # the writer this command acts as: --user, STUDIO_USER or the default
    studio = Studio(settings)
    if args.func in (cmd_generate, cmd_continue, cmd_train):  # they write with --model: it serves from now on
        studio.use_model()
    return args.func(args, studio)


def main(argv: list[str] | None = None) -> int:
    configure_logging("%(message)s")
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except (*USER_ERRORS, ValueError) as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
