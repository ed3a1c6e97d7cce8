"""Writers' signal -> LoRA fine-tune -> held-out gate -> a new model version, promoted only if better.

The signal is the writers' picks between candidates when there are enough of them (DPO), and
their highly rated drafts otherwise (supervised fine-tuning); see finetune.py for both. The
gate is the same either way: it scores the candidate and the active version on held-out drafts
the writers liked (mean negative log-likelihood per target token) and promotes the candidate
only when its perplexity beats the active version's by the configured margin. Preference runs
also record how often each version ranks the held-out picks the way the writers did.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage import registry

from .config import Settings
from .dataset import (DatasetSplit, Example, PreferencePair, PreferenceSplit, build_preference_split,
                      build_split, tokenize_example)
from .errors import StudioError
from .finetune import Report, train_adapter, train_preference_adapter
from .models import load_model

log = logging.getLogger(__name__)

METHODS = ("auto", "sft", "dpo")


@dataclass
class TrainingConfig:
    min_stars: int = field(default=4, metadata={"help": "Drafts rated at least this become training data."})
    held_out_fraction: float = field(default=0.2, metadata={"help": "Share of drafts kept aside for the gate."})
    min_held_out: int = field(default=2, metadata={"help": "Never fewer held-out drafts than this."})
    min_train: int = field(default=4, metadata={"help": "Fewest training drafts worth a run."})
    epochs: int = field(default=3, metadata={"help": "Passes over the training drafts (early stopping may end sooner)."})
    learning_rate: float = field(default=3e-4, metadata={"help": "AdamW learning rate for the LoRA weights."})
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
    early_stopping_patience: int = field(default=1, metadata={"help": "Epochs without a better validation loss before stopping."})
    max_per_writer: int = field(default=0, metadata={"help": "Most drafts one writer contributes to a run (0 = no cap)."})
    gate_margin: float = field(default=0.01, metadata={"help": "Promote only if held-out perplexity drops by at least this fraction."})
    seed: int = field(default=0, metadata={"help": "Seed for the split, LoRA initialisation and data order."})
    method: str = field(default="auto", metadata={
        "help": "auto: learn from writers' picks (DPO) when there are min_pairs of them, else from rated "
                "drafts; sft: rated drafts only; dpo: picks only."})
    min_pairs: int = field(default=8, metadata={"help": "Fewest picks (chosen, rejected pairs) for preference training."})
    dpo_beta: float = field(default=0.1, metadata={"help": "DPO beta: higher keeps the model closer to its base."})

    def __post_init__(self) -> None:
        if not 1 <= self.min_stars <= 5:
            raise StudioError(f"min_stars must be 1 to 5, not {self.min_stars}.")
        if not 0 < self.held_out_fraction < 1:
            raise StudioError(f"held_out_fraction must be between 0 and 1, not {self.held_out_fraction}.")
        if self.epochs < 1 or self.batch_size < 1 or self.lora_r < 1:
            raise StudioError("epochs, batch_size and lora_r must be at least 1.")
        if not 0 <= self.gate_margin < 1:
            raise StudioError(f"gate_margin must be at least 0 and below 1, not {self.gate_margin}.")
        if self.method not in METHODS:
            raise StudioError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}.")
        if self.min_pairs < 2:
            raise StudioError(f"min_pairs must be at least 2, not {self.min_pairs}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class GateResult:
    active_nll: float
    candidate_nll: float
    held_out_tokens: int
    margin: float

    @property
    def active_perplexity(self) -> float:
        return math.exp(self.active_nll)

    @property
    def candidate_perplexity(self) -> float:
        return math.exp(self.candidate_nll)

    @property
    def promote(self) -> bool:
        return self.candidate_perplexity <= self.active_perplexity * (1 - self.margin)

    def to_dict(self) -> dict[str, Any]:
        return {
            "active_nll": self.active_nll, "candidate_nll": self.candidate_nll,
            "active_perplexity": self.active_perplexity, "candidate_perplexity": self.candidate_perplexity,
            "held_out_tokens": self.held_out_tokens, "margin": self.margin,
            "decision": "promoted" if self.promote else "rejected",
        }


def _completion_nll(model, tokenizer, example: Example, max_length: int) -> tuple[float, int]:
    """Summed negative log-likelihood of the completion given its context, and its token count."""
    import torch

    device = next(model.parameters()).device
    item = tokenize_example(tokenizer, example, max_length)
    input_ids = torch.tensor([item["input_ids"]], device=device)
    labels = torch.tensor([item["labels"]], device=device)
    logits = model(input_ids=input_ids).logits[:, :-1].float()
    targets = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return float(loss), int((targets != -100).sum())


@dataclass
class HeldOutScores:
    """One version's figures on a run's held-out data."""

    nll: float  # mean negative log-likelihood per target token over the gate's drafts
    tokens: int
    pair_accuracy: float  # share of held-out picks where the chosen draft is likelier per token
    pair_margin: float  # mean margin (nats per token) by which it is


def score_held_out(model, tokenizer, examples: list[Example], pairs: list[PreferencePair],
                   max_length: int) -> HeldOutScores:
    """Score the gate's drafts and the held-out picks, each distinct draft once."""
    import torch

    drafts = {e.draft_id: e for e in examples}
    for pair in pairs:  # a pick's chosen draft is usually one of the gate's drafts too
        drafts.setdefault(pair.chosen.draft_id, pair.chosen)
        drafts.setdefault(pair.rejected.draft_id, pair.rejected)
    model.eval()
    with torch.inference_mode():
        scored = {i: _completion_nll(model, tokenizer, e, max_length) for i, e in drafts.items()}
    total = sum(scored[e.draft_id][0] for e in examples)
    tokens = sum(scored[e.draft_id][1] for e in examples)
    if tokens == 0:
        raise StudioError("The held-out drafts have no text to score.")

    def per_token(example: Example) -> float:
        nll, count = scored[example.draft_id]
        return nll / max(count, 1)

    margins = [per_token(p.rejected) - per_token(p.chosen) for p in pairs]
    accuracy = sum(m > 0 for m in margins) / len(margins) if margins else float("nan")
    margin = sum(margins) / len(margins) if margins else float("nan")
    return HeldOutScores(total / tokens, tokens, accuracy, margin)


def save_adapter_atomically(peft_model, target: Path) -> Path:
    """Write the adapter to a temp folder beside target, then rename: never half a folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        peft_model.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@dataclass
class TrainingData:
    """What one run trains on, chosen by choose_data."""

    method: str  # "sft" or "dpo"
    split: DatasetSplit | PreferenceSplit  # what the method's trainer takes
    gate_examples: list[Example]  # held-out drafts the writers liked: the gate scores these
    train_draft_ids: list[int]
    note: str = ""  # why this method, for the run's messages

    @property
    def held_out_pairs(self) -> list[PreferencePair]:
        """The held-out picks whose ranking the gate reports (none for rated drafts)."""
        return self.split.held_out if self.method == "dpo" else []


def choose_data(session, config: TrainingConfig) -> TrainingData:
    """Picks when there are enough of them (or when asked for), else rated drafts."""
    note = ""
    if config.method in ("auto", "dpo"):
        try:
            pairs = build_preference_split(
                session, held_out_fraction=config.held_out_fraction, min_held_out=config.min_held_out,
                min_pairs=config.min_pairs, seed=config.seed, max_per_writer=config.max_per_writer)
        except StudioError as exc:  # too few picks, or all for one prompt
            if config.method == "dpo":
                raise
            note = f"Learning from rated drafts: {exc}"
        else:
            trained = sorted({d for p in pairs.train for d in (p.chosen.draft_id, p.rejected.draft_id)})
            held = list({p.chosen.draft_id: p.chosen for p in pairs.held_out}.values())
            return TrainingData("dpo", pairs, held, trained, note=f"Learning from {len(pairs.train)} picks between candidates, "
                                     f"{len(pairs.held_out)} held out.")
    split = build_split(session, min_stars=config.min_stars, held_out_fraction=config.held_out_fraction,
                        min_held_out=config.min_held_out, min_train=config.min_train, seed=config.seed,
                        max_per_writer=config.max_per_writer)
    dropped = f", {len(split.duplicates_dropped)} duplicates dropped" if split.duplicates_dropped else ""
    summary = f"{len(split.train)} drafts to train on, {len(split.held_out)} held out{dropped}."
    return TrainingData("sft", split, split.held_out, [e.draft_id for e in split.train],
                        note=f"{note} {summary}".strip())


def run_training(sessions, settings: Settings, config: TrainingConfig, run_id: int,
                 report: Report) -> dict[str, Any]:
    """One training run end to end; returns the candidate's figures. Raises on failure."""
    with sessions.begin() as session:
        active = registry.ensure_base_version(session, settings.model)
        data = choose_data(session, config)
        candidate = registry.add_version(
            session, name=registry.next_version_name(session), parent_id=active.id, base_model=settings.model,
            adapter_path=None, status="training", is_active=False,
            train_draft_ids=data.train_draft_ids,
            held_out_draft_ids=[e.draft_id for e in data.gate_examples],
            hyperparameters=config.to_dict(), loss_curve=[], gate={},
        )
        registry.update_run(session, run_id, version_id=candidate.id)
        active_info = (active.id, active.name, active.adapter_path)
        candidate_id, candidate_name = candidate.id, candidate.name
    report(0.02, data.note, [])
    held_pairs = data.held_out_pairs
    try:
        base = load_model(settings.model, settings.data_path, settings.device)
        def score(model, tokenizer) -> HeldOutScores:
            return score_held_out(model, tokenizer, data.gate_examples, held_pairs, config.max_length)

        active_scores = None
        if active_info[2] is None:
            # The active version is the base itself: score it now, on the model already loaded,
            # before LoRA layers are added to it (rather than loading it a second time).
            active_scores = score(base.model, base.tokenizer)
        with tempfile.TemporaryDirectory(prefix="studio-train-") as scratch:
            trainer = train_preference_adapter if data.method == "dpo" else train_adapter
            peft_model, curve, stats = trainer(base.model, base.tokenizer, data.split, config, Path(scratch), report)
        adapter = save_adapter_atomically(peft_model, settings.data_path / "adapters" / candidate_name)
        with sessions.begin() as session:
            registry.update_version(session, candidate_id, adapter_path=str(adapter), loss_curve=curve)

        report(0.85, "Scoring the candidate and the active version on held-out drafts…", curve)
        candidate_scores = score(peft_model, base.tokenizer)
        del peft_model
        if active_scores is None:
            active = load_model(settings.model, settings.data_path, settings.device, adapter=active_info[2])
            active_scores = score(active.model, active.tokenizer)
        gate = GateResult(active_scores.nll, candidate_scores.nll, candidate_scores.tokens, config.gate_margin)
        figures = {**gate.to_dict(), "against": active_info[1], "method": data.method}
        if held_pairs:
            figures.update(held_out_pairs=len(held_pairs),
                           active_pair_accuracy=active_scores.pair_accuracy, active_pair_margin=active_scores.pair_margin,
                           candidate_pair_accuracy=candidate_scores.pair_accuracy,
                           candidate_pair_margin=candidate_scores.pair_margin)
        with sessions.begin() as session:
            registry.update_version(session, candidate_id, gate=figures,
                                    hyperparameters={**config.to_dict(), **stats, "method": data.method,
                                                     "train_pairs": len(data.split.train) if data.method == "dpo" else 0},
                                    status="rejected")
            if gate.promote:
                registry.activate(session, candidate_id)
    except BaseException:
        with sessions.begin() as session:
            registry.update_version(session, candidate_id, status="failed")
        raise
    summary = {"version": candidate_name, **figures, **stats, "train_drafts": len(data.train_draft_ids),
               "held_out_drafts": len(data.gate_examples)}
    log.info("Run %s: %s %s by %s (held-out perplexity %.2f -> %.2f)", run_id, candidate_name,
             figures["decision"], data.method, gate.active_perplexity, gate.candidate_perplexity)
    return summary
