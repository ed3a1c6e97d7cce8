"""One training run's settings (TRL-style: every field with help text, validated once).

The fields the app's options also set (--train-min-stars, --gate-alpha...) take their defaults
from Settings, so the studio and a run started by hand agree.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from studio.config import Settings
from studio.errors import StudioError
from studio.learning.neighbours import NEAREST

# TrainingConfig field -> the Settings field (app option) that sets it.
FROM_SETTINGS = {"min_stars": "train_min_stars", "gate_alpha": "gate_alpha",
                 "max_per_writer": "train_max_per_writer", "method": "train_method", "min_pairs": "train_min_pairs"}


METHODS = ("auto", "sft", "dpo", "kto")
PRECISIONS = ("auto", "bf16", "fp32")
KTO_LOSSES = ("apo_zero_unpaired", "kto")
# Per method, when not given: sft and dpo train three epochs; KTO trains kto_steps, or more for
# many ratings (kto_min_epochs passes, up to kto_max_steps), so a round's time stays bounded.
DEFAULT_EPOCHS = {"sft": 3, "dpo": 3, "kto": 1}
DEFAULT_LEARNING_RATE = {"sft": 3e-4, "dpo": 3e-4, "kto": 7e-4}


@dataclass
class TrainingConfig:
    min_stars: int = field(default=Settings.train_min_stars, metadata={"help": "Drafts rated at least this become training data."})
    held_out_fraction: float = field(default=0.25, metadata={"help": "Share of drafts kept aside for the gate (a hash of each id decides, once)."})
    min_held_out: int = field(default=2, metadata={"help": "Never fewer held-out drafts than this."})
    min_train: int = field(default=4, metadata={"help": "Fewest training drafts worth a run."})
    epochs: int | None = field(default=None, metadata={
        "help": "Passes over the training data; by default 3 for sft and dpo; kto "
                "trains kto_steps to kto_max_steps steps unless this is given."})
    learning_rate: float | None = field(default=None, metadata={
        "help": "AdamW learning rate for the LoRA weights; by default 3e-4 for sft and dpo, 7e-4 for kto."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    batch_size: int = field(default=4, metadata={"help": "Drafts per optimisation step."})
    max_length: int = field(default=512, metadata={"help": "Tokens per example (prompt + draft); longer drafts are cut."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling (alpha / r multiplies the update)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA path."})
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        metadata={"help": "Which linear layers get LoRA adapters."},
    )
    precision: str = field(default="auto", metadata={
        "help": "auto: bf16 mixed precision where the hardware computes bf16 natively (CUDA, a CPU with AVX512-BF16 or "
                "AMX), float32 elsewhere (emulated bf16 is slower than float32); bf16 or fp32 to choose. The adapter's "
                "weights and the optimiser stay float32 either way."})
    max_per_writer: int = field(default=Settings.train_max_per_writer, metadata={"help": "Most drafts one writer contributes to a run (0 = no cap)."})
    seed: int = field(default=0, metadata={"help": "Seed for LoRA initialisation and data order (the split is a fixed draw per draft)."})
    method: str = field(default=Settings.train_method, metadata={
        "help": "auto: learn from writers' picks (DPO) when there are min_pairs of them, else from every rated "
                "draft (KTO) when some are liked and some disliked, else from liked drafts (sft); sft: liked drafts "
                "only; dpo: picks only; kto: every rated draft, judged by how it ranks held-out ratings."})
    min_pairs: int = field(default=Settings.train_min_pairs, metadata={"help": "Fewest picks (chosen, rejected pairs) for preference training."})
    dpo_beta: float = field(default=0.1, metadata={"help": "DPO beta: higher keeps the model closer to its base."})
    kto_steps: int = field(default=32, metadata={
        "help": "kto: fewest optimisation steps per run when epochs is not given (0: one epoch), so the first "
                "rounds' few ratings are seen several times."})
    # 3: in one loop benchmark a run that saw its drafts 5.3 times learned a word (x1.89), and the next two,
    # on three times the drafts in the same 32 steps (1.4-1.5 passes), learned nothing (README).
    kto_min_epochs: float = field(default=3.0, metadata={
        "help": "kto: with more ratings, steps grow so that each training draft is seen at least this often, up "
                "to kto_max_steps."})
    kto_max_steps: int = field(default=64, metadata={
        "help": "kto: most optimisation steps per run when epochs is not given (what bounds a run's time)."})
    # True: rounds 2 and 3 of the loop benchmark, each a new LoRA on the base trained on all ratings in at
    # most kto_max_steps, wrote the liked word less often than the version they were tested against.
    warm_start: bool = field(default=True, metadata={
        "help": "kto: the candidate's LoRA starts from the serving version's (where it has the same shape), which is "
                "also the reference KTO compares with, so a run adds to what the versions before it learned instead "
                "of learning it all again in one run's steps; false: a new LoRA on the base every run."})
    start_adapter: str | None = field(default=None, metadata={
        "help": "The adapter folder a kto run's LoRA starts from: set by the run (the serving version's, with "
                "warm_start), not by hand."})
    kto_beta: float = field(default=0.1, metadata={"help": "KTO beta: higher keeps the model closer to its base."})
    kto_loss: str = field(default="apo_zero_unpaired", metadata={
        "help": "kto: TRL's loss_type. apo_zero_unpaired (default) raises liked and lowers disliked drafts against the "
                "base and skips KTO's KL estimate, which costs a third more model passes; kto is the paper's loss."})
    # 2, not all: 39 disliked drafts against 6 liked drew the model away from its own fluent drafts (the base
    # found its drafts twice as perplexing); 12 against the same 6 did not (README, the learning benchmark).
    kto_disliked_per_liked: float = field(default=2.0, metadata={
        "help": "kto: at most this many disliked drafts train per liked one (a fixed draw picks which; the rest "
                "wait for more liked drafts); 0: every disliked draft."})
    max_disliked_stars: int = field(default=2, metadata={"help": "kto: drafts rated at most this are what writers dislike."})
    gate_alpha: float = field(default=Settings.gate_alpha, metadata={
        "help": "The most often a studio whose ratings mean nothing may ever promote a version: the k-th test since "
                "the last promotion spends alpha / (k (k + 1)) of it; the examiner must also prefer the candidate's "
                "drafts at this p or less."})
    judge_nearest: int = field(default=NEAREST, metadata={
        "help": "The judges also read kinds of words: each word w of the rated drafts stands with this many words "
                "the model's embeddings put nearest to it (one feature, so a liked kind of thing is heard in words no "
                "rating used); 0: words alone."})
    min_judge_accuracy: float = field(default=0.6, metadata={
        "help": "The examiner must rank at least this share of held-out pairs as the writers did (beside its p-value: "
                "with many ratings a barely better judge would pass on p alone)."})
    rank_margin: float = field(default=0.0, metadata={
        "help": "kto: the judge must expect writers to like a share of the candidate's drafts more than this above "
                "the serving version's share."})
    # 48, not 32: 32 pairs left a rise from 12% to 34% liked short of p 0.05 (p 0.06-0.07, twice on
    # the loop benchmark). A prompt's drafts are written in one batch, so runs took no longer.
    gate_samples: int = field(default=48, metadata={
        "help": "kto: drafts each version writes for the judge to compare, at each look."})
    gate_looks: int = field(default=2, metadata={
        "help": "kto: at most this many looks at gate_samples more drafts a side, while the count is neither passed "
                "nor the candidate behind; alpha is shared out over the looks (verdict.py), so looking again costs "
                "no error rate, only time."})
    judge_samples: int = field(default=64, metadata={
        "help": "kto: drafts the serving version writes of training prompts before training; the trusted judge's "
                "favourites train as liked and as many of its least favourites as disliked (0: ratings only)."})
    # A word in one draft of ten left 4-6 liked ratings and 6 picks a run, and the candidates wrote it no more
    # often; given 14 liked drafts the trainer learned each drawn word (the learning benchmark, README).
    teach_liked: int = field(default=16, metadata={
        "help": "kto: while the run has fewer liked drafts than this (ratings and the teacher's picks), the serving "
                "version writes judge_samples more for the teacher, up to judge_max_samples in all."})
    judge_max_samples: int = field(default=192, metadata={
        "help": "kto: most drafts the serving version writes for the teacher in one run."})
    # 0.93, not 0.9: the target is 90% of the base's variety in writers' drafts, and a few dozen samples of a
    # few prompts measure it only to a few hundredths (a candidate at 0.90 there wrote 0.85 after).
    min_diversity: float = field(default=0.93, metadata={
        "help": "kto: reject a candidate whose drafts' distinct-2 falls below this share of the base model's "
                "(its against the serving version's, times the serving version's own share)."})
    gate_min_liked: int = field(default=2, metadata={
        "help": "kto: fewest held-out liked drafts the gate judges on (and never so few that even a perfect "
                "ranking could not reach gate_alpha)."})
    gate_min_disliked: int = field(default=2, metadata={"help": "kto: fewest held-out disliked drafts the gate judges on."})
    max_sample_perplexity_increase: float = field(default=1.0, metadata={
        "help": "kto: reject a candidate whose drafts the base model finds more than this fraction more perplexing "
                "than the serving version's (word salad that a bag-of-words judge could still like)."})
    max_perplexity_increase: float = field(default=1.0, metadata={
        "help": "kto: reject a candidate whose perplexity on held-out liked drafts rises more than this fraction "
                "(a guard against a broken model: one that learned rises somewhat on the base's own drafts)."})

    def kto_run_steps(self, rows: int) -> int:
        """Optimisation steps for a kto run on this many rows: -1 when epochs decide (given, or kto_steps 0)."""
        if self.epochs is not None or not self.kto_steps:
            return -1
        return max(self.kto_steps, min(self.kto_max_steps, math.ceil(self.kto_min_epochs * rows / self.batch_size)))

    def __post_init__(self) -> None:
        if not 1 <= self.min_stars <= 5:
            raise StudioError(f"min_stars must be 1 to 5, not {self.min_stars}.")
        if not 0 < self.held_out_fraction < 1:
            raise StudioError(f"held_out_fraction must be between 0 and 1, not {self.held_out_fraction}.")
        counts = ("judge_samples", "judge_max_samples", "teach_liked", "judge_nearest", "kto_steps", "kto_min_epochs",
                  "kto_max_steps")
        if min(getattr(self, name) for name in counts) < 0 or self.gate_samples < 1:
            raise StudioError(f"{', '.join(counts[:-1])} and {counts[-1]} must be at least 0, gate_samples at least 1.")
        if (self.epochs is not None and self.epochs < 1) or self.batch_size < 1 or self.lora_r < 1:
            raise StudioError("epochs, batch_size and lora_r must be at least 1.")
        if self.method not in METHODS:
            raise StudioError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}.")
        if not 1 <= self.max_disliked_stars < self.min_stars:
            raise StudioError(f"max_disliked_stars must be at least 1 and below min_stars, not {self.max_disliked_stars}.")
        if self.gate_samples < 2:
            raise StudioError(f"gate_samples must be at least 2, not {self.gate_samples}.")
        if self.gate_looks < 1:
            raise StudioError(f"gate_looks must be at least 1, not {self.gate_looks}.")
        if not 0 < self.gate_alpha < 1:
            raise StudioError(f"gate_alpha must be between 0 and 1, not {self.gate_alpha}.")
        if self.precision not in PRECISIONS:
            raise StudioError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}.")
        if self.kto_disliked_per_liked < 0:
            raise StudioError(f"kto_disliked_per_liked must be at least 0, not {self.kto_disliked_per_liked}.")
        if self.kto_loss not in KTO_LOSSES:
            raise StudioError(f"kto_loss must be one of {', '.join(KTO_LOSSES)}, not {self.kto_loss!r}.")
        if self.min_pairs < 2:
            raise StudioError(f"min_pairs must be at least 2, not {self.min_pairs}.")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> "TrainingConfig":
        """The run the app's options ask for, with overrides (e.g. --epochs on the command line)."""
        try:
            return cls(**{**{name: getattr(settings, option) for name, option in FROM_SETTINGS.items()}, **overrides})
        except StudioError as exc:  # name the option the operator gave, not the field
            message = str(exc)
            for name, option in FROM_SETTINGS.items():
                if message.startswith(f"{name} ") and name not in overrides:
                    message = f"--{option.replace('_', '-')}{message[len(name):]}"
            raise StudioError(message) from None

    def resolved(self, method: str) -> "TrainingConfig":
        """This config for one method (sft, dpo or kto), with that method's epochs and learning rate
        where none were given."""
        steps = method == "kto" and self.kto_steps > 0 and self.epochs is None  # kto_steps decide, not epochs
        return dataclasses.replace(self, method=method, epochs=None if steps else self.epochs or DEFAULT_EPOCHS[method],
                                   learning_rate=self.learning_rate or DEFAULT_LEARNING_RATE[method])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
