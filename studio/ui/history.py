"""The History tab: the writer's drafts, filtered by template and rating; open one to read it,
rate it again, or export it as Markdown. Thin: every action is one call into Studio.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from studio.core.export import draft_markdown
from studio.core.studio import Studio
from studio.errors import USER_ERRORS
from studio.ui.auth import Identity
from studio.ui.refusal import refusal
from studio.ui.write import STAR_CHOICES, rate_draft, stars_text

ANY_TEMPLATE, ANY_RATING, UNRATED = "", "any", "unrated"
RATING_FILTERS = [("Any rating", ANY_RATING), ("Unrated", UNRATED)] + [
    (f"{'★' * n} or more", str(n)) for n in range(1, 6)
]
HISTORY_COLUMNS = ["Draft", "Written", "Template", "Rating", "Beginning"]


def exports_dir(studio: Studio) -> Path:
    """Where exported Markdown files are kept for the operator (never served: see _export)."""
    return (studio.settings.data_path / "exports").resolve()


def _export(studio: Studio, chosen: int, text: str) -> str:
    """Keep the operator's copy of an export; return the path of the writer's download."""
    folder = exports_dir(studio)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"draft-{chosen}.md").write_text(text, encoding="utf-8")  # the operator's copy
    # The writer downloads a copy from a fresh temp folder: Gradio serves it from its cache
    # under a random hash, so nobody reaches another writer's export by guessing a path.
    download = Path(tempfile.mkdtemp(prefix="studio-export-")) / f"draft-{chosen}.md"
    download.write_text(text, encoding="utf-8")
    return str(download)


@dataclass
class HistoryTab:
    tab: gr.Tab
    filter_template: gr.Dropdown
    filter_rating: gr.Dropdown
    refresh_btn: gr.Button
    table: gr.Dataframe
    history_id: gr.State  # the draft opened below the table
    opened: gr.Markdown
    stars: gr.Radio
    comment: gr.Textbox
    rate_btn: gr.Button
    export_btn: gr.Button
    export_file: gr.File


def _layout(shipped_choices: list) -> HistoryTab:
    with gr.Tab("History") as tab:
        with gr.Row():
            filter_template = gr.Dropdown([("All templates", ANY_TEMPLATE)] + shipped_choices, value=ANY_TEMPLATE,
                                          label="Template")
            filter_rating = gr.Dropdown(RATING_FILTERS, value=ANY_RATING, label="Rating")
            refresh_btn = gr.Button("Refresh")
        table = gr.Dataframe(headers=HISTORY_COLUMNS, interactive=False, wrap=True,
                             label="Drafts (select one to open it)", column_widths=["7%", "15%", "18%", "10%", "50%"])
        history_id = gr.State(None)
        with gr.Row():
            with gr.Column(scale=3):
                opened = gr.Markdown("Select a draft above to read it here.")
            with gr.Column(scale=1):
                stars = gr.Radio(STAR_CHOICES, label="Rating")
                comment = gr.Textbox(label="Comment", max_length=2000)
                rate_btn = gr.Button("Save rating")
                export_btn = gr.Button("Export as Markdown")
                export_file = gr.File(label="Markdown file", interactive=False, elem_id="export-file")
    return HistoryTab(tab, filter_template, filter_rating, refresh_btn, table, history_id, opened, stars, comment,
                      rate_btn, export_btn, export_file)


def build_history_tab(studio: Studio, who: Identity) -> HistoryTab:
    """The tab and its events; call inside the Blocks context."""
    ui = _layout([(t.name, t.id) for t in studio.catalog])
    quiet = dict(api_visibility="private")

    def on_refresh(template_id, rating_filter, request: gr.Request):
        try:
            rows = studio.drafts.list(
                template_id=template_id or None,
                min_stars=int(rating_filter) if rating_filter not in (ANY_RATING, UNRATED) else None,
                unrated_only=rating_filter == UNRATED,
                user=who(request),
            )
        except USER_ERRORS as exc:
            raise refusal(str(exc)) from exc
        return [[d.id, d.created_at.strftime("%Y-%m-%d %H:%M"), d.template_name, stars_text(d.stars),
                 ("⚠ " if d.flagged else "") + d.excerpt] for d in rows]

    filters = [ui.filter_template, ui.filter_rating]
    for trigger in (ui.refresh_btn.click, ui.filter_template.change, ui.filter_rating.change, ui.tab.select):
        trigger(on_refresh, filters, ui.table, **quiet)

    def on_open(rows, event: gr.SelectData, request: gr.Request):
        try:
            chosen = int(rows.iloc[event.index[0], 0])
            record = studio.drafts.get(chosen, user=who(request))
        except USER_ERRORS as exc:
            raise refusal(str(exc)) from exc
        return chosen, draft_markdown(record), record["stars"], record["comment"], None

    ui.table.select(on_open, ui.table, [ui.history_id, ui.opened, ui.stars, ui.comment, ui.export_file], **quiet)

    def on_history_rate(chosen, n, text, template_id, rating_filter, request: gr.Request):
        rate_draft(studio, who, chosen, n, text, request)
        return (studio.drafts.export_markdown(chosen, user=who(request)),
                on_refresh(template_id, rating_filter, request))

    ui.rate_btn.click(on_history_rate, [ui.history_id, ui.stars, ui.comment, *filters], [ui.opened, ui.table], **quiet)

    def on_export(chosen, request: gr.Request):
        if chosen is None:
            raise refusal("Select a draft to export first.")
        try:
            text = studio.drafts.export_markdown(chosen, user=who(request))
        except USER_ERRORS as exc:
            raise refusal(str(exc)) from exc
        return _export(studio, chosen, text)

    ui.export_btn.click(on_export, ui.history_id, ui.export_file, **quiet)
    return ui
