"""The Gradio API endpoints `templates`, `generate` and `rate`, for gradio_client and scripts.

They are plain typed functions registered with gr.api (no annotations import from __future__:
Gradio reads these hints at run time to describe the endpoints).
"""

from typing import Optional

import gradio as gr

from studio.core.studio import Studio
from studio.errors import USER_ERRORS
from studio.ui.auth import Identity
from studio.ui.refusal import refusal


def register_api(studio: Studio, who: Identity) -> None:
    """Register the endpoints; call inside the Blocks context. `who` names a request's writer."""

    def templates(request: gr.Request = None) -> list:
        """All genre templates: id, name, description, language, fields and suggested sampler settings."""
        user = who.signed_in(request)  # signed out: the shipped templates only
        return [t.to_dict() for t in (studio.templates.for_writer(user=user) if user else studio.catalog)]

    def generate(
        template_id: str,
        fields: Optional[dict] = None,
        settings: Optional[dict] = None,
        request: gr.Request = None,
    ) -> dict:
        """Stream a draft. Each message: {text (so far), draft_id (once saved), done, stopped}."""
        try:
            # No key: every API call is a draft of its own. (The page keys streams by its session, so a
            # new draft in a tab replaces the running one; a script's calls at once must not.)
            drafting = studio.drafts.write(template_id, fields or {}, settings or {}, user=who(request))
            for _ in drafting:
                yield {"text": drafting.text, "draft_id": None, "done": False, "stopped": False}
        except USER_ERRORS as exc:
            raise refusal(str(exc)) from exc
        yield {
            "text": drafting.text,
            "draft_id": drafting.draft_id,
            "done": True,
            "stopped": drafting.stream.result.stopped,
            "new_tokens": drafting.stream.result.new_tokens,
            "seed": drafting.stream.settings.seed,
        }

    def rate(draft_id: int, stars: int, comment: str = "", request: gr.Request = None) -> dict:
        """Rate a draft 1-5 stars with an optional comment; rating it again replaces the rating."""
        try:
            return studio.drafts.rate(int(draft_id), stars, comment, user=who(request))
        except USER_ERRORS as exc:
            raise refusal(str(exc)) from exc

    gr.api(templates, api_name="templates", queue=False)
    gr.api(generate, api_name="generate", concurrency_id="generation")
    gr.api(rate, api_name="rate")
