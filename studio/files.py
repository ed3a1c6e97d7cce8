"""Files and folders written whole or not at all (converted models, adapters, the auth file)."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Yield a staging folder beside target; once the block succeeds it replaces target.

    A crash mid-write leaves the old target (or none) and a hidden staging folder, never half a folder.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a staging path beside target; once the block succeeds it replaces target: a crash
    leaves the old file (or none), never half of the new one."""
    handle, staging = tempfile.mkstemp(prefix=f".{target.name}-", dir=target.parent)
    os.close(handle)
    try:
        yield Path(staging)
        os.replace(staging, target)
    finally:
        Path(staging).unlink(missing_ok=True)


def write_private_file(target: Path, text: str) -> None:
    """Replace target with text, readable by its owner alone from the first byte (mkstemp makes
    0600 files), and whole: a crash leaves the old file, never half of the new one."""
    handle, staging = tempfile.mkstemp(prefix=f".{target.name}-", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(staging, target)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
