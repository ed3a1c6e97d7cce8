"""Candidates side by side, on the Write tab: three drafts of the same prompt stream together;
the writer picks the best, which becomes the current draft, and the pick is stored as a preference.
"""

from __future__ import annotations

from typing import Callable

import gradio as gr

from studio.core.studio import Studio
from studio.errors import USER_ERRORS
from studio.ui.together import stream_together
from studio.ui.refusal import refusal

CANDIDATES = 3


def build_compare(studio: Studio, who: Callable[[gr.Request], str], read_form: Callable[[dict, gr.Request], tuple],
                  form_inputs: set, draft_id: gr.State, draft_box: gr.Textbox, status: gr.Markdown) -> None:
    """The Compare section and its events; call inside the Write tab."""
    with gr.Accordion("Compare candidates side by side", open=False):
        gr.Markdown("Writes three drafts of the same prompt with different seeds. Pick the best: it becomes "
                    "your current draft, and your pick teaches the studio what you prefer.")
        compare_btn = gr.Button("Write 3 candidates")
        note = gr.Markdown()
        ids = gr.State([])
        boxes, picks = [], []
        with gr.Row():
            for n in range(CANDIDATES):
                with gr.Column(min_width=120):  # three abreast even in the draft column
                    boxes.append(gr.Textbox(label=f"Candidate {n + 1}", lines=10, interactive=False,
                                            elem_id=f"candidate-{n + 1}"))
                    # Enabled once the candidates are saved, so a pick never races their ids.
                    picks.append(gr.Button(f"Pick candidate {n + 1}", interactive=False))

    def on_compare(form: dict, request: gr.Request):
        try:
            template_id, fields, sampler = read_form(form, request)
            drafts = studio.drafts.candidates(template_id, fields, sampler, count=CANDIDATES, user=who(request),
                                       key=request.session_hash)
            yield {**{box: "" for box in boxes}, **{button: gr.Button(interactive=False) for button in picks},
                   ids: [], note: f"Writing {CANDIDATES} candidates…"}
            for index, text in stream_together(drafts):
                yield {boxes[index]: text}
        except USER_ERRORS as exc:
            raise refusal(str(exc)) from exc
        saved = [d.draft_id for d in drafts]
        done = None not in saved
        yield {ids: saved, **{button: gr.Button(interactive=done) for button in picks},
               note: f"Saved as drafts {saved[0]}, {saved[1]} and {saved[2]}. Pick the best." if done
               else "Not every candidate was saved: write them again to pick."}

    compare_btn.click(on_compare, form_inputs, [*boxes, *picks, ids, note], concurrency_id="generation",
                      api_visibility="private", show_progress="minimal")

    def pick(n: int):
        def on_pick(candidate_ids: list, request: gr.Request):
            if len(candidate_ids) != CANDIDATES or None in candidate_ids:
                raise refusal("Write the candidates first, and let them finish.")
            chosen = candidate_ids[n]
            try:
                studio.drafts.prefer(chosen, [i for i in candidate_ids if i != chosen], user=who(request))
                record = studio.drafts.get(chosen, user=who(request))
            except USER_ERRORS as exc:
                raise refusal(str(exc)) from exc
            gr.Info(f"Candidate {n + 1} picked: it is your current draft now.")
            return chosen, record["text"], f"Draft {chosen} (candidate {n + 1}) picked. Rate it, or Continue it."
        return on_pick

    for n, button in enumerate(picks):
        button.click(pick(n), ids, [draft_id, draft_box, status], api_visibility="private")
