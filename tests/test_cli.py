"""The command line drives the same database as the page, prints JSON for scripts, and fails clearly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from studio.__main__ import main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def cli(settings, capsys):
    common = ["--model", settings.model, "--data-dir", settings.data_dir]

    def run(*args: str) -> tuple[int, str, str]:
        code = main([args[0], *common, *args[1:]])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_commands_that_only_read_never_change_what_the_studio_serves(cli, settings, tiny_base_model_dir, caplog):
    from storage import registry
    from studio.core.studio import Studio

    def serving() -> tuple[str, str]:
        with Studio(settings).sessions() as session:
            version = registry.active_version(session)
            return version.name, version.base_model

    code, out, _ = cli("generate", "poetry", "--max-new-tokens", "3", "--json")
    assert code == 0 and serving() == ("base", settings.model)
    draft_id = str(json.loads(out)["draft_id"])
    other = ["--model", str(tiny_base_model_dir)]  # another model than the app serves
    for command in (["list"], ["show", draft_id], ["versions"], ["blind"], ["templates"], ["export", draft_id]):
        code, _, err = cli(*command, *other)
        assert code == 0, err
        assert serving() == ("base", settings.model), command  # a look changes nothing
    code, _, err = cli("generate", "poetry", "--max-new-tokens", "3", *other)  # writing with it switches, and says so
    assert code == 0, err
    assert serving() == ("base-2", str(tiny_base_model_dir)) and "Now serving base-2" in caplog.text


def test_generate_rate_list_show_export_round_trip(cli, tmp_path):
    code, out, _ = cli("generate", "poetry", "--field", "subject=owls at dusk", "--max-new-tokens", "9", "--seed", "2", "--json")
    assert code == 0
    made = json.loads(out)
    assert made["new_tokens"] == 9 and made["seed"] == 2 and made["text"]

    code, out, _ = cli("rate", str(made["draft_id"]), "5", "--comment", "keep", "--json")
    assert code == 0 and json.loads(out) == {"draft_id": made["draft_id"], "stars": 5, "comment": "keep", "training_run": None}

    code, out, _ = cli("list", "--min-stars", "4", "--json")
    listed = json.loads(out)
    assert [d["id"] for d in listed] == [made["draft_id"]] and listed[0]["stars"] == 5

    code, out, _ = cli("show", str(made["draft_id"]), "--json")
    assert json.loads(out)["fields"]["subject"] == "owls at dusk"

    target = tmp_path / "poem.md"
    code, out, _ = cli("export", str(made["draft_id"]), "-o", str(target))
    assert code == 0 and made["text"].strip() in target.read_bytes().decode("utf-8")


def test_generate_streams_text_to_stdout(cli):
    code, out, err = cli("generate", "horror", "--max-new-tokens", "6")
    assert code == 0 and out.strip() and "[draft 1: 6 tokens" in err


def test_templates_lists_every_genre_as_json(cli):
    code, out, _ = cli("templates", "--json")
    ids = [t["id"] for t in json.loads(out)]
    assert code == 0 and "fantasy" in ids and "chinese_poem" in ids


@pytest.mark.parametrize("args, message", [
    (("rate", "1", "4"), "Draft 1 does not exist."),
    (("generate", "westerns"), "Unknown template 'westerns'"),
    (("generate", "fantasy", "--field", "premise="), "“Premise” is required"),
    (("generate", "fantasy", "--field", "premise"), "--field takes NAME=VALUE"),
    (("generate", "fantasy", "--max-new-tokens", "99999"), "max_new_tokens must be between"),
    (("list", "--template", "westerns"), "Unknown template 'westerns'"),
    (("train", "--train-min-stars", "9"), "--train-min-stars must be 1 to 5, not 9."),
    (("train", "--gate-alpha", "1.5"), "--gate-alpha must be between 0 and 1"),
])
def test_bad_input_exits_2_with_one_readable_line(cli, args, message):
    code, out, err = cli(*args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_help_lists_the_subcommands_and_an_unknown_model_gets_advice(tmp_path):
    shown = subprocess.run([sys.executable, "-m", "studio", "--help"], capture_output=True, text=True, cwd=REPO)
    for command in ("generate", "rate", "list", "export"):
        assert command in shown.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "studio", "generate", "fantasy", "--model", str(tmp_path / "nowhere"),
         "--data-dir", str(tmp_path)], capture_output=True, text=True, cwd=REPO,
    )
    assert missing.returncode == 2
    assert "The model folder" in missing.stderr and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_export_kto_writes_a_dataset_and_reports_the_row_count(cli, tmp_path):
    from datasets import load_dataset

    for stars in ("5", "2"):
        code, out, _ = cli("generate", "poetry", "--max-new-tokens", "8", "--json")
        assert code == 0
        assert cli("rate", str(json.loads(out)["draft_id"]), stars)[0] == 0
    target = tmp_path / "kto.jsonl"

    code, out, _ = cli("export", "--format", "kto", "-o", str(target), "--json")

    assert code == 0 and json.loads(out) == {"format": "kto", "path": str(target), "rows": 2}
    rows = load_dataset("json", data_files=str(target), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert rows["label"] == [True, False] and rows[0]["prompt"][-1]["role"] == "user"

    code, out, _ = cli("export", "--format", "sft", "--min-stars", "5", "-o", str(tmp_path / "sft.jsonl"))
    assert code == 0 and out == f"Wrote 1 rows to {tmp_path / 'sft.jsonl'}\n"


@pytest.mark.parametrize("args, message", [
    (("export", "--format", "sft"), "--output is required with --format sft"),
    (("export", "--format", "kto", "3", "-o", "x.jsonl"), "leave out the draft id"),
    (("export",), "export needs a DRAFT_ID"),
    (("export", "--format", "sft", "-o", "x.jsonl"), "no drafts rated 4 stars or higher"),
])
def test_export_misuse_exits_2_with_one_readable_line(cli, args, message):
    code, out, err = cli(*args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and "Traceback" not in err
