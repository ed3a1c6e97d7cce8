"""The Training tab: runs with live progress, loss curves, versions with their gate figures,
and the buttons to train now, promote a version by hand, or roll back. Thin, like the other tabs.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import pandas as pd

from storage.models import WRITABLE_VERSION_STATUSES, RunStatus
from studio.core.studio import Studio
from studio.errors import USER_ERRORS
from studio.learning.verdict import gate_words
from studio.trust.accounts import Accounts
from studio.ui.auth import Identity
from studio.ui.refusal import refusal

RUN_COLUMNS = ["Run", "Status", "Started by", "Progress", "Message", "Started", "Finished"]
VERSION_COLUMNS = ["Version", "Status", "Serving", "Learned from", "Held out", "Perplexity (before → after)",
                   "Gate: held-out ratings and drafts", "Tokens/s", "Created"]
# Narrow columns break their headers mid-word ("Versio/n"): room for the short ones, the rest to the gate.
VERSION_WIDTHS = ["80px", "90px", "80px", "130px", "80px", "150px", "auto", "85px", "160px"]
BLIND_COLUMNS = ["Version", "Against", "Blind picks", "Win rate", "95% interval"]
REFRESH_SECONDS = 2.0


def _time(iso: str | None) -> str:
    return iso[:19].replace("T", " ") if iso else ""


def _runs_table(runs: list[dict]) -> list[list]:
    rows = []
    for r in runs:
        detail = r["message"] if r["status"] != RunStatus.FAILED else (r["error"].splitlines() or ["Failed."])[0]
        rows.append([r["id"], r["status"], r["trigger"], f"{r['progress']:.0%}", detail,
                     _time(r["started_at"] or r["created_at"]), _time(r["finished_at"])])
    return rows


def _ranked(gate: dict) -> str:
    """The gate's verdict in words, as the version row keeps it."""
    return gate_words(gate) if gate else ""


def _learned(v: dict) -> str:
    gate = v["gate"]
    if gate.get("method") == "dpo":
        pairs = gate.get("train_pairs", v["hyperparameters"].get("train_pairs", 0))
        return f"{pairs} pick{'s' * (pairs != 1)} ({v['train_drafts']} drafts)"
    if "train_liked" in gate:
        return f"{gate['train_liked']} liked, {gate['train_disliked']} disliked"
    return f"{v['train_drafts']} rated drafts" if v["train_drafts"] else ""


def _figure(value: float | None) -> str:
    """A gate figure, or a dash where none could be computed (e.g. no liked draft held out)."""
    return "–" if value is None else f"{value:.2f}"


def _versions_table(versions: list[dict]) -> list[list]:
    rows = []
    for v in versions:
        gate = v["gate"]
        before = gate.get("serving_perplexity", gate.get("active_perplexity"))
        figures = (f"{_figure(before)} → {_figure(gate.get('candidate_perplexity'))} ({gate['decision']})"
                   if gate else "")
        speed = v["hyperparameters"].get("train_tokens_per_second")
        learned, ranked = _learned(v), _ranked(gate)
        rows.append([v["name"], v["status"], "✓" if v["active"] else "", learned, v["held_out_drafts"] or "",
                     figures, ranked, f"{speed:.0f}" if speed else "", _time(v["created_at"])])
    return rows


def _blind_table(rates: list[dict]) -> list[list]:
    return [[r["version"], r["against"], r["picks"], f"{r['win_rate']:.0%} ({r['wins']} of {r['picks']})",
             f"{r['low']:.0%} – {r['high']:.0%}"] for r in rates]


NO_LOSS_YET = "No fine-tune yet: the loss curve of the newest run appears here once one trains."


def _loss(versions: list[dict]) -> tuple[dict, dict]:
    """The loss curve of the newest fine-tune (the one training, or the last one trained), or, with
    none, a note in its place (an empty chart would show a "-Infinity" legend)."""
    tuned = [v for v in versions if v["loss_curve"]]
    if not tuned:
        return gr.update(visible=False), gr.update(value=NO_LOSS_YET, visible=True)
    points = tuned[0]["loss_curve"]
    frame = pd.DataFrame({"step": [p["step"] for p in points], "loss": [p["loss"] for p in points],
                          "split": [p["split"] for p in points]})
    return gr.update(value=frame, visible=True), gr.update(visible=False)


def _learns_from(studio: Studio) -> str:
    s = studio.settings
    rated = f"drafts you rate {s.train_min_stars} stars or more"
    if s.train_method == "sft":
        return f"Training learns from {rated}."
    if s.train_method == "dpo":
        return "Training learns from your picks between candidates."
    every = (f"every draft you rate: {s.train_min_stars} stars or more as what you like, 1 or 2 stars as what you "
             "do not. A new version serves only if, on drafts held out from training, it has learned more of what "
             "you rate than the serving version")
    if s.train_method == "kto":
        return f"Training learns from {every}."
    return (f"Training learns from your picks between candidates once there are {s.train_min_pairs} of them; "
            f"until then from {every} (or, while you have rated none low, from {rated}).")


def _serving(versions: list[dict], quantize: str = "none", served_by: str = "") -> str:
    """Which version writes new drafts, and what runs it (pool.served_by: llama.cpp or transformers)."""
    active = next((v for v in versions if v["active"]), None)
    if active is None:
        return "No version is active."
    gate = active["gate"]
    since = f" — held-out perplexity {gate['candidate_perplexity']:.2f}" if gate.get("candidate_perplexity") else ""
    served = f" with {quantize} weights (--quantize; figures are the float version's)" if quantize != "none" else ""
    by = f" ({served_by})" if served_by else ""
    return f"Serving **{active['name']}**{served}{since}. New drafts are written by this version{by}."


def before_after(studio: Studio, name: str | None, user: str | None,
                 versions: list[dict] | None = None) -> tuple[str, dict, dict]:
    """The chosen version's before/after (else the newest version's that has one): a caption and two
    texts, for the writer whose prompt it is; anyone else reads that it is not theirs to see."""
    version, sample = studio.versions.before_after(name, user=user, versions=versions)
    empty = gr.update(value="", label="Before"), gr.update(value="", label="After")
    if version is None:
        return ("Each new version writes one of your recent prompts again, with the same seed as its parent; "
                "the two appear here side by side after a run."), *empty
    if sample is None:
        return (f"{version} wrote another writer's recent prompt again beside its parent: only they see the two "
                "drafts."), *empty
    caption = (f"**What changed in {version}** — the same prompt and seed ({sample['sampler']['seed']}), "
               f"written by {sample['parent']} and by {version}:\n\n> " + sample["prompt"].strip().replace("\n", "\n> "))
    return (caption, gr.update(value=sample["parent_text"], label=f"Before: {sample['parent']}"),
            gr.update(value=sample["text"], label=f"After: {version}"))


@dataclass
class _Panel:
    tab: gr.Tab
    serving: gr.Markdown
    train_btn: gr.Button
    rollback_btn: gr.Button
    runs: gr.Dataframe
    loss: gr.LinePlot
    loss_note: gr.Markdown  # in the plot's place while nothing has trained
    versions: gr.Dataframe
    blind: gr.Dataframe
    chosen: gr.Dropdown  # the version to serve
    promote_btn: gr.Button
    change: gr.Markdown  # before/after of the chosen (or newest) version
    before: gr.Textbox
    after: gr.Textbox
    timer: gr.Timer


def _layout(studio: Studio) -> _Panel:
    with gr.Tab("Training") as tab:
        serving = gr.Markdown()
        with gr.Row():
            train_btn = gr.Button("Train now", variant="primary")
            rollback_btn = gr.Button("Roll back to the previous version")
        gr.Markdown(f"{_learns_from(studio)} A fine-tune is promoted only if it beats the serving version "
                    "on held-out drafts.")
        runs = gr.Dataframe(headers=RUN_COLUMNS, interactive=False, wrap=True, label="Training runs")
        loss = gr.LinePlot(x="step", y="loss", color="split", label="Loss of the newest fine-tune",
                           x_title="step", y_title="loss (nats per token)", visible=False)
        loss_note = gr.Markdown(NO_LOSS_YET, elem_id="no-loss-yet")
        versions = gr.Dataframe(headers=VERSION_COLUMNS, interactive=False, wrap=True, label="Versions",
                                column_widths=VERSION_WIDTHS, elem_id="versions-table")
        blind = gr.Dataframe(headers=BLIND_COLUMNS, interactive=False, wrap=True, elem_id="blind-win-rates",
                             label="Blind A/B: how often writers picked the newer version (Write tab → Blind A/B)")
        with gr.Row():
            chosen = gr.Dropdown([], label="Version to serve", scale=3)
            promote_btn = gr.Button("Serve this version", scale=1)
        change = gr.Markdown(elem_id="before-after")
        with gr.Row():
            before = gr.Textbox(label="Before", lines=8, interactive=False)
            after = gr.Textbox(label="After", lines=8, interactive=False)
        timer = gr.Timer(REFRESH_SECONDS, active=False)
    return _Panel(tab, serving, train_btn, rollback_btn, runs, loss, loss_note, versions, blind, chosen,
                  promote_btn, change, before, after, timer)


def build_training_tab(studio: Studio, accounts: Accounts, who: Identity) -> gr.Tab:
    """The tab and its events; call inside the Blocks context. Only admins may change versions
    (the services check it); texts of drafts are shown to the writer who wrote them alone."""
    ui = _layout(studio)
    chosen = ui.chosen

    def refresh(current, request: gr.Request):
        version_list = studio.versions.list()
        names = [v["name"] for v in version_list if v["status"] in WRITABLE_VERSION_STATUSES]
        serving = _serving(version_list, studio.settings.quantize, studio.pool.served_by())
        return (serving, _runs_table(studio.versions.runs()),
                *_loss(version_list), _versions_table(version_list), _blind_table(studio.blind.win_rates()),
                gr.update(choices=names, value=current if current in names else None),
                *before_after(studio, current, who.signed_in(request), version_list))

    outputs = [ui.serving, ui.runs, ui.loss, ui.loss_note, ui.versions, ui.blind, chosen, ui.change, ui.before, ui.after]
    quiet = dict(api_visibility="private", show_progress="hidden")
    # Poll only while the tab is open: runs change in another process.
    ui.tab.select(refresh, chosen, outputs, **quiet).then(lambda: gr.Timer(active=True), None, ui.timer, **quiet)
    ui.timer.tick(refresh, chosen, outputs, **quiet)
    def show_change(name, request: gr.Request):
        return before_after(studio, name, who.signed_in(request))

    chosen.change(show_change, chosen, [ui.change, ui.before, ui.after], **quiet)

    def on_train(request: gr.Request):
        try:
            run_id, created = studio.versions.train("button", user=who(request))
        except USER_ERRORS as exc:
            raise refusal(str(exc)) from exc
        gr.Info(f"Training run {run_id} queued." if created else f"Run {run_id} is already queued or running.")

    def on_promote(name, request: gr.Request):
        if not name:
            raise refusal("Choose a version to serve first.")
        try:
            version_id = next(v["id"] for v in studio.versions.list() if v["name"] == name)
            gr.Info(f"Now serving {studio.versions.promote(version_id, user=who(request))}.")
        except USER_ERRORS as exc:
            raise refusal(str(exc)) from exc

    def on_rollback(request: gr.Request):
        try:
            gr.Info(f"Rolled back: now serving {studio.versions.rollback(user=who(request))}.")
        except USER_ERRORS as exc:
            raise refusal(str(exc)) from exc

    ui.train_btn.click(on_train, None, None, api_visibility="private").then(refresh, chosen, outputs, **quiet)
    ui.promote_btn.click(on_promote, chosen, None, api_visibility="private").then(refresh, chosen, outputs, **quiet)
    ui.rollback_btn.click(on_rollback, None, None, api_visibility="private").then(refresh, chosen, outputs, **quiet)
    return ui.tab

