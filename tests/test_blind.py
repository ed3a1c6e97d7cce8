"""Blind comparison of two model versions: same prompt and seed, sides hidden, picks counted."""

from __future__ import annotations

import json
import random

import pytest

from storage import registry
from storage.repository import NotFoundError, StorageError
from studio.core.blind import BlindComparisons, wilson_interval
from studio.errors import StudioError


def add_version(studio, name: str = "v1") -> str:
    """A real adapter with random LoRA weights, registered as a rejected candidate."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(studio.settings.model)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    folder = studio.settings.data_path / "adapters" / name
    get_peft_model(base, lora).save_pretrained(folder)
    with studio.sessions.begin() as session:
        active = registry.active_version(session)
        registry.add_version(session, name=name, parent_id=active.id, base_model=studio.settings.model,
                             adapter_path=str(folder), status="rejected", is_active=False, train_draft_ids=[],
                             held_out_draft_ids=[], hyperparameters={}, loss_curve=[], gate={})
    return name


def run_round(studio, **kwargs):
    blind_round = studio.blind.start("fantasy", {}, {"max_new_tokens": 6}, **{"user": "local", **kwargs})
    for drafting in blind_round.draftings:
        list(drafting)
    return blind_round, blind_round.save()


def test_with_one_version_there_is_nothing_to_compare(studio):
    with pytest.raises(StudioError, match="only one model version.*Train one"):
        studio.blind.start("fantasy", {}, user="local")


def test_a_round_writes_the_same_prompt_and_seed_with_both_versions_in_either_order(studio):
    add_version(studio)
    orders = set()
    for seed in range(6):
        studio.blind = BlindComparisons(studio.sessions, studio.pool, studio.drafts, studio.jobs, rng=random.Random(seed))
        blind_round, comparison_id = run_round(studio)
        studio.blind.pick(comparison_id, "A", user="local")  # the writer reads the versions only after a pick
        a, b = (studio.drafts.get(d.draft_id, user="local") for d in blind_round.draftings)
        assert {a["model_version"], b["model_version"]} == {"base", "v1"}
        assert (a["model_version"], b["model_version"]) == blind_round.versions
        assert a["prompt"] == b["prompt"] and a["seed"] == b["seed"]
        orders.add(blind_round.versions)
    assert orders == {("base", "v1"), ("v1", "base")}  # the side tells nothing


def test_a_pick_reveals_the_versions_counts_once_and_becomes_a_preference(studio):
    from storage.preferences import list_preferences

    add_version(studio)
    blind_round, comparison_id = run_round(studio)
    result = studio.blind.pick(comparison_id, "B", user="local")
    assert result["versions"] == {"A": blind_round.versions[0], "B": blind_round.versions[1]}
    assert result["winner"] == blind_round.versions[1]
    with pytest.raises(StorageError, match="already picked"):
        studio.blind.pick(comparison_id, "A", user="local")
    with pytest.raises(NotFoundError):
        studio.blind.pick(comparison_id, "A", user="someone-else")
    with studio.sessions() as session:
        pairs = [(c.id, r.id) for c, r in list_preferences(session)]
    a, b = (d.draft_id for d in blind_round.draftings)
    assert pairs == [(b, a)]


def test_until_the_pick_nothing_the_writer_can_open_says_which_version_wrote_either_draft(studio):
    """History, the export and the revisions list all read the draft: none names its version before
    the pick (on 5b3b0f3 each said "version v1" or "version base")."""
    add_version(studio)
    blind_round, comparison_id = run_round(studio)
    ids = [d.draft_id for d in blind_round.draftings]
    for draft_id in ids:
        versions = [studio.drafts.get(draft_id, user="local")["model_version"],
                    *(r["model_version"] for r in studio.revisions.list(draft_id, user="local"))]
        assert set(versions) == {"hidden until you pick A or B"}, versions
        exported = studio.drafts.export_markdown(draft_id, user="local")
        assert "(version hidden until you pick A or B)" in exported and "(version v1)" not in exported
    studio.blind.pick(comparison_id, "B", user="local")
    assert [studio.drafts.get(i, user="local")["model_version"] for i in ids] == list(blind_round.versions)
    assert f"version {blind_round.versions[0]}" in studio.drafts.export_markdown(ids[0], user="local")


def test_win_rates_come_from_the_picks_with_a_wilson_interval(studio):
    add_version(studio)
    wanted = ["v1", "v1", "v1", "base"]
    for winner in wanted:
        blind_round, comparison_id = run_round(studio)
        studio.blind.pick(comparison_id, "A" if blind_round.versions[0] == winner else "B", user="local")
    run_round(studio)  # a round not picked yet does not count
    [row] = studio.blind.win_rates()
    assert (row["version"], row["against"], row["picks"], row["wins"]) == ("v1", "base", 4, 3)
    assert row["win_rate"] == 0.75
    assert (row["low"], row["high"]) == pytest.approx(wilson_interval(3, 4))


def test_the_wilson_interval_matches_the_textbook_figures():
    assert wilson_interval(7, 10) == pytest.approx((0.3968, 0.8922), abs=1e-4)
    assert wilson_interval(0, 5) == pytest.approx((0.0, 0.4345), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_an_unknown_or_unfinished_version_is_refused(studio):
    add_version(studio)
    with pytest.raises(StudioError, match="v9 cannot be compared: choose one of v1"):
        studio.blind.start("fantasy", {}, against="v9", user="local")


def test_the_command_line_prints_the_win_rates(studio, capsys):
    from studio.__main__ import main

    common = ["--model", studio.settings.model, "--data-dir", studio.settings.data_dir]
    assert main(["blind", *common]) == 0
    assert "No blind picks yet" in capsys.readouterr().out
    add_version(studio)
    blind_round, comparison_id = run_round(studio)
    studio.blind.pick(comparison_id, "A" if blind_round.versions[0] == "v1" else "B", user="local")
    assert main(["blind", *common]) == 0
    assert "v1 over base: 100% of 1 picks (95% interval 21%-100%)" in capsys.readouterr().out
    assert main(["blind", *common, "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["version"], row["wins"], row["picks"]) == ("v1", 1, 1)
