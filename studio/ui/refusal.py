"""A writer's mistake or a refused action, shown on the page: its message, and no traceback in the log."""

from __future__ import annotations

import gradio as gr


def refusal(message: str) -> gr.Error:
    """The gr.Error to raise for bad input or a refused action. Gradio prints every gr.Error's traceback
    to the console unless told not to; a writer's typo is not a fault an operator should read about."""
    return gr.Error(message, print_exception=False)
