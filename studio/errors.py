"""The errors a writer or operator may see.

Anything raised as a StudioError carries a message written for people; the edges (the
Gradio page, the command line) show it as it is. Any other exception is a bug.
"""

from storage import StorageError


class StudioError(Exception):
    """An error whose message is shown to the user as it is."""


class TemplateError(StudioError):
    """A template is unknown, malformed, or was given bad field values."""


class ModelError(StudioError):
    """A model could not be found or loaded."""


class GenerationError(StudioError):
    """Sampler settings are out of range or generation cannot start."""


class NotAllowed(StudioError):
    """The caller may not do this (only admins train, serve versions and publish templates)."""


# What the edges turn into a readable message rather than a traceback.
USER_ERRORS = (StudioError, StorageError)


def first_line(exc: BaseException) -> str:
    """A library's exception as one sentence for a message of ours: its first line, or its type."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__).rstrip(".") + "."
