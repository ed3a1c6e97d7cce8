"""Story Studio's web app: `python app.py [--model ID_OR_DIR] [--db URL] [--data-dir DIR] ...`

Every option also reads STUDIO_<OPTION> from the environment. On Hugging Face Spaces this file
runs as it is; `app.demo` (built on first access) serves tools that import the module.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time

from studio.config import Settings, add_arguments, hf_sign_in_available, settings_from
from studio.errors import USER_ERRORS
from studio.logs import configure_logging, redact

log = logging.getLogger("studio")


def mark_interrupted_drafts(studio, every: float | None = None) -> threading.Thread:
    """Drafts whose stream died with a process (this one's before a restart, or another replica's on
    the same database) are marked interrupted now and then every `every` seconds (by default as
    often as a stream must save to count as alive), by every replica, in a thread of their own."""
    from studio.core.drafts import INTERRUPTED_AFTER_SECONDS

    def mark() -> None:
        ids = studio.drafts.mark_interrupted()
        if ids:
            log.warning("%d draft(s) stopped being written with their process; kept as interrupted: %s",
                        len(ids), ", ".join(map(str, ids)))

    def sweep() -> None:
        while not studio.closing.wait(every or INTERRUPTED_AFTER_SECONDS):
            try:
                mark()
            except Exception:  # a database hiccup: the next sweep retries
                log.exception("Marking interrupted drafts failed")

    mark()
    sweeper = threading.Thread(target=sweep, name="interrupted-drafts", daemon=True)
    sweeper.start()
    return sweeper


def create_app(settings: Settings, load_model: bool = True):
    """The Studio, its Gradio page and the writers' accounts; with load_model, the model is ready."""
    from studio.core.backups import start_backups
    from studio.core.studio import Studio
    from studio.trust.accounts import Accounts
    from studio.ui.auth import check_local_sign_in
    from studio.ui.endpoints import watch
    from studio.ui.page import build_ui, exports_dir

    accounts = Accounts.from_settings(settings)
    if accounts.hf and not hf_sign_in_available():
        check_local_sign_in()  # Gradio's local stand-in for the sign-in needs the hub: fail clearly first
    studio = Studio(settings, accounts=accounts)
    studio.use_model()  # --model decides what the app serves (a switch is logged)
    mark_interrupted_drafts(studio)
    studio.content_filter.prepare(progress=log.info)  # the moderation classifier, if any: load it now, once
    if load_model:
        studio.pool.load(progress=log.info)
    studio.jobs.start()  # runs queued training in child processes; recovers interrupted runs first
    start_backups(settings)
    demo = build_ui(studio, accounts)
    batched = studio.pool.batches_drafts() if load_model else True
    demo.queue(default_concurrency_limit=settings.page_concurrency(batched), max_size=settings.queue_size)
    watch(studio, demo)
    if settings.metrics == "on" and settings.auth_mode != "single" and not settings.metrics_token:
        log.warning("Writers sign in, so /metrics answers only with --metrics-token: none is set.")
    exports_dir(studio).mkdir(parents=True, exist_ok=True)
    return studio, demo, accounts


def launch_options(studio, accounts) -> dict:
    from starlette.middleware import Middleware

    from studio.ui.auth import SignInGuard
    from studio.ui.endpoints import routes

    settings = studio.settings
    # No allowed_paths: exports reach writers through Gradio's cache, never from the data dir.
    # With Hugging Face sign-in there is no login form: gr.LoginButton on the page signs writers in.
    guard = [Middleware(SignInGuard)] if accounts.passwords else []  # repeated failed sign-ins wait
    return dict(server_name=settings.host, server_port=settings.port,
                auth=accounts.check if accounts.passwords else None,
                auth_message="Story Studio: log in with your writer account.",
                app_kwargs={"routes": routes(studio), "middleware": guard})  # /metrics, /healthz, /readyz first


def main(argv: list[str] | None = None) -> int:
    configure_logging("%(asctime)s %(message)s", datefmt="%H:%M:%S")
    parser = argparse.ArgumentParser(description="Story Studio: a writing studio that learns from its writers.")
    add_arguments(parser)
    started = time.perf_counter()
    try:
        settings = settings_from(parser.parse_args(argv))
        log.info("Data in %s, database %s", settings.data_path.resolve(), settings.database_url)
        studio, demo, accounts = create_app(settings)
    except (*USER_ERRORS, ValueError) as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 2
    log.info("Studio ready in %.1f s: open http://%s:%d", time.perf_counter() - started, settings.host, settings.port)
    demo.launch(**launch_options(studio, accounts))
    return 0


def __getattr__(name: str):
    # `demo` is built on first access, not at import, so importing app.py loads no model.
    if name == "demo":
        global demo
        _, demo, _ = create_app(settings_from())
        return demo
    raise AttributeError(name)


if __name__ == "__main__":
    sys.exit(main())
