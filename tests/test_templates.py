"""The genre catalog: every shipped template renders; bad values and bad templates get clear errors."""

from __future__ import annotations

import pytest

from studio.core.templates import TemplateCatalog, parse_template
from studio.errors import TemplateError
from studio.serving.generation import model_input
from studio.serving.models import load_model

GOOD = '''
name = "Test"
template = "Write about {{ topic }}{% if mood %} in a {{ mood }} mood{% endif %}."
[[fields]]
name = "topic"
label = "Topic"
default = "the sea"
required = true
max_length = 20
[[fields]]
name = "mood"
label = "Mood"
default = ""
max_length = 10
'''


@pytest.fixture(scope="module")
def catalog():
    return TemplateCatalog.load()


def test_catalog_covers_the_genres_writers_ask_for(catalog):
    ids = set(catalog.ids())
    assert len(catalog) >= 12
    for genre in ("fantasy", "science_fiction", "mystery", "romance", "horror", "fairy_tale", "poetry",
                  "news_summary", "ad_copy", "lesson_material", "technical_howto"):
        assert genre in ids
    assert sum(t.language == "zh" for t in catalog) >= 2


def test_every_template_renders_its_defaults_with_no_template_syntax_left(catalog):
    for t in catalog:
        prompt = t.render()
        assert prompt and "{{" not in prompt and "{%" not in prompt, t.id
        for f in t.fields:
            if f.required:
                assert f.default.strip() in prompt, (t.id, f.name)
        s = t.sampler
        assert 0 < s.temperature <= 1.5 and 32 <= s.max_new_tokens <= 1024, t.id


def test_field_values_fill_the_prompt_and_empty_optional_fields_leave_no_trace():
    t = parse_template("t", GOOD)
    assert t.render({"topic": "owls", "mood": "sleepy"}) == "Write about owls in a sleepy mood."
    assert t.render({"topic": "owls", "mood": ""}) == "Write about owls."
    assert t.render({}) == "Write about the sea."  # absent fields take their defaults


def test_missing_required_field_names_the_field():
    t = parse_template("t", GOOD)
    with pytest.raises(TemplateError, match="“Topic” is required"):
        t.render({"topic": "   "})


def test_over_long_field_says_the_limit():
    t = parse_template("t", GOOD)
    with pytest.raises(TemplateError, match="“Topic” is 21 characters long; the limit is 20"):
        t.render({"topic": "x" * 21})


def test_unknown_field_and_unknown_template_are_named(catalog):
    t = parse_template("t", GOOD)
    with pytest.raises(TemplateError, match="no field 'colour'"):
        t.render({"colour": "red"})
    with pytest.raises(TemplateError, match="Unknown template 'westerns'"):
        catalog.get("westerns")


def test_a_template_using_an_undeclared_variable_is_rejected_when_loaded():
    with pytest.raises(TemplateError, match="undeclared variables: secret"):
        parse_template("t", GOOD.replace("{{ topic }}", "{{ topic }}{{ secret }}"))


@pytest.mark.parametrize("attack", [
    "{{ topic.__class__.__mro__[1].__subclasses__() }}",
    "{{ topic.__class__.__init__.__globals__ }}",
    "{{ topic.format_map.__self__ }}",
])
def test_the_sandbox_keeps_templates_away_from_python_internals(attack):
    t = parse_template("t", GOOD.replace("{{ topic }}", attack))
    with pytest.raises(TemplateError, match="unsafe|has no attribute"):
        t.render({"topic": "owls"})


def test_a_writers_template_renders_in_a_child_that_holds_no_secret(monkeypatch):
    import subprocess
    from pathlib import Path

    from studio.trust import sandbox

    monkeypatch.setenv("STUDIO_DB", "postgresql://studio:s3cret-pw@db/studio")
    monkeypatch.setenv("HF_TOKEN", "hf_s3cret_token")
    environments, real_popen = [], subprocess.Popen

    def watching(*args, **kwargs):  # read the child's real environment, as the kernel holds it
        child = real_popen(*args, **kwargs)
        environments.append(Path(f"/proc/{child.pid}/environ").read_bytes())
        return child

    monkeypatch.setattr(subprocess, "Popen", watching)
    assert sandbox.render_untrusted("Hello {{ name }}", {"name": "owls"}) == "Hello owls"
    assert len(environments) == 1 and b"s3cret" not in environments[0]


def test_malformed_template_files_get_a_message_saying_what_is_wrong():
    with pytest.raises(TemplateError, match="not valid TOML"):
        parse_template("t", "name = ")
    with pytest.raises(TemplateError, match="lacks the key 'template'"):
        parse_template("t", 'name = "x"\nfields = []')
    with pytest.raises(TemplateError, match="Jinja2 syntax error"):
        parse_template("t", GOOD.replace("{{ topic }}", "{{ topic "))


def test_chat_models_get_the_chat_template_and_base_models_the_raw_prompt(tmp_path, tiny_model_dir, tiny_base_model_dir):
    chat = load_model(str(tiny_model_dir), tmp_path)
    base = load_model(str(tiny_base_model_dir), tmp_path)
    assert model_input(chat, "Write a poem.", "You are a poet.") == (
        "<|im_start|>system\nYou are a poet.<|im_end|>\n<|im_start|>user\nWrite a poem.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert model_input(base, "Write a poem.") == "Write a poem.\n\n"
    # Continue hands the draft back as the start of the answer, to be extended.
    assert model_input(chat, "Write a poem.", draft_so_far="Roses are").endswith("<|im_start|>assistant\nRoses are")
