"""A judge learned from the writers' ratings: would they like this draft?

What it reads: which words, punctuation marks and pairs of them a draft uses (characters for
Chinese and Japanese), the stems of longer words, which kinds of words it uses (each word of the
rated drafts with the words the model takes to mean alike, neighbours.py: a category spread over
many rare words), and what a bag of words cannot see (structure()): whether the model ended the
draft or the token limit cut it, whether it ends on a finished sentence, how many sentences and
words it has, and whether it repeats a run of four words. A
logistic regression with an L1 penalty and balanced class weights (scikit-learn) keeps the few
features that tell liked from disliked drafts and zeroes the rest: from a few dozen ratings, what
writers like usually shows in a few of them, and a dense model drowns them in the rest of the
vocabulary. How strongly it is regularised is chosen by cross-validation on the ratings it is
fitted on, nothing else. It takes milliseconds; the gate listens to it only after it ranks
ratings it never saw as the writers did (plan.py).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from studio.learning.dataset import Example
from studio.learning.neighbours import NEAREST, WordVectors, kin
from studio.text import WORD, finished, sentences


_MARK = re.compile(r"[^\w\s]")

STEM = 5  # letters of a word's stem: laugh, laughed and laughter share one
REPEAT = 4  # a run of this many words said twice is a repetition
AT_LEAST_SENTENCES = (1, 2, 3, 4, 6, 8)  # "at least k sentences": one weight says "long enough"
AT_LEAST_UNITS = (8, 16, 32, 64, 128, 256)  # and "at least n words and marks"

# A draft as the judge reads it: its text, or its text and whether the model ended it (the token
# limit, Stop or a crash did not cut it).
Readable = str | tuple[str, bool]
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)  # inverse regularisation strengths cross-validation chooses from
DEFAULT_C = 10.0  # when the ratings are too few to cross-validate


def structure(units: list[str], text: str, ended: bool | None = None) -> list[str]:
    """Features of form rather than words, named so no word can collide with them: its length (a
    band, and each "at least" it reaches), whether it ends on a finished sentence, how many sentences
    it has, whether it repeats itself, and, when known, whether the model ended it. Whether it is
    complete (ended, or when that is not known ends on a finished sentence) also comes with each
    "at least k sentences": a linear judge cannot otherwise say "a whole piece, and long enough"."""
    grams = [tuple(units[i:i + REPEAT]) for i in range(len(units) - REPEAT + 1)]
    count, stops_on_mark = sentences(text), finished(text)
    complete = stops_on_mark if ended is None else ended
    found = [f"§length:{int(math.log2(len(units) + 1))}", "§finished" if stops_on_mark else "§unfinished"]
    found += [f"§units≥{n}" for n in AT_LEAST_UNITS if len(units) >= n]
    found += [f"§sentences≥{k}" for k in AT_LEAST_SENTENCES if count >= k]
    found += [f"§complete+sentences≥{k}" for k in AT_LEAST_SENTENCES if complete and count >= k]
    if ended is not None:
        found.append("§ended" if ended else "§cut")
    if len(set(grams)) < len(grams):
        found.append("§repeats")
    return found


def units(text: str) -> list[str]:
    """Its words and punctuation marks in order, lower-cased."""
    return [m.group(0).lower() for m in re.finditer(f"{WORD.pattern}|{_MARK.pattern}", text)]


def features(draft: Readable, kinds: dict[str, set[str]] | None = None) -> list[str]:
    """Words and punctuation marks in order (a trait may be a question mark or a quotation), each
    adjacent pair of them, the stems of longer words (a liked trait shows in several forms of a
    word, each too rare in a few dozen ratings to learn alone), the kinds of words it uses
    ("≈w" for each of its words that kinds maps to w: neighbours.kin), and the draft's structure."""
    text, ended = (draft, None) if isinstance(draft, str) else draft
    found = units(text)
    stems = [f"{unit[:STEM]}~" for unit in found if len(unit) >= STEM]
    kind = [f"≈{w}" for unit in set(found) for w in (kinds or {}).get(unit, ())]
    return found + [f"{a} {b}" for a, b in zip(found, found[1:])] + stems + kind + structure(found, text, ended)


def read(example: Example) -> tuple[str, bool]:
    """A rated draft as the judge reads it."""
    return example.completion, example.ended


def _model(c: float):
    """L1-penalised logistic regression, both sides weighted alike."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, l1_ratio=1.0, solver="liblinear", class_weight="balanced", random_state=0)


def _regularisation(matrix, labels: list[int]) -> float:
    """C by stratified cross-validation (ranking, as the gate uses the judge), or DEFAULT_C when a
    side has too few ratings to fold."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    folds = min(5, labels.count(0), labels.count(1))
    if folds < 2:
        return DEFAULT_C
    split = StratifiedKFold(folds, shuffle=True, random_state=0)

    def quality(c: float) -> float:
        return float(cross_val_score(_model(c), matrix, labels, cv=split, scoring="roc_auc").mean())

    return max(C_GRID, key=quality)  # the first of equals: the stronger penalty


@dataclass
class Judge:
    pipeline: Any  # sklearn Pipeline: which features a text has, then logistic regression

    @classmethod
    def fit(cls, examples: list[Example], liked: Callable[[Example], bool], vectors: WordVectors | None = None,
            nearest: int = NEAREST) -> "Judge":
        """Fitted on these drafts' texts, liked (1) or not (0); both sides must be present. With the
        model's word vectors it also reads kinds of words: each word of these texts with its nearest."""
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.pipeline import make_pipeline

        drafts, labels = [read(e) for e in examples], [int(liked(e)) for e in examples]
        kinds = kin(vectors, {u for e in examples for u in units(e.completion)}, nearest)
        vectorizer = CountVectorizer(analyzer=functools.partial(features, kinds=kinds), binary=True)
        matrix = vectorizer.fit_transform(drafts)  # each draft read once: cross-validation and the fit share it
        model = _model(_regularisation(matrix, labels)).fit(matrix, labels)
        return cls(make_pipeline(vectorizer, model))

    def scores(self, drafts: list[Readable]) -> list[float]:
        """How much the writers would like each draft (log-odds; higher is better): a text, or a text
        and whether the model ended it (read() for a rated draft), as it was fitted on."""
        return [float(s) for s in self.pipeline.decision_function(drafts)] if drafts else []

    def weights(self) -> dict[str, float]:
        """Each feature it weights (not zero), and its weight."""
        vectorizer, model = self.pipeline[0], self.pipeline[-1]
        return {str(name): float(w) for name, w in zip(vectorizer.get_feature_names_out(), model.coef_[0]) if w}

    def top_words(self, n: int = 8) -> list[str]:
        """What it learned the writers like most: the features with the largest weights."""
        liked = sorted(((w, name) for name, w in self.weights().items() if w > 0), reverse=True)
        return [name for _, name in liked[:n]]
