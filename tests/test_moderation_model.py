"""The optional moderation classifier: drafts it scores above the threshold on a flagging label are
flagged (the reason names label and score), kept, and never trained on; bad models stop the start.

The classifiers are tiny BERT models built here whose scores are fixed by their weights
(tests/classifiers.py), so what should be flagged is known exactly.
"""

from __future__ import annotations

import pytest

from app import main
from studio.config import Settings, settings_from
from studio.core.studio import Studio
from studio.errors import ModelError
from studio.learning.splits import build_split
from studio.trust.classifier import Classifier
from studio.trust.moderation import ContentFilter
from tests.classifiers import build_tiny_classifier
from tests.drafts import seed_rated_drafts

CLEAN_PREMISE = "A lighthouse keeper befriends a whale."


@pytest.fixture(scope="module")
def toxic_model(tmp_path_factory):
    """Scores every text toxic: softmax of (0, 4) gives toxic 0.98."""
    return build_tiny_classifier(tmp_path_factory.mktemp("toxic-classifier"), {"ok": 0.0, "toxic": 4.0})


@pytest.fixture(scope="module")
def unsure_model(tmp_path_factory):
    """Scores every text toxic 0.73 (softmax of (0, 1)): flagged or not depending on the threshold."""
    return build_tiny_classifier(tmp_path_factory.mktemp("unsure-classifier"), {"ok": 0.0, "toxic": 1.0})


def _write(studio: Studio, premise: str = CLEAN_PREMISE) -> dict:
    drafting = studio.drafts.write("fantasy", {"premise": premise}, {"max_new_tokens": 6}, user="local")
    list(drafting)
    return studio.drafts.get(drafting.draft_id, user="local")


def test_a_draft_the_classifier_scores_toxic_is_flagged_shown_and_never_trained_on(tmp_path, tiny_model_dir,
                                                                                   toxic_model):
    studio = Studio(Settings(model=str(tiny_model_dir), data_dir=str(tmp_path / "data"),
                             moderation_model=str(toxic_model)))
    studio.content_filter.prepare()
    record = _write(studio)
    assert ContentFilter.load().check(record["text"], record["prompt"]) == ""  # the word lists pass it
    assert record["flagged"] and record["flag_reason"] == "Flagged by the moderation model: toxic 0.98"
    assert studio.drafts.list(user="local")[0].flagged  # ⚠ in History
    assert "⚠ Flagged" in studio.drafts.export_markdown(record["id"], user="local")

    studio.drafts.rate(record["id"], 5, user="local")
    clean = seed_rated_drafts(studio, 8)  # rated drafts stored without the filter
    with studio.sessions() as session:
        split = build_split(session)
        used = {e.draft_id for e in split.train + split.held_out}
        assert record["id"] not in used and used == set(clean)
    exported = [row["completion"][0]["content"] for row in studio.drafts.export_dataset("kto")]
    assert len(exported) == 8 and record["text"] not in exported


def test_both_the_word_lists_and_the_classifier_give_their_reasons(tmp_path, tiny_model_dir, toxic_model):
    studio = Studio(Settings(model=str(tiny_model_dir), data_dir=str(tmp_path / "data"),
                             moderation_model=str(toxic_model)))
    record = _write(studio, "A story that is secretly porn.")  # the classifier loads here, at the first draft
    assert record["flag_reason"] == "Matched the content filter: porn; Flagged by the moderation model: toxic 0.98"


def test_the_threshold_and_the_flagging_labels_decide(tmp_path, tiny_model_dir, unsure_model):
    assert Classifier(str(unsure_model), ("toxic",), threshold=0.5).check("calm sea") == \
        "Flagged by the moderation model: toxic 0.73"
    assert Classifier(str(unsure_model), ("toxic",), threshold=0.8).check("calm sea") == ""
    assert Classifier(str(unsure_model), ("OK",), threshold=0.5).check("calm sea") == ""  # ok scores 0.27

    studio = Studio(Settings(model=str(tiny_model_dir), data_dir=str(tmp_path / "data"),
                             moderation_model=str(unsure_model), moderation_threshold=0.8))
    record = _write(studio)
    assert not record["flagged"] and record["flag_reason"] == ""

    # A multi-label model scores each label on its own (sigmoid); only the labels named flag.
    multi = build_tiny_classifier(tmp_path / "multi", {"toxic": 3.0, "obscene": -3.0, "threat": 3.0},
                                  multi_label=True)
    assert Classifier(str(multi), ("toxic", "obscene")).check("x") == "Flagged by the moderation model: toxic 0.95"
    assert Classifier(str(multi), ("obscene",)).check("x") == ""


def test_drafts_longer_than_the_classifiers_context_are_scored_in_windows(toxic_model):
    classifier = Classifier(str(toxic_model), ("toxic",))
    long_draft = " ".join(["the detective looked at the locked door and smiled"] * 300)  # ~3,000 tokens; it reads 32
    assert classifier.scores(long_draft, "a short prompt") == {"toxic": pytest.approx(0.982, abs=1e-3)}
    assert classifier.scores("", "  ") == {"toxic": 0.0}


def test_a_missing_or_wrong_moderation_model_stops_the_start_with_a_clear_error(tmp_path, tiny_model_dir,
                                                                                toxic_model, capsys):
    code = main(["--model", str(tiny_model_dir), "--data-dir", str(tmp_path / "data"),
                 "--moderation-model", str(tmp_path / "no-such-model")])
    err = capsys.readouterr().err
    assert code == 2 and "error: The moderation model folder" in err and "does not exist" in err
    assert "Traceback" not in err

    with pytest.raises(ModelError, match="not a text-classification model .it is LlamaForCausalLM"):
        Classifier(str(tiny_model_dir), ("toxic",)).load()
    with pytest.raises(ModelError, match="names hate, which .* its labels are ok, toxic"):
        Classifier(str(toxic_model), ("hate",)).load()
    with pytest.raises(ModelError, match="Could not load the moderation model 'unitary/toxic-bert'.*hub"):
        Classifier("unitary/toxic-bert", ("toxic",)).load()  # tests never reach the hub
    broken = tmp_path / "broken"
    broken.mkdir()
    for part in toxic_model.iterdir():
        (broken / part.name).write_bytes(part.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="Could not load the moderation model .*save_pretrained"):
        Classifier(str(broken), ("toxic",)).load()


def test_moderation_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="--moderation-threshold must be above 0 and below 1"):
        Settings(moderation_threshold=1.5)
    with pytest.raises(ValueError, match="--moderation-model needs --moderation on"):
        Settings(moderation="off", moderation_model="some/model")
    with pytest.raises(ValueError, match="--moderation-labels must name at least one label"):
        Settings(moderation_model="some/model", moderation_labels=" , ")
    assert Settings(moderation_labels="toxic, obscene").flag_labels == ("toxic", "obscene")
    from_env = settings_from(environ={"STUDIO_MODERATION_MODEL": "./tox", "STUDIO_MODERATION_LABELS": "insult",
                                      "STUDIO_MODERATION_THRESHOLD": "0.7"})
    assert from_env.moderation_model == "./tox" and from_env.flag_labels == ("insult",)
    assert from_env.moderation_threshold == 0.7
