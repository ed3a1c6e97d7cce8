"""What the benchmarks share: a scratch studio beside the real one, and drafts written at once."""

from __future__ import annotations

import threading
from pathlib import Path

from studio.config import Settings, settings_from


def scratch_settings(settings: Settings, scratch: Path) -> Settings:
    """Settings for a scratch database in `scratch`, reusing the converted model of the real data dir."""
    models = Path(settings_from().data_dir) / "models"
    settings.data_dir = str(scratch)
    settings.db = ""
    settings.auto_train_after = 0  # the benchmark decides when training runs
    settings.rate_limit = 0  # it is one "writer" starting many drafts
    if models.is_dir() and not (scratch / "models").exists():
        (scratch / "models").symlink_to(models.resolve())
    return settings


def write_at_once(studio, template_id: str, fields: dict, samplers: list[dict]) -> list:
    """One draft per sampler setting, all streaming at once (batched as the page batches them):
    the finished Draftings, in order."""
    draftings = [None] * len(samplers)

    def write(i: int) -> None:
        drafting = studio.drafts.write(template_id, fields, samplers[i], user=studio.settings.user)
        for _ in drafting:
            pass
        draftings[i] = drafting

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(samplers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if any(d is None for d in draftings):
        raise RuntimeError("A draft failed to stream; see the log above.")
    return draftings
