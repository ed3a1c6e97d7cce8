"""The Gradio page: a header, then one builder per tab (Write, History, My templates, Training)
and the API endpoints. Thin: every action is one call into Studio.

No SQL and no tensors here. Errors a writer can fix arrive as StudioError/StorageError and are
shown with gr.Error; the stream is saved by the core, never by display code.
"""

from __future__ import annotations

import gradio as gr

from studio.core.studio import Studio
from studio.trust.accounts import Accounts
from studio.ui.api import register_api
from studio.ui.auth import SIGN_IN_NOTE, SINGLE_USER_NOTE, Identity
from studio.ui.history import build_history_tab, exports_dir
from studio.ui.monitor import build_monitor_tab
from studio.ui.templates import build_templates_tab
from studio.ui.training import build_training_tab
from studio.ui.write import build_write_tab

__all__ = ["build_ui", "exports_dir"]


def _header(accounts: Accounts) -> None:
    gr.Markdown("# Story Studio\nPick a genre, fill in the fields, and watch the draft appear. "
                "Rate drafts: the studio learns from the ones you like.")
    if accounts.hf:
        with gr.Row(equal_height=True):
            gr.LoginButton(scale=0, min_width=260)  # Gradio's own Hugging Face sign-in (OAuth)
            gr.Markdown(SIGN_IN_NOTE)
    elif not accounts.enabled:
        gr.Markdown(SINGLE_USER_NOTE)


def build_ui(studio: Studio, accounts: Accounts | None = None) -> gr.Blocks:
    accounts = accounts or Accounts()
    who = Identity(accounts, studio.settings.user)  # who(request): the writer, or "sign in first"

    with gr.Blocks(title="Story Studio") as demo:
        _header(accounts)
        draft_id = gr.State(None)  # the Write tab's current draft
        write = build_write_tab(studio, who, demo, draft_id)
        build_history_tab(studio, who)
        build_templates_tab(studio, accounts, who, write.template)  # saving a template refreshes Write's list
        build_training_tab(studio, accounts, who)
        build_monitor_tab(studio, accounts, who)  # admins only (everyone in single-user mode)
        register_api(studio, who)
    return demo
