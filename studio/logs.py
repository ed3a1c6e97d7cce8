"""Logging for the app and the command line: one format, and no password in any line.

Database URLs (postgresql://user:secret@host/db) reach log lines from our code, from SQLAlchemy's
errors and from a failed child's output; the filter sits on the root handlers, so every logger's
records pass through it.
"""

from __future__ import annotations

import logging
import re
from typing import TextIO

# scheme://user:password@  ->  scheme://user:***@
_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@\s]+)(?=@)")


def redact(text: str) -> str:
    """text with the password of every URL in it replaced by ***."""
    return _CREDENTIALS.sub(r"\g<head>***", text)


class RedactPasswords(logging.Filter):
    """Formats each record's message and removes passwords from it (and from its traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def configure_logging(fmt: str, stream: TextIO | None = None, datefmt: str | None = None) -> None:
    """INFO to stderr (or stream) in this format, unless logging was set up before (by an embedding
    program); either way every root handler redacts passwords. Migrations report only problems."""
    logging.basicConfig(level=logging.INFO, format=fmt, datefmt=datefmt, stream=stream)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactPasswords) for f in handler.filters):
            handler.addFilter(RedactPasswords())
    logging.getLogger("alembic").setLevel(logging.WARNING)
    quiet_libraries()


def quiet_libraries() -> None:
    """transformers imports torchao (--quantize) with every model it loads. torchao's wheel carries
    CUDA-only kernels and, beside a CPU build of torch, warns at each import that they cannot load;
    torch then warns about torchao's enums. Neither is for an operator to act on."""
    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
