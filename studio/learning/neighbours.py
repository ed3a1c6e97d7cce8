"""Which words the model takes to mean alike: how a judge hears a kind of thing in words it never rated.

A writer who likes animals rates a draft with a bird and one with a cat; the next liked draft has a
wolf. A bag of words learns "bird" and "cat" and knows nothing of wolves. The serving model's input
embeddings place words used alike near each other (its nearest words to "cat" include dog, horse,
fox, wolf and rabbit), so the judge also reads, for each word w of the drafts it is fitted on,
whether a draft uses w or one of the words the model puts nearest to w: one feature, "≈w", that a
rare word shares with its kind.

Raw embeddings, not centred ones: centring pulled frequent words (the, and) among nouns' nearest.
A word has a vector when it is one lower-case token after a space (most English words in a
modern vocabulary); other words and scripts are read as words only.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.files import atomic_folder

log = logging.getLogger(__name__)

NEAREST = 48  # words nearest to w that "≈w" stands for: "cat" then reaches dog, horse, fox, wolf and rabbit
_CHUNK = 1024  # words compared with the vocabulary at once (memory: CHUNK x vocabulary floats)


@dataclass(frozen=True)
class WordVectors:
    """Unit-length input embeddings of the model's whole-word tokens, by word."""

    words: tuple[str, ...]
    unit: Any  # numpy array, one row per word
    _nearest: dict[tuple[str, int], set[str]] = field(default_factory=dict, compare=False, repr=False)

    @functools.cached_property
    def index(self) -> dict[str, int]:
        return {word: row for row, word in enumerate(self.words)}

    @classmethod
    def from_model(cls, model, tokenizer) -> "WordVectors":
        import numpy as np

        weight = model.get_input_embeddings().weight.detach().float().cpu().numpy()
        rows: dict[str, int] = {}
        for token_id, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
            text = tokenizer.convert_tokens_to_string([token]) if token is not None else ""
            word = text[1:]
            if (text.startswith(" ") and len(word) >= 2 and word.isalpha() and word.islower()
                    and token_id < len(weight)):
                rows.setdefault(word, token_id)
        matrix = weight[list(rows.values())] if rows else np.zeros((0, weight.shape[1]), dtype=np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return cls(tuple(rows), matrix / np.maximum(norms, 1e-12))

    def nearest(self, words: set[str], count: int = NEAREST) -> dict[str, set[str]]:
        """For each of these words that has a vector: itself and the count words nearest to it."""
        import numpy as np

        count = min(count, len(self.words) - 1)
        known = sorted(w for w in words if w in self.index)
        new = [w for w in known if (w, count) not in self._nearest]  # a run fits two judges on much the same words
        for start in range(0, len(new), _CHUNK):
            chunk = new[start:start + _CHUNK]
            similarity = self.unit[[self.index[w] for w in chunk]] @ self.unit.T
            top = np.argpartition(-similarity, count, axis=1)[:, :count + 1] if count > 0 else \
                np.zeros((len(chunk), 0), dtype=int)
            for word, rows in zip(chunk, top):
                self._nearest[word, count] = {word} | {self.words[r] for r in rows}
        return {w: self._nearest[w, count] for w in known}

    def save(self, folder: Path) -> None:
        import numpy as np

        np.save(folder / "unit.npy", self.unit.astype(np.float16))  # half the disk; directions barely move
        (folder / "words.txt").write_text("\n".join(self.words), encoding="utf-8")

    @classmethod
    def read(cls, folder: Path) -> "WordVectors":
        import numpy as np

        words = tuple((folder / "words.txt").read_text(encoding="utf-8").split("\n"))
        return cls(words, np.load(folder / "unit.npy").astype(np.float32))


def kin(vectors: WordVectors | None, words: set[str], count: int = NEAREST) -> dict[str, set[str]]:
    """word u -> the words w (of these) whose "≈w" u counts for: w itself, or u among w's nearest."""
    reached: dict[str, set[str]] = {}
    if vectors is None or count <= 0:
        return reached
    for word, near in vectors.nearest(words, count).items():
        for other in near:
            reached.setdefault(other, set()).add(word)
    return reached


@functools.lru_cache(maxsize=2)
def _cached(model_name: str, data_dir: str) -> WordVectors:
    """Read from the data folder, or taken from the model once and kept there: a run in a child
    process would otherwise load the whole model again for its embeddings."""
    from studio.serving.models import resolve_source

    source = resolve_source(model_name, Path(data_dir))
    folder = Path(data_dir) / "word-vectors" / hashlib.sha256(source.encode()).hexdigest()[:16]
    if (folder / "words.txt").is_file():
        return WordVectors.read(folder)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source, use_kernels=False)  # on the CPU: its embeddings alone are read
    vectors = WordVectors.from_model(model, AutoTokenizer.from_pretrained(source))
    with atomic_folder(folder) as staging:
        vectors.save(staging)
    return vectors


def load_word_vectors(model_name: str, data_dir: Path) -> WordVectors | None:
    """The base model's word vectors (once per process, kept in the data folder), or None when they
    cannot be read: the judge then reads words alone."""
    try:
        return _cached(model_name, str(data_dir))
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("The judge reads words alone: no word vectors from %s (%s).", model_name, exc)
        return None
