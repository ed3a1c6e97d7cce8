"""The Monitor tab: plots over time of how much the studio writes, how fast, and how writers rate
it, read from the database when the tab is opened (not on every page load). For admins, and so
for everyone in single-user mode; other writers see one line saying so. Thin, like the other tabs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import gradio as gr
import pandas as pd

from studio.core.monitor import LIKED_STARS, Figures, Monitor
from studio.core.studio import Studio
from studio.errors import USER_ERRORS, NotAllowed
from studio.trust.accounts import Accounts
from studio.ui.auth import Identity
from studio.ui.refusal import refusal

ADMINS_ONLY = "The Monitor is for admins: ask one to see how the studio is used."
SPANS = [("Last 24 hours", 1), ("Last 7 days", 7), ("Last 30 days", 30)]
STAR_COLORS = {"1★": "#d62728", "2★": "#ff7f0e", "3★": "#bcbd22", "4★": "#17becf", "5★": "#2ca02c"}
PERCENTILE_COLORS = {"p50": "#1f77b4", "p95": "#ff7f0e"}
HOURS = "%b %d %H:%M"  # in the browser's time zone (Vega's default)


@dataclass
class MonitorTab:
    tab: gr.Tab
    admins_only: gr.Markdown  # what a writer who is not an admin sees instead
    body: gr.Column
    span: gr.Dropdown
    refresh_btn: gr.Button
    plots: list[gr.LinePlot | gr.BarPlot]
    notes: list[gr.Markdown]  # one per plot, in its place while it has nothing to show

    @property
    def outputs(self) -> list:
        return [self.admins_only, self.body, *self.plots, *self.notes]


def _plot(kind, **options):
    # No fixed height: Gradio clips a fixed-height plot's legend away.
    plot = kind(visible=False, show_label=True, **options)
    return plot, gr.Markdown(visible=False)


def _layout() -> MonitorTab:
    with gr.Tab("Monitor") as tab:
        admins_only = gr.Markdown(visible=False, elem_id="monitor-admins-only")
        with gr.Column(visible=False, elem_id="monitor") as body:
            with gr.Row(equal_height=True):
                span = gr.Dropdown(SPANS, value=7, label="Show", scale=3)
                refresh_btn = gr.Button("Refresh", scale=1)
            pairs = []
            with gr.Row():
                with gr.Column():
                    pairs.append(_plot(gr.LinePlot, x="hour", y="drafts", label="Drafts per hour",
                                       y_title="drafts", x_axis_format=HOURS, y_lim=[0, None],
                                       elem_id="monitor-drafts"))
                with gr.Column():
                    pairs.append(_plot(gr.BarPlot, x="day", y="ratings", color="stars", color_map=STAR_COLORS,
                                       label="Ratings per day, by stars (UTC days)", y_title="ratings",
                                       x_label_angle=-45, elem_id="monitor-ratings"))
            with gr.Row():
                with gr.Column():
                    pairs.append(_plot(gr.LinePlot, x="hour", y="tokens_per_second", color="percentile",
                                       color_map=PERCENTILE_COLORS, y_lim=[0, None], y_title="tokens per second",
                                       x_axis_format=HOURS,
                                       label="Writing speed: tokens per second, p50 and p95 of each hour's drafts",
                                       elem_id="monitor-speed"))
                with gr.Column():
                    pairs.append(_plot(gr.LinePlot, x="hour", y="seconds", color="percentile",
                                       color_map=PERCENTILE_COLORS, y_lim=[0, None], y_title="seconds",
                                       x_axis_format=HOURS,
                                       label="Time to first token, p50 and p95 of each hour's drafts",
                                       elem_id="monitor-first-token"))
            pairs.append(_plot(gr.BarPlot, x="version", y="share", tooltip=["rated", "liked"], y_lim=[0, 100],
                               y_title=f"% rated {LIKED_STARS}+", x_title="version (rated drafts)",
                               label=f"Share of each version's rated drafts rated {LIKED_STARS}+ (all time)",
                               elem_id="monitor-versions"))
    return MonitorTab(tab, admins_only, body, span, refresh_btn, [p for p, _ in pairs], [n for _, n in pairs])


def _frames(figures: Figures) -> list[pd.DataFrame | None]:
    """Each plot's DataFrame, or None when it has nothing to show. Categories keep the rows' order
    (days, then stars; versions as made): the plots leave `sort` unset, which keeps data order."""
    ratings = pd.DataFrame([{"day": f"{r['day']:%b %d}", "stars": f"{r['stars']}★", "ratings": r["ratings"]}
                            for r in figures.ratings_per_day])
    versions = pd.DataFrame([{"version": f"{r['version']} ({r['rated']})", "share": round(100 * r["share"], 1),
                              "rated": r["rated"], "liked": r["liked"]} for r in figures.versions])
    rows = [figures.drafts_per_hour, figures.ratings_per_day, figures.tokens_per_second, figures.first_token,
            figures.versions]
    frames = [pd.DataFrame(figures.drafts_per_hour), ratings, pd.DataFrame(figures.tokens_per_second),
              pd.DataFrame(figures.first_token), versions]
    return [frame if given else None for given, frame in zip(rows, frames)]


def _empty_notes(days: int) -> list[str]:
    span = next(label for label, value in SPANS if value == days).lower()
    return [f"No drafts yet in the {span}: drafts per hour appear here once writers write.",
            f"No ratings yet in the {span}.",
            f"No finished drafts yet in the {span}: their speed appears here once one is written.",
            f"No finished drafts yet in the {span}: their time to first token appears here once one is written.",
            f"No rated drafts yet: each version's share of drafts rated {LIKED_STARS}+ appears here once "
            "writers rate."]


def show(monitor: Monitor, user: str | None, days: int, now: datetime | None = None) -> list:
    """The tab's outputs for this writer: the plots (or a note in place of an empty one) for an
    admin, the one line saying the Monitor is for admins for anyone else."""
    try:
        figures = monitor.figures(days, user=user, now=now)
    except NotAllowed:
        hidden = [gr.update(value=None, visible=False)] * 10
        return [gr.update(value=ADMINS_ONLY, visible=True), gr.update(visible=False), *hidden]
    except USER_ERRORS as exc:
        raise refusal(str(exc)) from exc
    plots, notes = [], []
    # Only values change here: the plot redraws other settings late, with the old data (Gradio 6.31).
    for frame, empty in zip(_frames(figures), _empty_notes(days)):
        plots.append(gr.update(value=frame, visible=frame is not None))
        notes.append(gr.update(value=empty, visible=frame is None))
    return [gr.update(visible=False), gr.update(visible=True), *plots, *notes]


def build_monitor_tab(studio: Studio, accounts: Accounts, who: Identity) -> MonitorTab:
    """The tab and its events; call inside the Blocks context."""
    ui = _layout()
    monitor = Monitor(studio.sessions, accounts)

    def refresh(days, request: gr.Request):
        return show(monitor, who.signed_in(request), days)

    quiet = dict(api_visibility="private", show_progress="hidden")
    for trigger in (ui.tab.select, ui.refresh_btn.click, ui.span.change):
        trigger(refresh, ui.span, ui.outputs, **quiet)
    return ui
