"""Candidates side by side, the writer's pick stored as preferences, and the DPO export."""

from __future__ import annotations

import json

import pytest

from storage import NotFoundError, StorageError
from studio.errors import GenerationError
from studio.learning.exports import write_jsonl
from studio.ui.together import stream_together


def test_candidates_stream_together_with_different_seeds_and_are_all_saved(studio):
    candidates = studio.drafts.candidates("poetry", {"subject": "tides"}, {"max_new_tokens": 12, "seed": 40}, count=3, user="local")
    updates = list(stream_together(candidates))
    assert {index for index, _ in updates} == {0, 1, 2}  # all three streamed, interleaved
    seeds = [c.stream.settings.seed for c in candidates]
    assert seeds == [40, 41, 42]
    records = [studio.drafts.get(c.draft_id, user="local") for c in candidates]
    assert len({r["text"] for r in records}) == 3 and len({r["prompt"] for r in records}) == 1
    with pytest.raises(GenerationError, match="2 to 4"):
        studio.drafts.candidates("poetry", {}, {}, count=5, user="local")


def test_stop_ends_every_candidate_written_together(studio):
    candidates = studio.drafts.candidates("mystery", {}, {"max_new_tokens": 1500}, count=2, key="tab", user="local")
    for n, _ in enumerate(stream_together(candidates)):
        if n == 4:
            studio.drafts.stop("tab")
    assert all(studio.drafts.get(c.draft_id, user="local")["stopped"] for c in candidates)


def test_a_pick_is_stored_once_per_pair_and_exports_for_dpo(studio, tmp_path):
    a, b, c = studio.drafts.candidates("poetry", {}, {"max_new_tokens": 6}, count=3, user="local")
    list(stream_together([a, b, c]))
    assert studio.drafts.prefer(a.draft_id, [b.draft_id, c.draft_id], user="local") == 2
    assert studio.drafts.prefer(a.draft_id, [b.draft_id], user="local") == 0  # the same pick again adds nothing

    list(studio.drafts.write("horror", {}, {"max_new_tokens": 4}, user="local"))
    horror_id = studio.drafts.list(template_id="horror", user="local")[0].id
    with pytest.raises(StorageError, match="different prompts"):
        studio.drafts.prefer(a.draft_id, [horror_id], user="local")
    with pytest.raises(NotFoundError):
        studio.drafts.prefer(a.draft_id, [b.draft_id], user="someone-else")

    rows = studio.drafts.export_dataset("dpo")
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows] == [
        (a.text, b.text), (a.text, c.text)]
    assert rows[0]["prompt"][-1] == {"role": "user", "content": studio.drafts.get(a.draft_id, user="local")["prompt"]}
    path = tmp_path / "dpo.jsonl"
    write_jsonl(rows, path)
    import datasets

    loaded = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.column_names == ["prompt", "chosen", "rejected"] and len(loaded) == 2
    assert json.loads(path.read_text(encoding="utf-8").splitlines()[0])["chosen"][0]["role"] == "assistant"
