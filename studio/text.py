"""Facts about text shared by word counts, moderation and near-duplicate detection."""

from __future__ import annotations

import re

# Chinese and Japanese are written without spaces between words: each such character is a word
# (word counts), a word list's entry is matched as a substring (moderation), and near-duplicates
# are found by character n-grams rather than word n-grams.
_UNSPACED = "\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff"  # kana, CJK ideographs, compatibility ideographs
_UNSPACED_CHAR = re.compile(f"[{_UNSPACED}]")
WORD = re.compile(f"[{_UNSPACED}]|[^\\W_]+(?:['’-][^\\W_]+)*")


def unspaced(text: str) -> bool:
    """Whether text has characters of a language written without spaces between words."""
    return _UNSPACED_CHAR.search(text) is not None


# A sentence ends in one of these marks, perhaps inside closing quotes or brackets.
_CLOSE = r"[.!?。！？…]+['\"’”」』)）\]]*"
_CLOSING = re.compile(_CLOSE)
_FINISHED = re.compile(rf"{_CLOSE}\s*$")
_SENTENCE = re.compile(rf"\w[^.!?。！？…]*{_CLOSE}")


def word_count(text: str) -> int:
    return len(WORD.findall(text))


def finished(text: str) -> bool:
    """Whether the text ends on a finished sentence."""
    return _FINISHED.search(text) is not None


def sentences(text: str) -> int:
    """How many finished sentences it has: runs of words, each closed by a sentence's mark."""
    return len(_SENTENCE.findall(text))


def through_last_sentence(text: str) -> str:
    """The text up to the end of its last finished sentence ("" when it has none)."""
    ends = [m.end() for m in _CLOSING.finditer(text)]
    return text[:ends[-1]] if ends else ""



def distinct_2(texts: list[str]) -> float:
    """Distinct bigrams over all bigrams (of words, or of characters for unspaced scripts): 1.0 = no
    phrase repeats across drafts; a model collapsing into one text heads towards 0."""
    grams = []
    for text in texts:
        units = list("".join(text.split())) if unspaced(text) else text.lower().split()
        grams += list(zip(units, units[1:]))
    return len(set(grams)) / len(grams) if grams else 0.0
