"""Candidates side by side, the writer's pick stored as preferences, and the DPO export."""

from __future__ import annotations

import json

import pytest

from storage import NotFoundError, StorageError
from studio.dataset import export_rows, write_jsonl
from studio.errors import GenerationError
from studio.together import stream_together


def test_candidates_stream_together_with_different_seeds_and_are_all_saved(studio):
    candidates = studio.candidates("poetry", {"subject": "tides"}, {"max_new_tokens": 12, "seed": 40}, count=3)
    updates = list(stream_together(candidates))
    assert {index for index, _ in updates} == {0, 1, 2}  # all three streamed, interleaved
    seeds = [c.stream.settings.seed for c in candidates]
    assert seeds == [40, 41, 42]
    records = [studio.draft(c.draft_id) for c in candidates]
    assert len({r["text"] for r in records}) == 3 and len({r["prompt"] for r in records}) == 1
    with pytest.raises(GenerationError, match="2 to 4"):
        studio.candidates("poetry", {}, {}, count=5)


def test_stop_ends_every_candidate_written_together(studio):
    candidates = studio.candidates("mystery", {}, {"max_new_tokens": 1500}, count=2, key="tab")
    for n, _ in enumerate(stream_together(candidates)):
        if n == 4:
            studio.stop("tab")
    assert all(studio.draft(c.draft_id)["stopped"] for c in candidates)


def test_a_pick_is_stored_once_per_pair_and_exports_for_dpo(studio, tmp_path):
    a, b, c = studio.candidates("poetry", {}, {"max_new_tokens": 6}, count=3)
    list(stream_together([a, b, c]))
    assert studio.prefer(a.draft_id, [b.draft_id, c.draft_id]) == 2
    assert studio.prefer(a.draft_id, [b.draft_id]) == 0  # the same pick again adds nothing

    list(studio.write("horror", {}, {"max_new_tokens": 4}))
    horror_id = studio.drafts(template_id="horror")[0].id
    with pytest.raises(StorageError, match="different prompts"):
        studio.prefer(a.draft_id, [horror_id])
    with pytest.raises(NotFoundError):
        studio.prefer(a.draft_id, [b.draft_id], user="someone-else")

    with studio.sessions() as session:
        rows = export_rows(session, "dpo")
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows] == [
        (a.text, b.text), (a.text, c.text)]
    assert rows[0]["prompt"][-1] == {"role": "user", "content": studio.draft(a.draft_id)["prompt"]}
    path = tmp_path / "dpo.jsonl"
    write_jsonl(rows, path)
    import datasets

    loaded = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.column_names == ["prompt", "chosen", "rejected"] and len(loaded) == 2
    assert json.loads(path.read_text(encoding="utf-8").splitlines()[0])["chosen"][0]["role"] == "assistant"
