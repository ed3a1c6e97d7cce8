"""Rated drafts become training data: the right drafts, no duplicates, a fair split, TRL's formats."""

from __future__ import annotations

import pytest

from storage.repository import add_draft, list_rated_drafts, rate_draft
from studio.errors import StudioError
from studio.learning.dataset import Example, dedupe, rated_examples, tokenize_example
from studio.learning.splits import (
    NotEnoughDrafts,
    NotEnoughPreferences,
    build_preference_split,
    build_rated_split,
    build_split,
    cap_in_proportion,
)
from studio.learning.exports import write_jsonl

EN = (
    "The old lighthouse keeper climbed the spiral stairs every evening to light the lamp. "
    "One stormy night she saw a boat drifting toward the rocks, so she rang the bell "
    "until the sailors turned away and reached the harbour safely."
)
EN_OTHER = (
    "A detective in a grey coat studied the locked door of the library. The key was still inside, "
    "the window was painted shut, and yet the rare atlas had vanished overnight without a trace."
)
ZH = (
    "江南的春天总是下着细细的小雨。清晨，老渔夫撑着小船穿过石桥，两岸的桃花开得正好。"
    "孩子们在河边追着风筝奔跑，笑声惊起了一群白鹭。傍晚时分，炊烟升起，家家户户的灯火映在水面上，像一串温暖的珍珠。"
)
ZH_OTHER = "孔雀在树下展开美丽的尾巴，骄傲地问麻雀：你看我多漂亮？麻雀笑着说：漂亮的尾巴飞不高，我却能飞过那座大山，看见远方的大海。孔雀听了，低下头想了很久。"

# (text, the same text differing only in case and whitespace, one word changed, a different text)
TEXTS = {
    "english": (EN, "\n  " + EN.upper().replace(" the ", "  the\t") + "  \n", EN.replace("stormy", "windy"), EN_OTHER),
    "chinese": (ZH, "\n  " + ZH + "  \n", ZH.replace("风筝", "蝴蝶"), ZH_OTHER),
}


def add_rated(studio, text: str, stars: int | None = None, *, user: str = "local",
              template_id: str = "poetry", prompt: str = "Write a short poem about the rain.") -> int:
    """A draft with controlled text (no generation), rated by its author when stars is given."""
    with studio.sessions.begin() as s:
        draft = add_draft(
            s, user=user, template_id=template_id, template_name=template_id, fields={}, prompt=prompt,
            model_input=f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n",
            settings={}, seed=1, model_name="tiny", model_version="test", text=text, ended=True,
        )
        if stars is not None:
            rate_draft(s, draft.id, stars, user=user)
        return draft.id


def example(draft_id: int, text: str = "", stars: int = 5) -> Example:
    return Example(draft_id=draft_id, context="", prompt="", completion=text or f"Story {draft_id} is its own tale.",
                   stars=stars, user="local", template_id="poetry")


def distinct_texts(n: int) -> list[str]:
    animals = ["fox", "owl", "otter", "heron", "badger", "wren", "hare", "newt", "moth", "crow", "stag", "lynx"]
    places = ["river", "orchard", "harbour", "library", "meadow", "tower", "market", "cellar", "bridge", "glade"]
    return [f"At dawn the {animals[i % 12]} crossed the {places[i % 10]} carrying story number {i}." for i in range(n)]


# -- choosing the drafts -----------------------------------------------------------------------


def test_only_drafts_rated_at_or_above_the_threshold_are_examples(studio):
    three, four, five = (add_rated(studio, distinct_texts(3)[i], stars) for i, stars in enumerate((3, 4, 5)))
    add_rated(studio, "Never rated, however good it may be.")
    empty = add_rated(studio, "   \n ", 5)  # an empty draft teaches nothing
    someone_else = add_rated(studio, "Rated by someone who did not write it.")
    with studio.sessions.begin() as s:
        rate_draft(s, someone_else, 5, user="visitor")  # only the author's rating counts

    with studio.sessions() as s:
        chosen = rated_examples(s)
        assert [e.draft_id for e in chosen] == [four, five]
        assert [(e.stars, e.user, e.template_id) for e in chosen] == [(4, "local", "poetry"), (5, "local", "poetry")]
        assert chosen[0].context.startswith("<|im_start|>user") and chosen[0].prompt.startswith("Write")
        chosen = rated_examples(s, min_stars=5)
        assert [e.draft_id for e in chosen] == [five]
        assert [d.id for d, _ in list_rated_drafts(s)] == [three, four, five, empty]


def test_rated_drafts_can_be_listed_for_one_user(studio):
    mine = add_rated(studio, "Mine.", 4)
    theirs = add_rated(studio, "Theirs.", 5, user="ana")
    with studio.sessions() as s:
        assert [d.id for d, _ in list_rated_drafts(s)] == [mine, theirs]
        assert [(d.id, r.stars) for d, r in list_rated_drafts(s, user="ana")] == [(theirs, 5)]


# -- duplicates --------------------------------------------------------------------------------


@pytest.mark.parametrize("language", TEXTS)
def test_exact_and_near_duplicates_are_dropped_and_the_oldest_kept(language):
    text, same, one_word_changed, different = TEXTS[language]
    if language == "english":
        assert len(text.split()) == 40
    examples = [example(1, text), example(2, same), example(3, one_word_changed), example(4, different)]

    kept, dropped = dedupe(reversed(examples))  # the order given does not decide which is kept

    assert [e.draft_id for e in kept] == [1, 4] and dropped == [2, 3]


def test_the_near_threshold_decides_what_counts_as_a_duplicate():
    examples = [example(1, EN), example(2, EN.replace("stormy", "windy"))]
    assert dedupe(examples, near_threshold=0.99)[1] == []
    assert dedupe(examples, near_threshold=0.5)[1] == [2]


def test_texts_that_merely_share_a_template_are_kept():
    texts = distinct_texts(12)
    kept, dropped = dedupe([example(i, t) for i, t in enumerate(texts, 1)])
    assert len(kept) == 12 and dropped == []


# -- splitting ---------------------------------------------------------------------------------


def _version(studio, train: list[int], held: list[int]) -> None:
    """A version that trained on `train` and was judged on `held`, as a run records them."""
    from storage import registry

    with studio.sessions.begin() as session:
        base = registry.ensure_base_version(session, studio.settings.model)
        registry.add_version(session, name=registry.next_version_name(session), parent_id=base.id,
                             base_model=studio.settings.model, adapter_path=None, status="rejected", is_active=False,
                             train_draft_ids=train, held_out_draft_ids=held, hyperparameters={}, loss_curve=[], gate={})


def test_a_draft_keeps_its_side_for_every_method_that_comes_after(studio):
    """One held-out policy: a draft a KTO gate was judged on never trains an SFT run, and one an SFT
    run trained on is never held out by a KTO run (on 5b3b0f3 SFT re-drew its split by seed)."""
    liked = [add_rated(studio, t, 5) for t in distinct_texts(12)]
    disliked = [add_rated(studio, f"A dull tale, number {n}, that goes nowhere at all.", 1) for n in range(12)]
    with studio.sessions() as s:
        first = build_split(s, held_out_fraction=0.25)
    held_sft = {e.draft_id for e in first.held_out}
    assert len(held_sft) >= 2 and held_sft <= set(liked)
    _version(studio, [e.draft_id for e in first.train], sorted(held_sft))
    with studio.sessions() as s:  # a KTO run, with another held-out share: the sides stay
        kto = build_rated_split(s, held_out_fraction=0.6, sides=((lambda e: e.stars >= 4, 2), (lambda e: e.stars <= 2, 2)))
    assert held_sft <= {e.draft_id for e in kto.held_out}
    assert {e.draft_id for e in first.train} <= {e.draft_id for e in kto.train}
    assert {e.draft_id for e in kto.held_out} & set(disliked)  # new drafts are drawn afresh
    _version(studio, [e.draft_id for e in kto.train], [e.draft_id for e in kto.held_out])
    with studio.sessions() as s:
        again = build_split(s, held_out_fraction=0.1)
    assert {e.draft_id for e in again.held_out} == {e.draft_id for e in kto.held_out} & set(liked)


@pytest.mark.parametrize("drawn", [0.0, 0.99])
def test_however_the_draw_falls_six_liked_drafts_hold_out_two_and_train_four(studio, monkeypatch, drawn):
    """Every new draft drawn held out, or none: the run still has its minimum on each side."""
    from studio.learning import splits

    monkeypatch.setattr(splits, "draw", lambda key: drawn)
    ids = [add_rated(studio, t, 5) for t in distinct_texts(6)]
    with studio.sessions() as s:
        result = build_split(s, held_out_fraction=0.25, min_held_out=2, min_train=4)
    assert (len(result.held_out), len(result.train)) == (2, 4)
    assert sorted(e.draft_id for e in result.train + result.held_out) == ids


def test_the_cap_keeps_a_writers_liked_and_disliked_drafts_in_proportion():
    """A writer with 100 liked and 230 disliked drafts, capped at 100: 30 and 70, the newest of each
    (on 5b3b0f3: the 100 best rated, so 100 liked and nothing to contrast them with)."""
    items = [("ann", "liked" if n % 33 < 10 else "disliked", n) for n in range(330)] + [("bo", "liked", 1000)]
    kept = cap_in_proportion(items, 100, lambda i: i[0], lambda i: i[1])
    ann = [i for i in kept if i[0] == "ann"]
    assert sum(i[1] == "liked" for i in ann) == 30 and sum(i[1] == "disliked" for i in ann) == 70
    assert min(i[2] for i in ann if i[1] == "disliked") > max(i[2] for i in items if i[1] == "disliked") - 100
    assert ("bo", "liked", 1000) in kept and kept == sorted(kept, key=items.index)


def test_too_few_drafts_says_how_many_are_needed(studio):
    for text in distinct_texts(5):
        add_rated(studio, text, 5)
    with studio.sessions() as s:
        with pytest.raises(NotEnoughDrafts) as caught:
            build_split(s)
    message = str(caught.value)
    assert "5 usable drafts" in message and "at least 6" in message
    assert "Rate at least 1 more draft 4 stars or higher" in message
    assert isinstance(caught.value, StudioError)


def test_build_split_selects_dedupes_and_splits(studio):
    texts = distinct_texts(8)
    good = [add_rated(studio, t, 4 + i % 2) for i, t in enumerate(texts)]
    copy = add_rated(studio, texts[0].upper(), 5)
    add_rated(studio, "Dull.", 2)
    add_rated(studio, "Flat.", 3)

    with studio.sessions() as s:
        result = build_split(s)

    assert result.duplicates_dropped == [copy]
    assert len(result.held_out) >= 2 and len(result.train) >= 4
    assert sorted(e.draft_id for e in result.train + result.held_out) == good


def test_build_split_counts_drafts_after_dedupe(studio):
    for text in distinct_texts(4):
        add_rated(studio, text, 5)
        add_rated(studio, text + "  ", 4)  # the same again
    with studio.sessions() as s:
        with pytest.raises(NotEnoughDrafts) as caught:
            build_split(s, min_stars=4)
    message = str(caught.value)
    assert "4 usable drafts" in message and "4 duplicates left out" in message and "at least 6" in message
    assert "Rate at least 2 more drafts 4 stars or higher" in message


# -- tokenizing --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_loss_falls_on_the_completion_and_eos_only(tokenizer):
    context = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Write a short poem about the rain."}], tokenize=False, add_generation_prompt=True
    )
    item = Example(1, context, "Write a short poem about the rain.", "The rain on the river and the moon.", 5, "local", "poetry")

    tokens = tokenize_example(tokenizer, item)

    n_context = len(tokenizer(context, add_special_tokens=False).input_ids)
    assert tokens["labels"][:n_context] == [-100] * n_context
    assert -100 not in tokens["labels"][n_context:]
    assert tokens["labels"][n_context:] == tokens["input_ids"][n_context:]
    assert tokens["labels"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(tokens["labels"][n_context:-1]) == item.completion
    assert tokens["attention_mask"] == [1] * len(tokens["input_ids"])


def test_a_draft_cut_short_teaches_its_words_but_not_to_end_there(studio, tokenizer):
    """A draft its writer stopped (or whose stream died) did not end where its text stops: no trainer
    may put an end-of-text token after it (on 5b3b0f3 every one did). SFT trains its words without
    one; TRL's trainers end every draft: KTO takes the end off a cut one again (test_kto), and DPO
    trains a chosen one cut short up to its last finished sentence (whole with none)."""
    from studio.learning.dataset import PreferencePair, all_rated
    from studio.learning.finetune import kto_rows, preference_rows

    loaded = studio.pool.load()
    with studio.sessions.begin() as session:
        for n, ended in enumerate((True, False)):  # the second was cut (by Stop, or at the token limit)
            draft = add_draft(session, template_id="poetry", template_name="Poem", fields={}, prompt="A poem.",
                              model_input="<|im_start|>user\nA poem.<|im_end|>\n<|im_start|>assistant\n",
                              settings={}, seed=n, model_name=loaded.name, model_version="base", text=f"The rain on the river {n}",
                              ended=ended)
            rate_draft(session, draft.id, 5)
    with studio.sessions() as session:
        whole, cut = all_rated(session)
    assert (whole.ended, cut.ended) == (True, False)
    assert tokenize_example(tokenizer, whole)["labels"][-1] == tokenizer.eos_token_id
    cut_labels = tokenize_example(tokenizer, cut)["labels"]
    assert tokenizer.eos_token_id not in cut_labels and tokenizer.decode(cut_labels[-3:]).strip().endswith("1")

    disliked_cut = Example(**{**cut.__dict__, "stars": 1})
    # Cut after two sentences: the writer liked them, and they end where a draft may end.
    sentences_then_cut = Example(**{**cut.__dict__, "completion": "The rain fell. The river rose! And the"})
    rows = kto_rows(tokenizer, [whole, cut, disliked_cut, sentences_then_cut], lambda e: e.stars >= 4)
    assert [(r["completion"], r["label"], r["ended"]) for r in rows] == [  # whole: KTO takes off the end of a cut one
        (whole.completion, True, True), (cut.completion, True, False), (cut.completion, False, False),
        (sentences_then_cut.completion, True, False)]
    pairs = [PreferencePair(whole, cut), PreferencePair(cut, whole), PreferencePair(sentences_then_cut, whole)]
    assert [r["chosen"] for r in preference_rows(tokenizer, pairs)] == [
        whole.completion, cut.completion, "The rain fell. The river rose!"]


def test_long_examples_are_cut_to_max_length(tokenizer):
    context = "<|im_start|>user\nWrite a fairy tale.<|im_end|>\n<|im_start|>assistant\n"
    n_context = len(tokenizer(context, add_special_tokens=False).input_ids)
    item = Example(1, context, "Write a fairy tale.", " ".join(distinct_texts(10)), 5, "local", "fairy_tale")

    cut = tokenize_example(tokenizer, item, max_length=n_context + 5)
    assert len(cut["input_ids"]) == n_context + 5 == len(cut["labels"]) == len(cut["attention_mask"])
    assert cut["labels"].count(-100) == n_context  # the whole context kept
    assert cut["labels"][-1] != tokenizer.eos_token_id  # the text did not end there

    short = tokenize_example(tokenizer, item, max_length=8)  # the context alone is too long
    assert len(short["input_ids"]) == 8 and short["labels"].count(-100) == 4


# -- exporting ---------------------------------------------------------------------------------


def load_jsonl(path, tmp_path):
    from datasets import load_dataset

    return load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf-cache"))


@pytest.fixture
def rated_mix(studio):
    """A Chinese poem (template with a system message), an English one, a duplicate, a weak and a lost one."""
    zh = add_rated(studio, ZH, 5, template_id="chinese_poem", prompt="请以“江南春雨”为题，写一首中文现代诗。")
    en = add_rated(studio, EN, 4)
    add_rated(studio, EN.lower(), 5)
    weak = add_rated(studio, EN_OTHER, 2)
    lost = add_rated(studio, ZH_OTHER, 4, template_id="removed_genre")
    return zh, en, weak, lost


def test_sft_export_is_trl_conversational_prompt_completion(studio, rated_mix, tmp_path):
    path = tmp_path / "sft.jsonl"
    write_jsonl(studio.drafts.export_dataset("sft"), path)

    rows = load_jsonl(path, tmp_path)

    assert rows.column_names == ["prompt", "completion"] and len(rows) == 3  # duplicate and weak left out
    poem = rows[0]
    assert poem["prompt"] == [
        {"role": "system", "content": studio.catalog.get("chinese_poem").system},
        {"role": "user", "content": "请以“江南春雨”为题，写一首中文现代诗。"},
    ]
    assert poem["completion"] == [{"role": "assistant", "content": ZH}]
    assert rows[1]["completion"][0]["content"] == EN
    assert [m["role"] for m in rows[2]["prompt"]] == ["user"]  # its template is gone: no system message
    assert "江南" in path.read_text(encoding="utf-8")  # written as text, not \\u escapes


def test_kto_export_labels_every_rated_draft(studio, rated_mix, tmp_path):
    path = tmp_path / "kto.jsonl"
    write_jsonl(studio.drafts.export_dataset("kto"), path)

    rows = load_jsonl(path, tmp_path)

    assert rows.column_names == ["prompt", "completion", "label"]
    assert rows["label"] == [True, True, True, False, True]
    assert rows[3]["completion"] == [{"role": "assistant", "content": EN_OTHER}]
    assert [r["label"] for r in studio.drafts.export_dataset("kto", min_stars=5)] == [
        True, False, True, False, False
    ]


def test_export_refuses_unknown_formats_and_empty_datasets(studio):
    add_rated(studio, EN, 3)
    with pytest.raises(StudioError, match="choose one of: sft, kto, dpo"):
        studio.drafts.export_dataset("orpo")
    with pytest.raises(StudioError, match="no preferences to export yet"):
        studio.drafts.export_dataset("dpo")
    with pytest.raises(StudioError, match="no drafts rated 4 stars or higher"):
        studio.drafts.export_dataset("sft")
    assert len(studio.drafts.export_dataset("kto")) == 1


def test_picks_are_split_by_prompt_and_flagged_drafts_left_out(studio):
    from storage.repository import update_draft
    from tests.drafts import seed_picks

    picks = seed_picks(studio, 10)  # 20 pairs, 2 per prompt
    with studio.sessions.begin() as session:
        update_draft(session, picks[0][1][0], flagged=True, flag_reason="blocked word")
        split = build_preference_split(session, min_pairs=8)
    assert len(split.train) + len(split.held_out) == 19  # the flagged draft's pair is gone
    assert len(split.held_out) >= 2 and split.train
    train_prompts = {p.chosen.context for p in split.train}
    assert not train_prompts & {p.chosen.context for p in split.held_out}


def test_too_few_picks_or_picks_of_a_single_prompt_say_what_is_needed(studio):
    from tests.drafts import seed_picks

    seed_picks(studio, 1)
    with studio.sessions() as session:
        with pytest.raises(NotEnoughPreferences, match="2 usable picks.*at least 8.*6 more times"):
            build_preference_split(session, min_pairs=8)
        with pytest.raises(StudioError, match="answers the same prompt"):
            build_preference_split(session, min_pairs=2)


def test_the_cap_per_writer_keeps_each_writers_newest_picks(studio):
    from tests.drafts import seed_picks

    seed_picks(studio, 6, user="ann")
    seed_picks(studio, 2, user="bo", start=6)
    with studio.sessions() as session:
        split = build_preference_split(session, min_pairs=2, max_per_writer=4)
    pairs = split.train + split.held_out
    assert sorted(p.chosen.user for p in pairs) == ["ann"] * 4 + ["bo"] * 4
    newest_ann = max(p.chosen.draft_id for p in pairs if p.chosen.user == "ann")
    assert all(p.chosen.draft_id >= newest_ann - 3 for p in pairs if p.chosen.user == "ann")
