"""Editing the current draft on the Write tab: autosave when the writer leaves the box, and a
list of revisions to go back to. Thin: revisions live in studio.editing.
"""

from __future__ import annotations

from typing import Callable

import gradio as gr

from studio.core.studio import Studio
from studio.errors import USER_ERRORS
from studio.ui.refusal import refusal


def build_revisions(studio: Studio, who: Callable[[gr.Request], str], draft_id: gr.State,
                    draft_box: gr.Textbox, status: gr.Markdown) -> None:
    """The Revisions section and the autosave; call inside the Write tab's draft column."""
    with gr.Accordion("Revisions (undo)", open=False):
        revision = gr.Dropdown([], label="Go back to", info="Every written, continued, edited or restored text")
        restore_btn = gr.Button("Restore this revision")

    def choices(current_id, request: gr.Request):
        if current_id is None:
            return gr.update(choices=[], value=None)
        rows = studio.revisions.list(current_id, user=who(request))
        labels = [(f"{n}. {r['reason']} {r['created_at'][11:19]} — {r['words']} words", r["id"])
                  for n, r in enumerate(rows, 1)]
        return gr.update(choices=labels[::-1], value=None)

    def on_leave(current_id, text, request: gr.Request):
        if current_id is None or text is None:
            return gr.skip(), gr.skip()
        try:
            changed = studio.revisions.edit(current_id, text, user=who(request))
        except USER_ERRORS as exc:
            raise refusal(str(exc)) from exc
        if not changed:
            return gr.skip(), gr.skip()
        return f"Your edits to draft {current_id} are saved.", choices(current_id, request)

    def on_restore(current_id, revision_id, request: gr.Request):
        if current_id is None or revision_id is None:
            raise refusal("Choose a revision to go back to.")
        try:
            text = studio.revisions.restore(current_id, int(revision_id), user=who(request))
        except USER_ERRORS as exc:
            raise refusal(str(exc)) from exc
        return text, f"Draft {current_id} is back to that revision.", choices(current_id, request)

    quiet = dict(api_visibility="private")
    # Autosave: when the writer leaves the draft box, whatever they typed is kept as a revision.
    draft_box.blur(on_leave, [draft_id, draft_box], [status, revision], **quiet)
    draft_id.change(choices, draft_id, revision, **quiet)
    restore_btn.click(on_restore, [draft_id, revision], [draft_box, status, revision], **quiet)
