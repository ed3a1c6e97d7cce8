"""Sampler settings: one object instead of magic numbers scattered through generate() calls."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any, Mapping

from studio.errors import GenerationError

MAX_NEW_TOKENS_LIMIT = 4096  # a hard ceiling; the model's own context length may be lower
MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class SamplerSettings:
    temperature: float = field(default=0.8, metadata={"help": "1.0 = the model as is, < 1.0 = less random.", "min": 0.0, "max": 2.0})
    top_p: float = field(default=0.95, metadata={"help": "Sample from the smallest set of tokens whose probability reaches this.", "min": 0.05, "max": 1.0})
    top_k: int = field(default=50, metadata={"help": "Sample from this many most likely tokens; 0 = no limit.", "min": 0, "max": 1000})
    repetition_penalty: float = field(default=1.1, metadata={"help": "> 1.0 discourages repeating earlier tokens.", "min": 1.0, "max": 2.0})
    max_new_tokens: int = field(default=300, metadata={"help": "The draft stops after this many new tokens.", "min": 1, "max": MAX_NEW_TOKENS_LIMIT})
    seed: int | None = field(default=None, metadata={"help": "Same seed + settings + prompt = same draft; empty = random.", "min": 0, "max": MAX_SEED})

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.name == "seed":
                continue
            kind = int if f.type == "int" or f.name == "seed" else float
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise GenerationError(f"{f.name} must be a number, not {value!r}.")
            if kind is int and value != int(value):
                raise GenerationError(f"{f.name} must be a whole number, not {value}.")
            if not f.metadata["min"] <= value <= f.metadata["max"]:
                raise GenerationError(
                    f"{f.name} must be between {f.metadata['min']} and {f.metadata['max']}, not {value}."
                )
            object.__setattr__(self, f.name, kind(value))

    def updated(self, overrides: Mapping[str, Any] | None) -> "SamplerSettings":
        """These settings with the given ones replaced; None values and unknown keys are errors."""
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None or k == "seed"}
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise GenerationError(f"Unknown sampler setting {unknown[0]!r}; known: {', '.join(sorted(known))}.")
        if overrides.get("seed") is not None and overrides["seed"] < 0:
            overrides["seed"] = None  # -1 means "random", as in most UIs
        return dataclasses.replace(self, **overrides)

    def with_seed(self) -> "SamplerSettings":
        """Settings whose seed is fixed, drawing one when none was asked for, so drafts can be replayed."""
        if self.seed is not None:
            return self
        return dataclasses.replace(self, seed=random.randint(0, MAX_SEED))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for transformers' generate()."""
        greedy = self.temperature == 0.0
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "repetition_penalty": self.repetition_penalty,
            "do_sample": not greedy,
        }
        if not greedy:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        return kwargs


SAMPLER_NAMES = tuple(f.name for f in dataclasses.fields(SamplerSettings))  # in the page's and the CLI's order
