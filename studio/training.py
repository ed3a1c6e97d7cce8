"""Rated drafts -> LoRA fine-tune -> held-out gate -> a new model version, promoted only if better.

The fine-tune is a peft LoRA on the active version's base model, trained with the transformers
Trainer (accelerate underneath: the same code runs on CPU or a GPU). The gate scores the candidate and the active version on held-out drafts
(mean negative log-likelihood per target token) and promotes the candidate only when its
perplexity beats the active version's by the configured margin.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from storage import registry

from .config import Settings
from .dataset import DatasetSplit, Example, build_split, tokenize_example
from .errors import StudioError
from .models import load_model

log = logging.getLogger(__name__)

Report = Callable[[float, str, list], None]  # (progress 0..1, message, loss curve so far)


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

    def __post_init__(self) -> None:
        if not 1 <= self.min_stars <= 5:
            raise StudioError(f"min_stars must be 1 to 5, not {self.min_stars}.")
        if not 0 < self.held_out_fraction < 1:
            raise StudioError(f"held_out_fraction must be between 0 and 1, not {self.held_out_fraction}.")
        if self.epochs < 1 or self.batch_size < 1 or self.lora_r < 1:
            raise StudioError("epochs, batch_size and lora_r must be at least 1.")
        if not 0 <= self.gate_margin < 1:
            raise StudioError(f"gate_margin must be at least 0 and below 1, not {self.gate_margin}.")

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


def held_out_nll(model, tokenizer, examples: list[Example], max_length: int) -> tuple[float, int]:
    """Mean negative log-likelihood per target token over the examples, and the token count."""
    import torch

    total, tokens = 0.0, 0
    model.eval()
    device = next(model.parameters()).device
    with torch.inference_mode():
        for example in examples:
            item = tokenize_example(tokenizer, example, max_length)
            input_ids = torch.tensor([item["input_ids"]], device=device)
            labels = torch.tensor([item["labels"]], device=device)
            logits = model(input_ids=input_ids).logits[:, :-1].float()
            targets = labels[:, 1:]
            losses = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
            )
            total += float(losses)
            tokens += int((targets != -100).sum())
    if tokens == 0:
        raise StudioError("The held-out drafts have no text to score.")
    return total / tokens, tokens


class _Examples:
    """A list of tokenized examples as the Trainer's dataset."""

    def __init__(self, tokenizer, examples: list[Example], max_length: int):
        self.items = [tokenize_example(tokenizer, e, max_length) for e in examples]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.items[i]

    @property
    def tokens(self) -> int:
        return sum(len(item["input_ids"]) for item in self.items)


def _progress_callback(report: Report, curve: list[dict[str, Any]]):
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            point = {"step": state.global_step, "epoch": round(state.epoch or 0, 3)}
            if "loss" in logs:
                curve.append({**point, "split": "train", "loss": float(logs["loss"])})
            if "eval_loss" in logs:
                curve.append({**point, "split": "validation", "loss": float(logs["eval_loss"])})
            fraction = state.global_step / max(state.max_steps, 1)
            last = next((p for p in reversed(curve) if p["split"] == "train"), None)
            loss = f", loss {last['loss']:.3f}" if last else ""
            # Training is 80% of a run's work; the gate is the rest.
            report(0.05 + 0.75 * fraction, f"Training: step {state.global_step}/{state.max_steps}{loss}", curve)

    return Progress()


def train_adapter(model, tokenizer, split: DatasetSplit, config: TrainingConfig, output: Path,
                  report: Report) -> tuple[Any, list[dict[str, Any]], dict[str, float]]:
    """Fine-tune a LoRA on split.train; validation loss on split.held_out each epoch."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (DataCollatorForSeq2Seq, EarlyStoppingCallback, PrinterCallback, Trainer,
                              TrainingArguments, set_seed)

    set_seed(config.seed)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.target_modules, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    train = _Examples(tokenizer, split.train, config.max_length)
    validation = _Examples(tokenizer, split.held_out, config.max_length)
    curve: list[dict[str, Any]] = []
    args = TrainingArguments(
        output_dir=str(output),
        num_train_epochs=config.epochs,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        optim="adamw_torch",
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,
        load_best_model_at_end=True,  # early stopping keeps the best epoch, not the last
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        logging_steps=1,
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        bf16=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
        save_only_model=True,
    )
    trainer = Trainer(
        model=peft_model,
        args=args,
        train_dataset=train,
        eval_dataset=validation,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        callbacks=[EarlyStoppingCallback(config.early_stopping_patience), _progress_callback(report, curve)],
    )
    trainer.remove_callback(PrinterCallback)  # progress goes to the run record, stdout stays clean
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    epochs_run = float(result.metrics.get("epoch", config.epochs))
    stats = {
        "train_seconds": seconds,
        "train_tokens": train.tokens * epochs_run,
        "train_tokens_per_second": train.tokens * epochs_run / seconds if seconds else 0.0,
        "epochs": epochs_run,
        "train_loss": float(result.training_loss),
    }
    return peft_model, curve, stats


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


def run_training(sessions, settings: Settings, config: TrainingConfig, run_id: int,
                 report: Report) -> dict[str, Any]:
    """One training run end to end; returns the candidate's figures. Raises on failure."""
    with sessions.begin() as session:
        active = registry.ensure_base_version(session, settings.model)
        split = build_split(session, min_stars=config.min_stars, held_out_fraction=config.held_out_fraction,
                            min_held_out=config.min_held_out, min_train=config.min_train, seed=config.seed,
                            max_per_writer=config.max_per_writer)
        candidate = registry.add_version(
            session, name=registry.next_version_name(session), parent_id=active.id, base_model=settings.model,
            adapter_path=None, status="training", is_active=False,
            train_draft_ids=[e.draft_id for e in split.train],
            held_out_draft_ids=[e.draft_id for e in split.held_out],
            hyperparameters=config.to_dict(), loss_curve=[], gate={},
        )
        registry.update_run(session, run_id, version_id=candidate.id)
        active_info = (active.id, active.name, active.adapter_path)
        candidate_id, candidate_name = candidate.id, candidate.name
    report(0.02, f"{len(split.train)} drafts to train on, {len(split.held_out)} held out"
                 f"{f', {len(split.duplicates_dropped)} duplicates dropped' if split.duplicates_dropped else ''}.", [])
    try:
        base = load_model(settings.model, settings.data_path, settings.device)
        active_nll = None
        if active_info[2] is None:
            # The active version is the base itself: score it now, on the model already loaded,
            # before LoRA layers are added to it (rather than loading it a second time).
            active_nll, _ = held_out_nll(base.model, base.tokenizer, split.held_out, config.max_length)
        with tempfile.TemporaryDirectory(prefix="studio-train-") as scratch:
            peft_model, curve, stats = train_adapter(base.model, base.tokenizer, split, config, Path(scratch), report)
        adapter = save_adapter_atomically(peft_model, settings.data_path / "adapters" / candidate_name)
        with sessions.begin() as session:
            registry.update_version(session, candidate_id, adapter_path=str(adapter), loss_curve=curve)

        report(0.85, "Scoring the candidate and the active version on held-out drafts…", curve)
        candidate_nll, tokens = held_out_nll(peft_model, base.tokenizer, split.held_out, config.max_length)
        del peft_model
        if active_nll is None:
            active = load_model(settings.model, settings.data_path, settings.device, adapter=active_info[2])
            active_nll, _ = held_out_nll(active.model, active.tokenizer, split.held_out, config.max_length)
        gate = GateResult(active_nll, candidate_nll, tokens, config.gate_margin)
        with sessions.begin() as session:
            registry.update_version(session, candidate_id, gate={**gate.to_dict(), "against": active_info[1]},
                                    hyperparameters={**config.to_dict(), **stats}, status="rejected")
            if gate.promote:
                registry.activate(session, candidate_id)
    except BaseException:
        with sessions.begin() as session:
            registry.update_version(session, candidate_id, status="failed")
        raise
    decision = "promoted" if gate.promote else "rejected"
    summary = {"version": candidate_name, "decision": decision, **gate.to_dict(), **stats,
               "train_drafts": len(split.train), "held_out_drafts": len(split.held_out)}
    log.info("Run %s: %s %s (held-out perplexity %.2f -> %.2f)", run_id, candidate_name, decision,
             gate.active_perplexity, gate.candidate_perplexity)
    return summary
