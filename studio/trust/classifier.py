"""The content filter's optional classifier: a transformers text-classification model that scores
each draft, so drafts the word lists miss can still be kept out of training.

`--moderation-model` names the model (a local folder; a hub id only where the hub is reachable),
`--moderation-labels` the labels that flag a draft, `--moderation-threshold` the score above which
they do. The model loads once per process, when the app starts (or at the first draft elsewhere).
Long drafts are scored in overlapping windows of the model's context; a label's score is its
highest over every window.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.errors import ModelError, first_line
from studio.serving.models import Progress, pick_device

log = logging.getLogger(__name__)

WINDOW_OVERLAP = 32  # tokens shared by neighbouring windows, so a phrase cut in two is still seen whole
MAX_WINDOW = 512  # tokens per window when neither tokenizer nor config says how many the model takes


@dataclass
class _Loaded:
    model: Any
    tokenizer: Any
    device: str
    window: int
    flag_ids: dict[int, str]  # class index -> label name, for the labels that flag a draft
    multi_label: bool  # each label scored on its own (sigmoid) rather than one of them (softmax)


@dataclass
class Classifier:
    model: str
    labels: tuple[str, ...]
    threshold: float = 0.5
    device: str = "auto"
    _loaded: _Loaded | None = field(default=None, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def load(self, progress: Progress = log.info) -> None:
        """Load the model (once); a ModelError says what is wrong with it."""
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load(progress)

    def _load(self, progress: Progress) -> _Loaded:
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        name = self.model
        path = Path(name).expanduser()
        if name.startswith((".", "/", "~")) and not path.exists():
            raise ModelError(f"The moderation model folder {name} does not exist (--moderation-model).")
        try:
            config = AutoConfig.from_pretrained(name)
        except (OSError, ValueError) as exc:
            raise ModelError(f"Could not load the moderation model '{name}': {first_line(exc)} Pass "
                             "--moderation-model a local folder of a transformers text-classification model, "
                             "or a hub id on a machine that can reach the Hugging Face hub.") from exc
        architectures = getattr(config, "architectures", None) or []
        if not any(a.endswith("ForSequenceClassification") for a in architectures):
            raise ModelError(f"The moderation model '{name}' is not a text-classification model (it is "
                             f"{', '.join(architectures) or 'of an unknown architecture'}): --moderation-model "
                             "needs one saved as …ForSequenceClassification.")
        by_name = {str(label).casefold(): (int(i), str(label)) for i, label in config.id2label.items()}
        unknown = [label for label in self.labels if label.casefold() not in by_name]
        if unknown:
            raise ModelError(f"--moderation-labels names {', '.join(unknown)}, which the moderation model "
                             f"'{name}' does not have; its labels are {', '.join(sorted(config.id2label.values()))}.")
        device, dtype = pick_device(self.device)
        progress(f"Loading the moderation model {name} on {device}…")
        try:
            tokenizer = AutoTokenizer.from_pretrained(name)
            # No hub kernels: they are fetched from the hub on a GPU, and a studio runs offline (models.py).
            model = AutoModelForSequenceClassification.from_pretrained(name, dtype=dtype, use_kernels=False)
        except Exception as exc:  # a broken folder fails in many ways: SafetensorError, shape mismatches, …
            raise ModelError(f"Could not load the moderation model '{name}': {first_line(exc)} Save the "
                             "model again with save_pretrained, or fetch it again.") from exc
        if tokenizer.pad_token is None:  # windows of one batch are padded to the same length
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
            model.config.pad_token_id = tokenizer.pad_token_id
        model.to(device).eval()
        limits = [tokenizer.model_max_length, getattr(config, "max_position_embeddings", None) or MAX_WINDOW]
        window = min(limit for limit in limits if limit and limit > 0)
        flag_ids = dict(by_name[label.casefold()] for label in self.labels)
        multi_label = config.problem_type == "multi_label_classification" or config.num_labels == 1
        return _Loaded(model, tokenizer, device, window, flag_ids, multi_label)

    def scores(self, *texts: str) -> dict[str, float]:
        """Each flagging label's highest score over the texts (every window of each)."""
        import torch

        self.load()
        loaded = self._loaded
        assert loaded is not None
        texts = tuple(t for t in texts if t and t.strip())
        if not texts:
            return {label: 0.0 for label in loaded.flag_ids.values()}
        windows: dict[str, Any] = dict(truncation=True, max_length=loaded.window, padding=True, return_tensors="pt")
        if loaded.tokenizer.is_fast:  # slow tokenizers cannot split a text into windows: they truncate
            windows.update(return_overflowing_tokens=True, stride=min(WINDOW_OVERLAP, loaded.window // 4))
        batch = loaded.tokenizer(list(texts), **windows)
        batch.pop("overflow_to_sample_mapping", None)
        with torch.inference_mode():
            logits = loaded.model(**batch.to(loaded.device)).logits.float()
        probabilities = logits.sigmoid() if loaded.multi_label else logits.softmax(dim=-1)
        best = probabilities.max(dim=0).values
        return {label: float(best[index]) for index, label in loaded.flag_ids.items()}

    def check(self, *texts: str) -> str:
        """'' when no flagging label scores above the threshold; else a reason naming label and score."""
        over = [(label, score) for label, score in self.scores(*texts).items() if score > self.threshold]
        if not over:
            return ""
        over.sort(key=lambda pair: -pair[1])
        return "Flagged by the moderation model: " + ", ".join(f"{label} {score:.2f}" for label, score in over)

