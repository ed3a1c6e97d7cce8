"""Facts about text shared by word counts, moderation and near-duplicate detection."""

from __future__ import annotations

import re

# Chinese and Japanese are written without spaces between words: each such character is a word
# (word counts), a word list's entry is matched as a substring (moderation), and near-duplicates
# are found by character n-grams rather than word n-grams.
_UNSPACED = "\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff"  # kana, CJK ideographs, compatibility ideographs
_UNSPACED_CHAR = re.compile(f"[{_UNSPACED}]")
_WORD = re.compile(f"[{_UNSPACED}]|[^\\W_]+(?:['’-][^\\W_]+)*")


def unspaced(text: str) -> bool:
    """Whether text has characters of a language written without spaces between words."""
    return _UNSPACED_CHAR.search(text) is not None


def word_count(text: str) -> int:
    return len(_WORD.findall(text))
