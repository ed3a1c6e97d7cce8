"""Writers' own templates: private until published, and rendered where they cannot do harm."""

from __future__ import annotations

import pytest

from storage import NotFoundError, StorageError
from studio.errors import TemplateError
from studio.ui.templates import EXAMPLE

ATTACKS = {
    "reach Python internals": ("{{ child.__class__.__mro__ }}", "unsafe"),
    "loop without end": ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                         "took too long"),
    "a gigabyte string": ("{{ 'x' * 10**10 }}", "more memory"),
    "gigabytes of output": ("{% for i in range(100000) %}{{ 'abcdefghij' * 100 }}{% endfor %}", "limit of 20,000"),
    "endless recursion": ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "calls itself"),
    # Compiling folds constants: 6 s of CPU before the first output (on 5b3b0f3 it rendered, after 6 s).
    "a constant that takes seconds to compile": ("{{ (7**(7**8)) % 2 }}", "took too long"),
}


def _with_body(body: str) -> str:
    # Keep every field used (the loader checks that), and put the attack in the prompt.
    return EXAMPLE.replace("End with the child falling asleep.", "{{ child }}{{ thing }}{{ place }}" + body)


@pytest.mark.parametrize("attack", ATTACKS)
def test_templates_built_to_escape_or_exhaust_get_an_error_and_are_not_saved(studio, attack):
    body, message = ATTACKS[attack]
    with pytest.raises(TemplateError, match=message):
        studio.templates.save(_with_body(body), user="alice")
    assert studio.templates.mine(user="alice") == []


def test_a_template_is_private_until_an_admin_publishes_it(studio):
    template_id = studio.templates.save(EXAMPLE, user="alice")
    assert [t["name"] for t in studio.templates.mine(user="alice")] == ["Bedtime story"]
    assert studio.templates.mine(user="bob") == []
    with pytest.raises(NotFoundError, match="Template 1 does not exist"):
        studio.templates.get(template_id, user="bob")  # private: for bob it does not exist
    with pytest.raises(NotFoundError):
        studio.templates.save(EXAMPLE, template_id, user="bob")

    studio.templates.publish(template_id, EXAMPLE, user="admin")
    assert studio.templates.get(template_id, user="bob").name == "Bedtime story"
    with pytest.raises(StorageError, match="Only its author"):
        studio.templates.save(EXAMPLE, template_id, user="bob")
    with pytest.raises(StorageError, match="Only its author"):
        studio.templates.delete(template_id, user="bob")


def test_an_edit_unpublishes_a_template_until_an_admin_reviews_it_again(studio):
    template_id = studio.templates.save(EXAMPLE, user="alice")
    assert [(t["name"], t["waiting"]) for t in studio.templates.mine(user="admin", reviewer=True)] == [
        ("Bedtime story", True)]  # the admin finds it without knowing its id
    assert studio.templates.mine(user="admin") == []  # a writer who is no admin does not
    studio.templates.publish(template_id, EXAMPLE, user="admin")
    assert studio.templates.mine(user="admin", reviewer=True)[0]["published"]
    edited = EXAMPLE.replace("a small red kite", "a paper boat")
    studio.templates.save(edited, template_id, user="alice")
    with pytest.raises(NotFoundError):  # the unreviewed change reaches no one else
        studio.templates.get(template_id, user="bob")
    assert not studio.templates.mine(user="alice")[0]["published"]
    assert studio.templates.mine(user="admin", reviewer=True)[0]["waiting"]
    studio.templates.publish(template_id, edited, user="admin")
    assert "a paper boat" in studio.templates.get(template_id, user="bob").render({"child": "Noor"})


def test_an_admin_publishes_only_the_revision_they_read(studio):
    """The author saves an edit while the admin reads the earlier text: publishing what the admin read
    is refused, and unpublishing never publishes (on 5b3b0f3 both put the unread edit live)."""
    template_id = studio.templates.save(EXAMPLE, user="alice")
    read_by_admin = studio.templates.mine(user="admin", reviewer=True)[0]["source"]
    sneaked = EXAMPLE.replace("a small red kite", "something the admin never read")
    studio.templates.save(sneaked, template_id, user="alice")
    with pytest.raises(StorageError, match="changed it since you opened it"):
        studio.templates.publish(template_id, read_by_admin, user="admin")
    with pytest.raises(NotFoundError):
        studio.templates.get(template_id, user="bob")

    studio.templates.publish(template_id, sneaked, user="admin")  # read again, and published as read
    studio.templates.save(sneaked + "\n# and one more change\n", template_id, user="alice")
    studio.templates.unpublish(template_id, user="admin")
    assert not studio.templates.mine(user="alice")[0]["published"]
    with pytest.raises(NotFoundError):
        studio.templates.get(template_id, user="bob")


def test_a_draft_from_a_writers_template_renders_in_the_sandbox_and_is_recorded(studio):
    template_id = studio.templates.save(EXAMPLE, user="alice")
    assert template_id in [t.id for t in studio.templates.for_writer(user="alice")]
    drafting = studio.drafts.write(template_id, {"child": "Noor"}, {"max_new_tokens": 5}, user="alice")
    list(drafting)
    record = studio.drafts.get(drafting.draft_id, user="alice")
    assert record["template_id"] == template_id and record["template_name"] == "Bedtime story"
    assert "child called Noor" in record["prompt"] and "a small red kite" in record["prompt"]


def test_editing_and_deleting_ones_own_template(studio):
    template_id = studio.templates.save(EXAMPLE, user="alice")
    studio.templates.save(EXAMPLE.replace("Bedtime story", "Nap story"), template_id, user="alice")
    assert [t["name"] for t in studio.templates.mine(user="alice")] == ["Nap story"]
    with pytest.raises(StorageError, match="already have a template named"):
        studio.templates.save(EXAMPLE.replace("Bedtime story", "Nap story"), user="alice")
    studio.templates.delete(template_id, user="alice")
    assert studio.templates.mine(user="alice") == []
