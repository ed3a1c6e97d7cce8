"""The Write tab: a genre template's fields and sampler settings, the draft as it streams, Stop,
Continue and the rating; under the draft, the Revisions, Compare and Blind A/B sections.

Thin: every action is one call into Studio. Errors a writer can fix arrive as
StudioError/StorageError and are shown with gr.Error; the stream is saved by the core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gradio as gr

from studio.core.export import word_count
from studio.core.studio import Studio
from studio.core.templates import GenreTemplate
from studio.errors import USER_ERRORS
from studio.serving.sampling import MAX_NEW_TOKENS_LIMIT, SAMPLER_NAMES, SamplerSettings
from studio.ui.auth import Identity
from studio.ui.blind import build_blind
from studio.ui.compare import build_compare
from studio.ui.revisions import build_revisions
from studio.ui.templates import template_choices
from studio.ui.refusal import refusal

DEFAULT_TEMPLATE = "fantasy"
MAX_FIELDS = 6  # the page keeps this many field boxes and shows the ones a template needs
STAR_CHOICES = [("★" * n, n) for n in range(1, 6)]
TEMPLATE_SAMPLER = [name for name in SAMPLER_NAMES if name != "seed"]  # the settings a template suggests


def stars_text(n: int | None) -> str:
    return "★" * n if n else "—"


def _field_box(template: GenreTemplate, i: int) -> dict:
    """Properties of field box i for this template (hidden when the template has fewer fields)."""
    if i >= len(template.fields):
        return dict(visible=False, value="", label=f"Field {i + 1}")
    f = template.fields[i]
    return dict(visible=True, label=f.label + ("" if f.required else " (optional)"), value=f.default,
                placeholder=f.placeholder, max_length=f.max_length, lines=4 if f.multiline else 1)


def _template_updates(template: GenreTemplate) -> list:
    """Updates for the description, the field boxes and the sampler controls (all but the seed)."""
    boxes = [gr.update(**_field_box(template, i)) for i in range(MAX_FIELDS)]
    return [f"*{template.description}*", *boxes, *(getattr(template.sampler, name) for name in TEMPLATE_SAMPLER)]


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


def rate_draft(studio: Studio, who: Identity, current_id, n, text, request: gr.Request) -> str:
    """Rate a draft from the page (Write or History tab): a toast, and the same line to show."""
    if current_id is None:
        raise refusal("There is no draft to rate yet: write one first.")
    if n is None:
        raise refusal("Choose 1 to 5 stars first.")
    try:
        saved = studio.drafts.rate(current_id, int(n), text or "", user=who(request))
    except USER_ERRORS as exc:
        raise refusal(str(exc)) from exc
    gr.Info(f"Draft {current_id} rated {stars_text(saved['stars'])}.")
    return f"Draft {current_id} rated {stars_text(saved['stars'])}."


@dataclass
class WriteTab:
    """The Write tab's components; `template` is the dropdown the My templates tab refreshes."""

    draft_id: gr.State  # the current draft, shared with the Revisions and Compare sections
    template: gr.Dropdown
    description: gr.Markdown
    field_boxes: list[gr.Textbox]
    sampler: dict  # SAMPLER_NAMES -> its slider or number box
    draft_column: gr.Column
    draft_box: gr.Textbox
    status: gr.Markdown
    generate_btn: gr.Button
    stop_btn: gr.Button
    continue_btn: gr.Button
    stars: gr.Radio
    comment: gr.Textbox
    rate_btn: gr.Button

    @property
    def form_inputs(self) -> set:
        return {self.template, *self.field_boxes, *self.sampler.values()}

    @property
    def template_outputs(self) -> list:
        return [self.description, *self.field_boxes, *(self.sampler[name] for name in TEMPLATE_SAMPLER)]


def _sampler_controls(first: GenreTemplate) -> dict:
    """The sampler controls, by name, filled with the first template's settings."""
    limits = {f: SamplerSettings.__dataclass_fields__[f].metadata
              for f in ("temperature", "top_p", "top_k", "repetition_penalty")}
    s = first.sampler
    controls = dict(
        temperature=gr.Slider(limits["temperature"]["min"], limits["temperature"]["max"], value=s.temperature,
                              step=0.05, label="Temperature", info="Lower is safer, higher is wilder."),
        top_p=gr.Slider(limits["top_p"]["min"], limits["top_p"]["max"], value=s.top_p, step=0.01, label="Top-p"),
        top_k=gr.Slider(limits["top_k"]["min"], 200, value=s.top_k, step=1, label="Top-k", info="0 = no limit"),
        repetition_penalty=gr.Slider(limits["repetition_penalty"]["min"], limits["repetition_penalty"]["max"],
                                     value=s.repetition_penalty, step=0.01, label="Repetition penalty"),
        max_new_tokens=gr.Slider(16, min(MAX_NEW_TOKENS_LIMIT, 2048), value=s.max_new_tokens, step=16,
                                 label="Max new tokens"),
        seed=gr.Number(-1, precision=0, label="Seed", info="-1 draws a new one; the seed used is saved with the draft"),
    )
    return {name: controls[name] for name in SAMPLER_NAMES}


def _draft_controls() -> dict:
    """The draft box, its status line, the buttons and the rating (WriteTab's fields, by name)."""
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
    return dict(draft_box=draft_box, status=status, generate_btn=generate_btn, stop_btn=stop_btn,
                continue_btn=continue_btn, stars=stars, comment=comment, rate_btn=rate_btn)


def _layout(first: GenreTemplate, shipped_choices: list, draft_id: gr.State) -> WriteTab:
    with gr.Tab("Write"):
        with gr.Row():
            with gr.Column(scale=2):
                template = gr.Dropdown(shipped_choices, value=first.id, label="Genre template")
                # Built with the first template's values (no load event to race a writer's typing).
                description = gr.Markdown(f"*{first.description}*")
                field_boxes = [gr.Textbox(**_field_box(first, i)) for i in range(MAX_FIELDS)]
                with gr.Accordion("Sampler settings", open=False):
                    sampler = _sampler_controls(first)
            with gr.Column(scale=3) as draft_column:
                draft = _draft_controls()
    return WriteTab(draft_id=draft_id, template=template, description=description, field_boxes=field_boxes,
                    sampler=sampler, draft_column=draft_column, **draft)


def _wire_template(studio: Studio, who: Identity, demo: gr.Blocks, tab: WriteTab, shown_template: gr.State,
                   shipped_choices: list) -> None:
    """Choosing a template refills the form; the page's load adds the writer's own templates."""
    outputs = tab.template_outputs

    def on_template(template_id: str, shown: str, request: gr.Request):
        # The dropdown may report its first value as a change while the page loads: refilling
        # the form then would wipe what the writer has typed already.
        if template_id == shown:
            return [gr.skip()] * (len(outputs) + 1)
        try:
            chosen = browse_template(template_id, request)
        except USER_ERRORS as exc:
            raise refusal(str(exc)) from exc
        return [*_template_updates(chosen), template_id]

    tab.template.change(on_template, [tab.template, shown_template], [*outputs, shown_template],
                        api_visibility="private", queue=False)

    def browse_template(template_id: str, request: gr.Request) -> GenreTemplate:
        # A visitor who has not signed in may look at the shipped templates, and nothing else.
        user = who.signed_in(request)
        return studio.templates.get(template_id, user=user) if user else studio.catalog.get(template_id)

    def on_load(request: gr.Request):
        # Only the choices: the writer's own templates join the list; the form is left alone.
        user = who.signed_in(request)
        return gr.update(choices=template_choices(studio, user) if user else shipped_choices)

    demo.load(on_load, None, tab.template, api_visibility="private", queue=False)


def _form_reader(studio: Studio, who: Identity, tab: WriteTab) -> Callable[[dict, gr.Request], tuple]:
    def read_form(form: dict, request: gr.Request) -> tuple[str, dict, dict]:
        """(template id, field values, sampler settings) from the Write tab's controls."""
        chosen = studio.templates.get(form[tab.template], user=who(request))
        fields = {f.name: form[box] for f, box in zip(chosen.fields, tab.field_boxes)}
        sampler = {name: form[control] for name, control in tab.sampler.items()}
        sampler["seed"] = None if sampler["seed"] is None else int(sampler["seed"])
        return chosen.id, fields, sampler

    return read_form


def _wire_writing(studio: Studio, who: Identity, demo: gr.Blocks, tab: WriteTab) -> None:
    """Write draft, the sections under the draft, Continue and Stop."""
    read_form = _form_reader(studio, who, tab)
    draft_box, status, draft_id = tab.draft_box, tab.status, tab.draft_id

    def on_generate(form: dict, request: gr.Request):
        try:
            template_id, fields, sampler = read_form(form, request)
            drafting = studio.drafts.write(template_id, fields, sampler, key=request.session_hash, user=who(request))
            yield {draft_box: "", status: "Writing…", draft_id: None}
            for _ in drafting:
                yield {draft_box: drafting.text, status: _status(drafting, False)}
        except USER_ERRORS as exc:
            raise refusal(str(exc)) from exc
        flag = studio.drafts.get(drafting.draft_id, user=who(request))["flag_reason"] if drafting.draft_id else ""
        yield {draft_box: drafting.text, status: _status(drafting, True, flag), draft_id: drafting.draft_id}

    generation = dict(concurrency_id="generation", api_visibility="private", show_progress="minimal")
    form_inputs = tab.form_inputs
    tab.generate_btn.click(on_generate, form_inputs, [draft_box, status, draft_id], **generation)
    with tab.draft_column:  # below the rating controls
        build_revisions(studio, who, draft_id, draft_box, status)
        build_compare(studio, who, read_form, form_inputs, draft_id, draft_box, status)
        build_blind(studio, who, read_form, form_inputs)

    def on_continue(current_id, new_tokens, request: gr.Request):
        if current_id is None:
            raise refusal("Write a draft first; Continue extends the current draft.")
        try:
            drafting = studio.drafts.continue_draft(current_id, int(new_tokens), key=request.session_hash,
                                                    user=who(request))
            for _ in drafting:
                yield drafting.text, _status(drafting, False)
        except USER_ERRORS as exc:
            raise refusal(str(exc)) from exc
        yield drafting.text, _status(drafting, True)

    tab.continue_btn.click(on_continue, [draft_id, tab.sampler["max_new_tokens"]], [draft_box, status], **generation)

    def on_stop(request: gr.Request):
        studio.drafts.stop(request.session_hash)

    # Not queued: Stop must reach a running stream at once, not wait behind it.
    tab.stop_btn.click(on_stop, None, None, queue=False, api_visibility="private")
    demo.unload(on_stop)  # a closed tab ends its stream too


def _wire_rating(studio: Studio, who: Identity, tab: WriteTab) -> None:
    def on_rate(current_id, n, text, request: gr.Request):
        return rate_draft(studio, who, current_id, n, text, request)

    tab.rate_btn.click(on_rate, [tab.draft_id, tab.stars, tab.comment], tab.status, api_visibility="private")
    tab.draft_id.change(lambda _: (None, ""), tab.draft_id, [tab.stars, tab.comment], api_visibility="private",
                        queue=False)


def build_write_tab(studio: Studio, who: Identity, demo: gr.Blocks, draft_id: gr.State) -> WriteTab:
    """The tab and its events; call inside the Blocks context, before the other tabs."""
    catalog = studio.catalog
    first = catalog.get(DEFAULT_TEMPLATE) if DEFAULT_TEMPLATE in catalog.ids() else next(iter(catalog))
    shipped_choices = [(t.name, t.id) for t in catalog]
    tab = _layout(first, shipped_choices, draft_id)
    shown_template = gr.State(first.id)  # the template whose values the form shows
    _wire_template(studio, who, demo, tab, shown_template, shipped_choices)
    _wire_writing(studio, who, demo, tab)
    _wire_rating(studio, who, tab)
    return tab
