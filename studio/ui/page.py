"""The Gradio page: Write and History tabs. Thin: every action is one call into Studio.

No SQL and no tensors here. Errors a writer can fix arrive as StudioError/StorageError and are
shown with gr.Error; the stream is saved by the core, never by display code.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from studio.trust.accounts import Accounts
from studio.ui.api import register_api
from studio.core.export import draft_markdown, word_count
from studio.errors import USER_ERRORS
from studio.serving.sampling import MAX_NEW_TOKENS_LIMIT, SamplerSettings
from studio.core.studio import Studio
from studio.core.templates import GenreTemplate
from studio.ui.auth import SIGN_IN_NOTE, SINGLE_USER_NOTE, Identity
from studio.ui.blind import build_blind
from studio.ui.compare import build_compare
from studio.ui.revisions import build_revisions
from studio.ui.templates import build_templates_tab, template_choices
from studio.ui.training import build_training_tab

DEFAULT_TEMPLATE = "fantasy"
MAX_FIELDS = 6  # the page keeps this many field boxes and shows the ones a template needs
STAR_CHOICES = [("★" * n, n) for n in range(1, 6)]
ANY_TEMPLATE, ANY_RATING, UNRATED = "", "any", "unrated"
RATING_FILTERS = [("Any rating", ANY_RATING), ("Unrated", UNRATED)] + [
    (f"{'★' * n} or more", str(n)) for n in range(1, 6)
]
HISTORY_COLUMNS = ["Draft", "Written", "Template", "Rating", "Beginning"]
SAMPLER_NAMES = ["temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens", "seed"]


def _stars(n: int | None) -> str:
    return "★" * n if n else "—"


def _field_box(template: GenreTemplate, i: int) -> dict:
    """Properties of field box i for this template (hidden when the template has fewer fields)."""
    if i >= len(template.fields):
        return dict(visible=False, value="", label=f"Field {i + 1}")
    f = template.fields[i]
    return dict(visible=True, label=f.label + ("" if f.required else " (optional)"), value=f.default,
                placeholder=f.placeholder, max_length=f.max_length, lines=4 if f.multiline else 1)


def _template_updates(template: GenreTemplate) -> list:
    """Updates for the description, the field boxes and the sampler controls."""
    boxes = [gr.update(**_field_box(template, i)) for i in range(MAX_FIELDS)]
    s = template.sampler
    return [f"*{template.description}*", *boxes, s.temperature, s.top_p, s.top_k,
            s.repetition_penalty, s.max_new_tokens]


def _status(drafting, done: bool, flag: str = "") -> str:
    result = drafting.stream.result
    if not done:
        return f"Writing… {word_count(drafting.text)} words so far (Stop ends the draft here; it is kept)"
    speed = result.new_tokens / result.generation_seconds if result.generation_seconds else 0.0
    how = "stopped" if result.stopped else "finished"
    saved = f"Draft {drafting.draft_id} saved" if drafting.draft_id else "Nothing was written, so nothing was saved"
    warning = f"\n\n⚠ {flag}: this draft will not be used for training." if flag else ""
    return (f"{saved} — {how}: {word_count(drafting.text)} words, {result.new_tokens} tokens at "
            f"{speed:.1f} tokens/s. Rate it below.{warning}")


def build_ui(studio: Studio, accounts: Accounts | None = None) -> gr.Blocks:
    accounts = accounts or Accounts()
    catalog = studio.catalog

    who = Identity(accounts, studio.settings.user)  # who(request): the writer, or "sign in first"

    first = catalog.get(DEFAULT_TEMPLATE) if DEFAULT_TEMPLATE in catalog.ids() else next(iter(catalog))
    shipped_choices = [(t.name, t.id) for t in catalog]
    limits = {f: SamplerSettings.__dataclass_fields__[f].metadata for f in ("temperature", "top_p", "top_k", "repetition_penalty")}

    with gr.Blocks(title="Story Studio") as demo:
        gr.Markdown("# Story Studio\nPick a genre, fill in the fields, and watch the draft appear. "
                    "Rate drafts: the studio learns from the ones you like.")
        if accounts.hf:
            with gr.Row(equal_height=True):
                gr.LoginButton(scale=0, min_width=260)  # Gradio's own Hugging Face sign-in (OAuth)
                gr.Markdown(SIGN_IN_NOTE)
        elif not accounts.enabled:
            gr.Markdown(SINGLE_USER_NOTE)
        draft_id = gr.State(None)

        with gr.Tab("Write"):
            with gr.Row():
                with gr.Column(scale=2):
                    template = gr.Dropdown(shipped_choices, value=first.id, label="Genre template")
                    # Built with the first template's values (no load event to race a writer's typing).
                    description = gr.Markdown(f"*{first.description}*")
                    field_boxes = [gr.Textbox(**_field_box(first, i)) for i in range(MAX_FIELDS)]
                    with gr.Accordion("Sampler settings", open=False):
                        temperature = gr.Slider(limits["temperature"]["min"], limits["temperature"]["max"], value=first.sampler.temperature, step=0.05, label="Temperature", info="Lower is safer, higher is wilder.")
                        top_p = gr.Slider(limits["top_p"]["min"], limits["top_p"]["max"], value=first.sampler.top_p, step=0.01, label="Top-p")
                        top_k = gr.Slider(limits["top_k"]["min"], 200, value=first.sampler.top_k, step=1, label="Top-k", info="0 = no limit")
                        repetition_penalty = gr.Slider(limits["repetition_penalty"]["min"], limits["repetition_penalty"]["max"], value=first.sampler.repetition_penalty, step=0.01, label="Repetition penalty")
                        max_new_tokens = gr.Slider(16, min(MAX_NEW_TOKENS_LIMIT, 2048), value=first.sampler.max_new_tokens, step=16, label="Max new tokens")
                        seed = gr.Number(-1, precision=0, label="Seed", info="-1 draws a new one; the seed used is saved with the draft")
                with gr.Column(scale=3) as draft_column:
                    draft_box = gr.Textbox(label="Draft (edit it freely: leaving the box saves a revision)", lines=16,
                                           max_lines=40, interactive=True, buttons=["copy"], elem_id="draft")
                    status = gr.Markdown("Ready.")
                    with gr.Row():
                        generate_btn = gr.Button("Write draft", variant="primary")
                        stop_btn = gr.Button("Stop", variant="stop")
                        continue_btn = gr.Button("Continue")
                    with gr.Row():
                        stars = gr.Radio(STAR_CHOICES, label="Your rating")
                        comment = gr.Textbox(label="Comment (optional)", max_length=2000)
                    rate_btn = gr.Button("Save rating")

        with gr.Tab("History") as history_tab:
            with gr.Row():
                filter_template = gr.Dropdown([("All templates", ANY_TEMPLATE)] + shipped_choices, value=ANY_TEMPLATE, label="Template")
                filter_rating = gr.Dropdown(RATING_FILTERS, value=ANY_RATING, label="Rating")
                refresh_btn = gr.Button("Refresh")
            table = gr.Dataframe(headers=HISTORY_COLUMNS, interactive=False, wrap=True, label="Drafts (select one to open it)",
                                 column_widths=["7%", "15%", "18%", "10%", "50%"])
            history_id = gr.State(None)
            with gr.Row():
                with gr.Column(scale=3):
                    opened = gr.Markdown("Select a draft above to read it here.")
                with gr.Column(scale=1):
                    history_stars = gr.Radio(STAR_CHOICES, label="Rating")
                    history_comment = gr.Textbox(label="Comment", max_length=2000)
                    history_rate_btn = gr.Button("Save rating")
                    export_btn = gr.Button("Export as Markdown")
                    export_file = gr.File(label="Markdown file", interactive=False, elem_id="export-file")

        # -- Write tab ------------------------------------------------------------------------

        sampler_inputs = [temperature, top_p, top_k, repetition_penalty, max_new_tokens, seed]
        template_outputs = [description, *field_boxes, *sampler_inputs[:-1]]

        shown_template = gr.State(first.id)

        def on_template(template_id: str, shown: str, request: gr.Request):
            # The dropdown may report its first value as a change while the page loads: refilling
            # the form then would wipe what the writer has typed already.
            if template_id == shown:
                return [gr.skip()] * (len(template_outputs) + 1)
            try:
                chosen = browse_template(template_id, request)
            except USER_ERRORS as exc:
                raise gr.Error(str(exc)) from exc
            return [*_template_updates(chosen), template_id]

        template.change(on_template, [template, shown_template], [*template_outputs, shown_template],
                        api_visibility="private", queue=False)

        def browse_template(template_id: str, request: gr.Request) -> GenreTemplate:
            # A visitor who has not signed in may look at the shipped templates, and nothing else.
            user = who.signed_in(request)
            return studio.templates.get(template_id, user=user) if user else catalog.get(template_id)

        def on_load(request: gr.Request):
            # Only the choices: the writer's own templates join the list; the form is left alone.
            user = who.signed_in(request)
            return gr.update(choices=template_choices(studio, user) if user else shipped_choices)

        demo.load(on_load, None, template, api_visibility="private", queue=False)

        sampler_controls = dict(zip(SAMPLER_NAMES, sampler_inputs))

        def read_form(form: dict, request: gr.Request) -> tuple[str, dict, dict]:
            """(template id, field values, sampler settings) from the Write tab's controls."""
            chosen = studio.templates.get(form[template], user=who(request))
            fields = {f.name: form[box] for f, box in zip(chosen.fields, field_boxes)}
            sampler = {name: form[control] for name, control in sampler_controls.items()}
            sampler["seed"] = None if sampler["seed"] is None else int(sampler["seed"])
            return chosen.id, fields, sampler

        def on_generate(form: dict, request: gr.Request):
            try:
                template_id, fields, sampler = read_form(form, request)
                drafting = studio.drafts.write(template_id, fields, sampler, key=request.session_hash, user=who(request))
                yield {draft_box: "", status: "Writing…", draft_id: None}
                for _ in drafting:
                    yield {draft_box: drafting.text, status: _status(drafting, False)}
            except USER_ERRORS as exc:
                raise gr.Error(str(exc)) from exc
            flag = studio.drafts.get(drafting.draft_id, user=who(request))["flag_reason"] if drafting.draft_id else ""
            yield {draft_box: drafting.text, status: _status(drafting, True, flag), draft_id: drafting.draft_id}

        generation = dict(concurrency_id="generation", api_visibility="private", show_progress="minimal")
        form_inputs = {template, *field_boxes, *sampler_inputs}
        generate_btn.click(on_generate, form_inputs, [draft_box, status, draft_id], **generation)
        with draft_column:  # below the rating controls
            build_revisions(studio, who, draft_id, draft_box, status)
            build_compare(studio, who, read_form, form_inputs, draft_id, draft_box, status)
            build_blind(studio, who, read_form, form_inputs)

        def on_continue(current_id, new_tokens, request: gr.Request):
            if current_id is None:
                raise gr.Error("Write a draft first; Continue extends the current draft.")
            try:
                drafting = studio.drafts.continue_draft(current_id, int(new_tokens), key=request.session_hash,
                                                 user=who(request))
                for _ in drafting:
                    yield drafting.text, _status(drafting, False)
            except USER_ERRORS as exc:
                raise gr.Error(str(exc)) from exc
            yield drafting.text, _status(drafting, True)

        continue_btn.click(on_continue, [draft_id, max_new_tokens], [draft_box, status], **generation)

        def on_stop(request: gr.Request):
            studio.drafts.stop(request.session_hash)

        # Not queued: Stop must reach a running stream at once, not wait behind it.
        stop_btn.click(on_stop, None, None, queue=False, api_visibility="private")
        demo.unload(on_stop)  # a closed tab ends its stream too

        def on_rate(current_id, n, text, request: gr.Request):
            if current_id is None:
                raise gr.Error("There is no draft to rate yet: write one first.")
            if n is None:
                raise gr.Error("Choose 1 to 5 stars first.")
            try:
                saved = studio.drafts.rate(current_id, int(n), text or "", user=who(request))
            except USER_ERRORS as exc:
                raise gr.Error(str(exc)) from exc
            gr.Info(f"Draft {current_id} rated {_stars(saved['stars'])}.")
            return f"Draft {current_id} rated {_stars(saved['stars'])}."

        rate_btn.click(on_rate, [draft_id, stars, comment], status, api_visibility="private")
        draft_id.change(lambda _: (None, ""), draft_id, [stars, comment], api_visibility="private", queue=False)

        # -- History tab ----------------------------------------------------------------------

        def on_refresh(template_id, rating_filter, request: gr.Request):
            try:
                rows = studio.drafts.list(
                    template_id=template_id or None,
                    min_stars=int(rating_filter) if rating_filter not in (ANY_RATING, UNRATED) else None,
                    unrated_only=rating_filter == UNRATED,
                    user=who(request),
                )
            except USER_ERRORS as exc:
                raise gr.Error(str(exc)) from exc
            return [[d.id, d.created_at.strftime("%Y-%m-%d %H:%M"), d.template_name, _stars(d.stars),
                     ("⚠ " if d.flagged else "") + d.excerpt] for d in rows]

        filters = [filter_template, filter_rating]
        for trigger in (refresh_btn.click, filter_template.change, filter_rating.change, history_tab.select):
            trigger(on_refresh, filters, table, api_visibility="private")

        def on_open(rows, event: gr.SelectData, request: gr.Request):
            try:
                chosen = int(rows.iloc[event.index[0], 0])
                record = studio.drafts.get(chosen, user=who(request))
            except USER_ERRORS as exc:
                raise gr.Error(str(exc)) from exc
            return chosen, draft_markdown(record), record["stars"], record["comment"], None

        table.select(on_open, table, [history_id, opened, history_stars, history_comment, export_file], api_visibility="private")

        def on_history_rate(chosen, n, text, template_id, rating_filter, request: gr.Request):
            on_rate(chosen, n, text, request)
            return (studio.drafts.export_markdown(chosen, user=who(request)),
                    on_refresh(template_id, rating_filter, request))

        history_rate_btn.click(on_history_rate, [history_id, history_stars, history_comment, *filters],
                               [opened, table], api_visibility="private")

        def on_export(chosen, request: gr.Request):
            if chosen is None:
                raise gr.Error("Select a draft to export first.")
            try:
                text = studio.drafts.export_markdown(chosen, user=who(request))
            except USER_ERRORS as exc:
                raise gr.Error(str(exc)) from exc
            folder = exports_dir(studio)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"draft-{chosen}.md").write_text(text, encoding="utf-8")  # the operator's copy
            # The writer downloads a copy from a fresh temp folder: Gradio serves it from its cache
            # under a random hash, so nobody reaches another writer's export by guessing a path.
            download = Path(tempfile.mkdtemp(prefix="studio-export-")) / f"draft-{chosen}.md"
            download.write_text(text, encoding="utf-8")
            return str(download)

        export_btn.click(on_export, history_id, export_file, api_visibility="private")

        build_templates_tab(studio, accounts, who, template)
        build_training_tab(studio, accounts, who)
        register_api(studio, who)
    return demo


def exports_dir(studio: Studio) -> Path:
    """Where exported Markdown files are kept for the operator (never served: see on_export)."""
    return (studio.settings.data_path / "exports").resolve()
