"""The templates a writer may use: the shipped catalog, their own, and everyone's published ones.

A writer's own template is untrusted: it is parsed with the sandbox's rules and renders in a
child process. Its id is custom-<row id>.
"""

from __future__ import annotations

from typing import Any

from storage import user_templates
from studio.core.templates import GenreTemplate, TemplateCatalog, parse_template
from studio.errors import TemplateError
from studio.trust.accounts import Accounts

CUSTOM_PREFIX = "custom-"  # template ids of writers' own templates: custom-<row id>
MAX_CUSTOM_FIELDS = 6  # as many as the page shows


def _row_id(template_id: str) -> int:
    number = template_id.removeprefix(CUSTOM_PREFIX)
    return int(number) if number.isdigit() else -1


class WriterTemplates:
    def __init__(self, catalog: TemplateCatalog, sessions, accounts: Accounts):
        self.catalog = catalog
        self.sessions = sessions
        self.accounts = accounts

    def for_writer(self, *, user: str) -> list[GenreTemplate]:
        """The shipped templates, then the writer's own and everyone's published ones."""
        with self.sessions() as session:
            rows = user_templates.visible_templates(session, user)
        custom = []
        for row in rows:
            try:
                custom.append(parse_template(f"{CUSTOM_PREFIX}{row.id}", row.source, untrusted=True))
            except TemplateError:
                continue  # saved before a rule tightened: it stays editable, not offered
        return [*self.catalog, *custom]

    def get(self, template_id: str, *, user: str) -> GenreTemplate:
        if not template_id.startswith(CUSTOM_PREFIX):
            return self.catalog.get(template_id)
        with self.sessions() as session:
            row = user_templates.get_visible(session, _row_id(template_id), user)
            return parse_template(template_id, row.source, untrusted=True)

    def system_prompt(self, template_id: str) -> str:
        """A shipped template's system prompt ("" for writers' templates and removed ones)."""
        try:
            return self.catalog.get(template_id).system
        except TemplateError:
            return ""

    def mine(self, *, user: str, reviewer: bool = False) -> list[dict[str, Any]]:
        """The writer's own templates and everyone's published ones; for a reviewer (an admin) also
        every other writer's template waiting to be published, marked `waiting`."""
        with self.sessions() as session:
            rows = user_templates.visible_templates(session, user)
            if reviewer:
                rows = sorted({r.id: r for r in [*rows, *user_templates.waiting_for_review(session)]}.values(),
                              key=lambda r: r.id)
            return [{"id": f"{CUSTOM_PREFIX}{r.id}", "name": r.name, "owner": r.owner, "published": r.published,
                     "waiting": not r.published and r.owner != user, "source": r.source} for r in rows]

    def save(self, source: str, template_id: str | None = None, *, user: str) -> str:
        """Check a writer's template (it must load and render its defaults safely), then store it."""
        parsed = parse_template("new", source, untrusted=True)
        if len(parsed.fields) > MAX_CUSTOM_FIELDS:
            raise TemplateError(f"A template may have at most {MAX_CUSTOM_FIELDS} fields.")
        parsed.render()  # in the sandbox: a template that cannot render its own defaults is not saved
        number = _row_id(template_id) if template_id else None
        with self.sessions.begin() as session:
            return f"{CUSTOM_PREFIX}{user_templates.save_template(session, user, parsed.name, source, number).id}"

    def delete(self, template_id: str, *, user: str) -> None:
        with self.sessions.begin() as session:
            user_templates.delete_template(session, _row_id(template_id), user)

    def publish(self, template_id: str, reviewed: str, *, user: str) -> None:
        """Share a writer's template with everyone: an admin's decision, on the source they read
        (reviewed); refused if the template as saved is no longer that."""
        self.accounts.require_admin(user, "publish templates")
        with self.sessions.begin() as session:
            user_templates.publish(session, _row_id(template_id), reviewed)

    def unpublish(self, template_id: str, *, user: str) -> None:
        """Stop sharing a writer's template (it stays its author's)."""
        self.accounts.require_admin(user, "publish templates")
        with self.sessions.begin() as session:
            user_templates.unpublish(session, _row_id(template_id))
