"""The three ways a run trains a LoRA adapter on the serving version's base model.

- From liked drafts: supervised fine-tuning with the transformers Trainer, loss on the draft only.
- From every rated draft: KTO with TRL's KTOTrainer, liked drafts desirable, disliked ones not.
- From writers' picks: DPO with TRL's DPOTrainer, its sigmoid loss plus an SFT term on the chosen
  drafts, so the model learns what writers pick without drifting away from writing it (plain
  DPO can lower the likelihood of both sides).

All run under accelerate (CPU or GPU alike) and report progress to the run record. The held-out
drafts are the gate's alone, so no trainer validates on them: each trains its epochs (or steps).
Under `accelerate launch` every process trains (processes.py): each trainer here turns the run's data
into rows on the main process, and _fit_* trains on them on every process.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from studio.learning.config import TrainingConfig
from studio.learning.dataset import Example, PreferencePair, tokenize_example
from studio.learning.processes import state, train_everywhere
from studio.text import through_last_sentence

Report = Callable[[float, str, list], None]  # (progress 0..1, message, loss curve so far)
Figures = dict[str, float]
Trained = tuple[Any, list[dict[str, Any]], Figures]  # the model with its adapter, the loss curve, figures


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
            fraction = state.global_step / max(state.max_steps, 1)
            last = next((p for p in reversed(curve) if p["split"] == "train"), None)
            loss = f", loss {last['loss']:.3f}" if last else ""
            # Training is 80% of a run's work; the gate is the rest.
            report(0.05 + 0.75 * fraction, f"Training: step {state.global_step}/{state.max_steps}{loss}", curve)

    return Progress()


def _common_arguments(config: TrainingConfig, output: Path) -> dict[str, Any]:
    """TrainingArguments shared by the trainers (DPOConfig and KTOConfig extend TrainingArguments)."""
    import torch

    # batch_size drafts a step in all, shared by the processes: a run takes the same steps on one
    # process or several (exactly when they divide batch_size, else a slightly larger batch).
    per_process = -(-config.batch_size // state().num_processes)
    return dict(
        output_dir=str(output),
        num_train_epochs=config.epochs or 1,  # None: kto's fixed steps (max_steps) decide
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        optim="adamw_torch",
        per_device_train_batch_size=per_process,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=1,
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        bf16=trains_in_bf16(config.precision),
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
        save_only_model=True,
        ddp_find_unused_parameters=False,  # every LoRA weight takes part in each step: no search for idle ones
    )


def trains_in_bf16(precision: str) -> bool:
    """Whether a run trains in bf16 mixed precision (autocast): asked for, or on hardware that computes bf16
    natively, where a step takes less time than in float32 (`python -m studio.bench training` measures
    it); where bf16 is emulated it takes more."""
    import torch

    if precision != "auto":
        return precision == "bf16"
    if torch.cuda.is_available():
        return True
    try:  # oneDNN's own check for AVX512-BF16 / AMX, what CPU autocast's bf16 matmuls run on
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _lora(config: TrainingConfig):
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.target_modules, task_type="CAUSAL_LM")


def _train(trainer, train_tokens: int, config: TrainingConfig) -> Figures:
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # progress goes to the run record, stdout stays clean
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    epochs_run = float(result.metrics.get("epoch", config.epochs or 1))
    return {
        "train_seconds": seconds,
        "train_tokens": train_tokens * epochs_run,
        "train_tokens_per_second": train_tokens * epochs_run / seconds if seconds else 0.0,
        "epochs": epochs_run,
        "train_loss": float(result.training_loss),
    }


def train_adapter(model, tokenizer, examples: list[Example], config: TrainingConfig, output: Path,
                  report: Report) -> Trained:
    """Supervised fine-tuning of a LoRA on liked drafts (the loss on the draft only)."""
    return train_everywhere(_fit_sft, model, tokenizer, examples, config.resolved("sft"), output, report)


def _fit_sft(model, tokenizer, examples: list[Example], config: TrainingConfig, output: Path,
             report: Report) -> Trained:
    from peft import get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

    set_seed(config.seed)
    peft_model = get_peft_model(model, _lora(config))
    train = _Examples(tokenizer, examples, config.max_length)
    curve: list[dict[str, Any]] = []
    trainer = Trainer(
        model=peft_model,
        args=TrainingArguments(**_common_arguments(config, output)),
        train_dataset=train,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        callbacks=[_progress_callback(report, curve)],
    )
    return peft_model, curve, _train(trainer, train.tokens, config)


def _prompt(tokenizer, example: Example) -> str:
    """The exact text the model was given, as TRL's standard (already templated) formats take it."""
    adds_bos = tokenizer.bos_token_id is not None and tokenizer("x").input_ids[:1] == [tokenizer.bos_token_id]
    if adds_bos and example.context.startswith(tokenizer.bos_token):
        return example.context[len(tokenizer.bos_token):]  # TRL's tokenizer call adds it again
    return example.context


def taught_ending(example: Example) -> str:
    """The completion DPO (TRL's trainer ends every draft with end-of-text) may teach as chosen: a
    draft that ended, whole; one cut short (at the token limit, by Stop, or a crash) up to its last
    finished sentence, so that no chosen draft teaches ending mid-sentence ("" when it has none)."""
    return example.completion if example.ended else through_last_sentence(example.completion)


def preference_rows(tokenizer, pairs: list[PreferencePair]) -> list[dict[str, str]]:
    """Each pick as TRL takes it; a chosen draft cut short, as taught_ending has it. One with no
    finished sentence stays whole, as before drafts recorded their ending: a writer's few picks are
    all a DPO run has, and leaving them out could leave it nothing to train on."""
    rows = []
    for p in pairs:
        chosen = taught_ending(p.chosen)
        rows.append({"prompt": _prompt(tokenizer, p.chosen), "chosen": chosen if chosen.strip() else p.chosen.completion,
                     "rejected": p.rejected.completion})
    return rows


def train_kto_adapter(model, tokenizer, examples: list[Example], liked: Callable[[Example], bool],
                      config: TrainingConfig, output: Path, report: Report) -> Trained:
    """KTO (TRL's KTOTrainer) of a LoRA on every rated draft: liked ones desirable, disliked ones not.

    Unpaired, so every rating counts, whatever prompt it answers. The rarer side is weighted up so
    both sides pull equally (TRL's advice: desirable x count within 1 to 4/3 of undesirable x count).
    Every draft trains whole; one the model ended trains with its end-of-text, one cut short (at
    the token limit, by Stop, or a crash) without, so that none teaches ending mid-sentence.
    """
    return train_everywhere(_fit_kto, model, tokenizer, kto_rows(tokenizer, examples, liked), config.resolved("kto"),
                            output, report)


def kto_rows(tokenizer, examples: list[Example], liked: Callable[[Example], bool]) -> list[dict[str, Any]]:
    rows = [{"prompt": _prompt(tokenizer, e), "completion": e.completion, "label": liked(e), "ended": e.ended}
            for e in examples]
    return [row for row in rows if row["completion"].strip()]


def _kto_trainer_class():
    """TRL's KTOTrainer, but a row that did not end keeps no end-of-text token.

    TRL appends end-of-text to every completion before it tokenizes, and cannot be told not to. Cutting
    a draft back to its last finished sentence instead (as DPO's picks are) loses what the writer liked
    whenever it came after that sentence, which in drafts cut at the token limit is often (README, the
    loop benchmark). So the token is taken off again once TRL has tokenized, before the reference model
    scores the rows.
    """
    from trl import KTOTrainer

    class KTOTrainerKeepingCuts(KTOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            if "ended" not in dataset.column_names:
                return dataset
            eos = self._tokenizer.eos_token_id

            def unended(row: dict[str, Any]) -> dict[str, Any]:
                if not row["ended"] and row["completion_ids"][-1:] == [eos]:
                    row["completion_ids"] = row["completion_ids"][:-1]
                return row

            return dataset.map(unended).remove_columns("ended")

    return KTOTrainerKeepingCuts


def _fit_kto(model, tokenizer, rows: list[dict[str, Any]], config: TrainingConfig, output: Path,
             report: Report) -> Trained:
    from transformers import set_seed

    set_seed(config.seed)
    curve: list[dict[str, Any]] = []
    trainer = kto_trainer(model, tokenizer, rows, config, output, report, curve)
    tokens = sum(len(r["prompt_ids"]) + len(r["completion_ids"]) for r in trainer.train_dataset
                 if "prompt_ids" in r) or sum(len(tokenizer(r["prompt"] + r["completion"]).input_ids) for r in rows)
    figures = _train(trainer, tokens, config)
    if "ref" in trainer.model.peft_config:  # TRL's copy of the start adapter, the reference
        trainer.model.delete_adapter("ref")  # so the candidate's folder holds its own adapter alone
    return trainer.model, curve, figures


def kto_trainer(model, tokenizer, rows: list[dict[str, Any]], config: TrainingConfig, output: Path, report: Report,
                curve: list[dict[str, Any]]):
    """The KTO trainer of these rows (kto_rows), tokenized as it trains them and scored by the reference."""
    from datasets import Dataset, disable_progress_bars
    from trl import KTOConfig

    disable_progress_bars()
    desirable = sum(r["label"] for r in rows)
    undesirable = len(rows) - desirable
    arguments = {**_common_arguments(config, output), "max_steps": config.kto_run_steps(len(rows))}
    # The reference (the base: the adapter switched off) scores each draft once, before training. Not on
    # several processes: TRL hands its scores to the others in a cache file beside the dataset, and an
    # in-memory dataset's is in each process's own temporary folder; there it scores each batch as it comes.
    alone = state().num_processes == 1
    args = KTOConfig(**arguments, beta=config.kto_beta, loss_type=config.kto_loss, precompute_ref_log_probs=alone,
                     max_length=config.max_length, gradient_checkpointing=False,
                     desirable_weight=max(1.0, undesirable / max(desirable, 1)),
                     undesirable_weight=max(1.0, desirable / max(undesirable, 1)))
    os.environ.setdefault("TQDM_DISABLE", "1")  # TRL's scoring bar would fill the run's log
    if alone:
        reference = "serving version" if config.start_adapter else "base model"
        report(0.04, f"Scoring {len(rows)} rated drafts with the {reference}…", curve)
    model, lora = _start(model, config)
    return _kto_trainer_class()(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                processing_class=tokenizer, peft_config=lora,
                                callbacks=[_progress_callback(report, curve)])


def _start(model, config: TrainingConfig):
    """What a kto run trains, and the LoRA config TRL should add: the start adapter loaded trainable, which
    TRL copies as the reference (so the loss asks for more than the serving version already does), or the
    base with a new LoRA, whose reference is the base (the adapter switched off)."""
    if config.start_adapter and _same_shape(Path(config.start_adapter), config):
        from peft import PeftModel

        return PeftModel.from_pretrained(model, config.start_adapter, is_trainable=True), None
    return model, _lora(config)


def _same_shape(adapter: Path, config: TrainingConfig) -> bool:
    """Whether an adapter folder holds a LoRA of this run's rank, scale and layers (settings may change)."""
    try:
        saved = json.loads((adapter / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return False
    return (saved.get("r"), saved.get("lora_alpha"), set(saved.get("target_modules") or ())) == (
        config.lora_r, config.lora_alpha, set(config.target_modules))


def train_preference_adapter(model, tokenizer, pairs: list[PreferencePair], config: TrainingConfig, output: Path,
                             report: Report) -> Trained:
    """DPO (sigmoid + SFT on the chosen side) of a LoRA on picks; the reference is the base itself,
    with the adapter switched off, so no second copy of the model is held."""
    return train_everywhere(_fit_dpo, model, tokenizer, preference_rows(tokenizer, pairs), config.resolved("dpo"),
                            output, report)


def _fit_dpo(model, tokenizer, rows: list[dict[str, str]], config: TrainingConfig, output: Path,
             report: Report) -> Trained:
    from datasets import Dataset, disable_progress_bars
    from transformers import set_seed
    from trl import DPOConfig, DPOTrainer

    disable_progress_bars()  # TRL's dataset preparation would fill the run's log with bars
    set_seed(config.seed)
    curve: list[dict[str, Any]] = []
    # Checkpointing off, as in the supervised run: these models are small, and it costs time.
    args = DPOConfig(**_common_arguments(config, output), beta=config.dpo_beta, loss_type=["sigmoid", "sft"],
                     max_length=config.max_length, gradient_checkpointing=False)
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=_lora(config), callbacks=[_progress_callback(report, curve)])
    # Counted on TRL's own tokenization: each pick is its prompt twice, with either draft.
    tokens = sum(2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"])
                 for r in trainer.train_dataset)
    figures = _train(trainer, tokens, config)
    return trainer.model, curve, figures
