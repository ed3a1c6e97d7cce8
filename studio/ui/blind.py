"""Blind A/B on the Write tab: two drafts of the writer's prompt, by the serving version and
another one, shown as A and B; the versions are named only after the writer picks.
"""

from __future__ import annotations

from typing import Callable

import gradio as gr

from studio.core.studio import Studio
from studio.errors import USER_ERRORS
from studio.ui.together import stream_together
from studio.ui.refusal import refusal

NEWEST = "newest"  # the dropdown's value for "the newest other version"


def _opponent_choices(studio: Studio) -> list[tuple[str, str]]:
    names = studio.blind.opponents()
    if not names:
        return [("no other version yet", NEWEST)]
    return [(f"the newest other version ({names[0]})", NEWEST)] + [(name, name) for name in names]


def build_blind(studio: Studio, who: Callable[[gr.Request], str], read_form: Callable[[dict, gr.Request], tuple],
                form_inputs: set) -> None:
    """The Blind A/B section and its events; call inside the Write tab."""
    with gr.Accordion("Blind A/B: compare model versions", open=False) as section:
        gr.Markdown("Writes your prompt twice, with the same seed: once by the version serving now and once "
                    "by another, as A and B in random order. Pick the better one; only then are the versions "
                    "named. Every pick counts towards the win rates in the Training tab.")
        with gr.Row():
            # Filled when the section opens: versions change while the app runs (no query at start-up).
            against = gr.Dropdown([("the newest other version", NEWEST)], value=NEWEST, scale=3,
                                  label="Compare the serving version with")
            start_btn = gr.Button("Write A and B", scale=1)
        comparison = gr.State(None)
        boxes, picks = [], []
        with gr.Row():
            for side in ("A", "B"):
                with gr.Column(min_width=160):
                    boxes.append(gr.Textbox(label=f"Draft {side}", lines=10, interactive=False,
                                            elem_id=f"blind-{side.lower()}"))
                    picks.append(gr.Button(f"{side} is better"))
        verdict = gr.Markdown(elem_id="blind-verdict")

    quiet = dict(api_visibility="private", show_progress="hidden")
    section.expand(lambda: gr.update(choices=_opponent_choices(studio)), None, against, queue=False, **quiet)

    def on_start(form: dict, request: gr.Request):
        choice = form[against]
        try:
            template_id, fields, sampler = read_form(form, request)
            blind_round = studio.blind.start(template_id, fields, sampler, user=who(request),
                                             against=None if choice == NEWEST else choice, key=request.session_hash)
            yield {**{box: "" for box in boxes}, comparison: None, verdict: "Writing A and B…"}
            for index, text in stream_together(blind_round.draftings):
                yield {boxes[index]: text}
            comparison_id = blind_round.save()
        except USER_ERRORS as exc:
            raise refusal(str(exc)) from exc
        yield {comparison: comparison_id, verdict: "Which is better, A or B?"}

    start_btn.click(on_start, {*form_inputs, against}, [*boxes, comparison, verdict], concurrency_id="generation",
                    api_visibility="private", show_progress="minimal")

    def pick(side: str):
        def on_pick(comparison_id: int | None, request: gr.Request):
            if comparison_id is None:
                raise refusal("Write A and B first, and let both finish.")
            try:
                result = studio.blind.pick(comparison_id, side, user=who(request))
            except USER_ERRORS as exc:
                raise refusal(str(exc)) from exc
            versions = result["versions"]
            return None, (f"You picked **{side}**, written by **{result['winner']}**. "
                          f"A was {versions['A']}, B was {versions['B']}. Thank you: write another pair "
                          "to keep comparing.")
        return on_pick

    for side, button in zip(("A", "B"), picks):
        button.click(pick(side), comparison, [comparison, verdict], api_visibility="private")
