"""The "My templates" tab: writers write their own genre templates, private until an admin
publishes them. Thin: storage and the sandboxed rendering live in the core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gradio as gr

from studio.core.studio import Studio
from studio.core.templates import parse_template
from studio.errors import USER_ERRORS
from studio.trust.accounts import Accounts
from studio.ui.refusal import refusal

NEW = ""
EXAMPLE = '''name = "Bedtime story"
description = "A gentle story for a child, with a name and a favourite thing."
language = "en"
category = "fiction"
system = "You write warm, simple stories for young children."
template = """
Write a calm bedtime story of about 150 words for a child called {{ child }},
about {{ thing }}{% if place %}, set in {{ place }}{% endif %}. End with the child falling asleep.
"""

[sampler]
temperature = 0.8
top_p = 0.95
top_k = 50
repetition_penalty = 1.15
max_new_tokens = 300

[[fields]]
name = "child"
label = "Child's name"
default = "Mila"
required = true
max_length = 40

[[fields]]
name = "thing"
label = "Favourite thing"
default = "a small red kite"
required = true
max_length = 80

[[fields]]
name = "place"
label = "Place"
default = ""
required = false
max_length = 80
'''


def template_choices(studio: Studio, user: str) -> list[tuple[str, str]]:
    """Dropdown choices: shipped templates, then the writer's own and published ones (marked)."""
    return [(t.name + (" ✎" if t.untrusted else ""), t.id) for t in studio.templates.for_writer(user=user)]


@dataclass
class _Editor:
    tab: gr.Tab
    mine: gr.Dropdown  # the writer's templates (an admin sees everyone's)
    publish_btn: gr.Button
    unpublish_btn: gr.Button
    source: gr.Textbox
    preview_btn: gr.Button
    save_btn: gr.Button
    delete_btn: gr.Button
    preview: gr.Textbox


def _layout() -> _Editor:
    with gr.Tab("My templates") as tab:
        gr.Markdown("Write your own genre template in the same TOML format as the shipped ones. It is "
                    "private to you until an admin publishes it; it renders in a sandbox with limits on "
                    "time and size. Saved templates appear in the Write tab marked ✎.")
        with gr.Row():
            mine = gr.Dropdown([("New template", NEW)], value=NEW, label="Template", scale=3)
            publish_btn = gr.Button("Publish the text shown (admins)", scale=1)
            unpublish_btn = gr.Button("Unpublish (admins)", scale=1)
        source = gr.Textbox(EXAMPLE, lines=24, max_lines=40, max_length=20_000, label="Template (TOML)")
        with gr.Row():
            preview_btn = gr.Button("Preview prompt")
            save_btn = gr.Button("Save", variant="primary")
            delete_btn = gr.Button("Delete", variant="stop")
        preview = gr.Textbox(label="The prompt with the default values", lines=6, interactive=False)
    return _Editor(tab, mine, publish_btn, unpublish_btn, source, preview_btn, save_btn, delete_btn, preview)


def _mark(row: dict) -> str:
    return ", published" if row["published"] else ", waiting for review" if row["waiting"] else ""


def _listing(studio: Studio, user: str, admin: bool, selected: str = NEW):
    rows = studio.templates.mine(user=user, reviewer=admin)
    labels = [(f"{r['name']} — {r['owner']}{_mark(r)}", r["id"]) for r in rows]
    return gr.update(choices=[("New template", NEW), *labels], value=selected)


def _own(studio: Studio, user: str, admin: bool, template_id: str) -> dict | None:
    """One of the templates the writer may see here (an admin: also those waiting for review), or None."""
    return next((r for r in studio.templates.mine(user=user, reviewer=admin) if r["id"] == template_id), None)


def _preview(text: str) -> str:
    """The template's prompt with its default values, rendered in the sandbox like a saved one."""
    try:
        return parse_template("preview", text, untrusted=True).render()
    except USER_ERRORS as exc:
        raise refusal(str(exc)) from exc


def _saved(was: dict | None, now: dict) -> str:
    if was and was["published"] and not now["published"]:
        return "Template saved. It was published: the change keeps it private until an admin publishes it again."
    return "Template saved: it is in the Write tab's list now."


def build_templates_tab(studio: Studio, accounts: Accounts, who: Callable[[gr.Request], str],
                        write_dropdown: gr.Dropdown) -> gr.Tab:
    ui = _layout()

    def listing(request: gr.Request, selected: str = NEW):
        return _listing(studio, who(request), accounts.is_admin(who(request)), selected)

    def on_select(template_id: str, request: gr.Request):
        if template_id == NEW:
            return EXAMPLE, ""
        found = _own(studio, who(request), accounts.is_admin(who(request)), template_id)
        return (found["source"] if found else EXAMPLE), ""

    def on_save(template_id: str, text: str, request: gr.Request):
        was = _own(studio, who(request), False, template_id) if template_id else None
        try:
            saved = studio.templates.save(text, template_id or None, user=who(request))
        except USER_ERRORS as exc:
            raise refusal(str(exc)) from exc
        gr.Info(_saved(was, _own(studio, who(request), False, saved)))
        return listing(request, saved), gr.update(choices=template_choices(studio, who(request)))

    def on_delete(template_id: str, request: gr.Request):
        if template_id == NEW:
            raise refusal("Choose one of your templates to delete.")
        try:
            studio.templates.delete(template_id, user=who(request))
        except USER_ERRORS as exc:
            raise refusal(str(exc)) from exc
        gr.Info("Template deleted.")
        return listing(request), EXAMPLE, gr.update(choices=template_choices(studio, who(request)))

    quiet = dict(api_visibility="private")
    def on_open(request: gr.Request):
        return listing(request)

    ui.tab.select(on_open, None, ui.mine, **quiet)
    ui.mine.change(on_select, ui.mine, [ui.source, ui.preview], **quiet)
    def on_preview(text: str, request: gr.Request):
        who(request)  # a writer signed in: each preview starts a renderer process
        return _preview(text)

    ui.preview_btn.click(on_preview, ui.source, ui.preview, **quiet)
    ui.save_btn.click(on_save, [ui.mine, ui.source], [ui.mine, write_dropdown], **quiet)
    ui.delete_btn.click(on_delete, ui.mine, [ui.mine, ui.source, write_dropdown], **quiet)
    _review_events(studio, accounts, who, ui, listing)
    return ui.tab


def _review_events(studio: Studio, accounts: Accounts, who: Callable[[gr.Request], str], ui: _Editor,
                   listing: Callable) -> None:
    """An admin's buttons: publish the text they read (refused if the saved template is no longer
    that), or make a template private again."""

    def on_publish(template_id: str, shown: str, request: gr.Request):
        """Publish what the admin read: the text in the editor, which must be the template as saved."""
        user = who(request)
        found = _own(studio, user, accounts.is_admin(user), template_id)
        if found is None:
            raise refusal("Choose a saved template to publish.")
        try:
            studio.templates.publish(template_id, shown, user=user)
        except USER_ERRORS as exc:
            raise refusal(str(exc)) from exc
        gr.Info(f"{found['name']} is published, as shown.")
        return listing(request, template_id)

    def on_unpublish(template_id: str, request: gr.Request):
        user = who(request)
        found = _own(studio, user, accounts.is_admin(user), template_id)
        if found is None:
            raise refusal("Choose a saved template to unpublish.")
        try:
            studio.templates.unpublish(template_id, user=user)
        except USER_ERRORS as exc:
            raise refusal(str(exc)) from exc
        gr.Info(f"{found['name']} is private to its author now.")
        return listing(request, template_id)

    quiet = dict(api_visibility="private")
    ui.publish_btn.click(on_publish, [ui.mine, ui.source], ui.mine, **quiet)
    ui.unpublish_btn.click(on_unpublish, ui.mine, ui.mine, **quiet)
