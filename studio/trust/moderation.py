"""The content filter: word lists per language mark drafts that must not teach the model, and an
optional classifier model (classifier.py) marks those its labels score too high.

Lists live in studio/trust/wordlists/<language>.txt; an operator adds their own with --blocklist FILE
(same format). Languages written with spaces match whole words; Chinese matches substrings.
A marked draft is kept and shown with a warning, and never enters training data.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from studio.serving.models import Progress
from studio.text import unspaced
from studio.trust.classifier import Classifier

log = logging.getLogger(__name__)
WORDLISTS = Path(__file__).resolve().parent / "wordlists"


def _read(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip().lower() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@dataclass(frozen=True)
class ContentFilter:
    words: tuple[str, ...]
    classifier: Classifier | None = None  # runs in addition to the word lists

    @classmethod
    def load(cls, extra: str = "", enabled: bool = True, classifier: Classifier | None = None) -> "ContentFilter":
        if not enabled:
            return cls(())
        words = [w for path in sorted(WORDLISTS.glob("*.txt")) for w in _read(path)]
        if extra:
            words += _read(Path(extra))
        return cls(tuple(dict.fromkeys(words)), classifier)

    def prepare(self, progress: Progress = log.info) -> None:
        """Load the classifier now (it would load at the first draft), so a bad one stops the start."""
        if self.classifier is not None:
            self.classifier.load(progress)

    def __post_init__(self) -> None:
        spaced = [re.escape(w) for w in self.words if not unspaced(w)]
        pattern = r"\b(?:" + "|".join(spaced) + r")\b" if spaced else r"(?!x)x"
        object.__setattr__(self, "_spaced", re.compile(pattern, re.IGNORECASE))
        object.__setattr__(self, "_unspaced", tuple(w for w in self.words if unspaced(w)))

    def check(self, *texts: str) -> str:
        """'' when every text is clean; otherwise a reason naming what matched."""
        hits: list[str] = []
        for text in texts:
            hits += [m.group(0).lower() for m in self._spaced.finditer(text)]
            hits += [w for w in self._unspaced if w in text]
        reasons = ["Matched the content filter: " + ", ".join(sorted(set(hits)))] if hits else []
        if self.classifier is not None:
            reasons.append(self.classifier.check(*texts))
        return "; ".join(r for r in reasons if r)

    def flags(self, *texts: str) -> dict[str, object]:
        """The draft columns `flagged` and `flag_reason` for these texts."""
        reason = self.check(*texts)
        return {"flagged": bool(reason), "flag_reason": reason}

    def allows(self, *texts: str) -> bool:
        """Whether these texts (a draft and its prompt) pass: what a flagged draft would not."""
        return not self.check(*texts)
