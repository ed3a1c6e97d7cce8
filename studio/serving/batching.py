"""Continuous batching for the local model: many writers' drafts decoded together, a token per step.

One loop thread per loaded model keeps a batch of running requests. Between two steps, finished
and stopped requests leave and new ones join: the newcomers' prompts are run (prefilled) together,
left-padded to one length, and their key/value caches are appended to the batch's, again
left-padded; the attention mask hides the padding and each row keeps its own positions. Each step
then runs the model once for the whole batch, which is what makes eight writers cheaper than
eight separate generate() calls. A draft that arrives while others run joins at the next step.

Every request samples with its own settings and its own torch.Generator seeded with the draft's
seed, with the logits processors generate() applies for the studio's settings (repetition
penalty, temperature, top-k, top-p), in its order (batch_sampling.py). Alone in the engine a draft
is therefore the same as model.generate with that seed. In a batch, padding and larger matrices
round floats slightly differently, so a token can differ only where two choices are within
rounding of each other (rare; greedy and sampled drafts alike). Processors that a model's own
generation_config adds beyond those settings (no_repeat_ngram_size, bad_words_ids...) are not
applied here; the studio's models set none.

The loop thread runs only while there is work: it starts with the first request and ends when
the batch is empty, so an engine whose model was swapped out needs no shutdown of its own.
"""

from __future__ import annotations

import atexit
import inspect
import logging
import weakref
from typing import Any, Callable

from studio.serving.batch_rows import (Batch, Request, distinct_prompts, end_of_text_ids, pad_left, prefill_groups,
                                       prompt_key)
from studio.serving.batch_sampling import choose
from studio.serving.draft_queue import DraftQueue

log = logging.getLogger(__name__)

# Engines still alive at interpreter exit are closed first: a loop thread killed mid-step while
# Python shuts down makes torch abort the process ("terminate called without an active exception").
_ENGINES: weakref.WeakSet = weakref.WeakSet()
atexit.register(lambda: [engine.close() for engine in list(_ENGINES)])


# Generation-config entries the batch engine honours, or that the studio's own settings override
# on both paths; a model whose config asks for anything else (no_repeat_ngram_size, bad_words_ids,
# min_p...) would draw different tokens batched than generate() would, so it is not batched.
_BATCHABLE_GENERATION_CONFIG = {
    "_from_model_config", "transformers_version", "use_cache", "output_attentions", "output_hidden_states",
    "output_scores", "output_logits", "return_dict_in_generate", "pad_token_id", "bos_token_id", "eos_token_id",
    "max_length", "max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "repetition_penalty",
}


def batching_obstacle(model: Any) -> str | None:
    """Why drafts on this model cannot be batched, or None when they can.

    Sliding-window, linear-attention and encoder-decoder models keep the one-thread-per-draft path,
    as do models whose generation config asks for logits processors the batch engine lacks.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return "it is not a decoder-only model"
    params = inspect.signature(model.forward).parameters
    if not {"attention_mask", "position_ids", "logits_to_keep"} <= set(params):
        return "its forward() takes no position ids or logits_to_keep"
    generation_config = getattr(model, "generation_config", None)
    extra = set(generation_config.to_diff_dict()) - _BATCHABLE_GENERATION_CONFIG if generation_config else set()
    if extra:
        return f"its generation config sets {', '.join(sorted(extra))}, which only generate() applies"
    try:
        layers = DynamicCache(config=config).layers
    except Exception:  # an unusual config: do not guess
        return "its cache could not be built"
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return "its cache is not plain full attention"
    return None


def cache_argument(model: Any) -> str:
    """The name forward() takes a key/value cache by: transformers 5.2x renamed past_key_values to cache."""
    network = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PeftModel passes it on
    return "cache" if "cache" in inspect.signature(network.forward).parameters else "past_key_values"


class BatchEngine(DraftQueue):
    """The batch of running drafts on one model, and the thread that steps it."""

    def __init__(self, model: Any, max_batch: int = 16, prefill_tokens: int = 2048,
                 on_step: Callable[[int], None] | None = None, share_prompts: bool = True):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}.")
        self.model = model
        self.max_batch = max_batch
        self.prefill_tokens = prefill_tokens  # most (padded) prompt tokens prefilled in one pass
        self.on_step = on_step  # told how many drafts each decoding step carried (the metrics)
        self.share_prompts = share_prompts  # False: every draft's prompt is run, as before (the sampling benchmark)
        self.eos = end_of_text_ids(model)
        self._cache_kwarg = cache_argument(model)
        super().__init__()
        self._batch = Batch()  # touched only by the loop thread
        # Intra-op threads for the loop; None = torch's default (Studio sets 1 while training runs).
        self.threads: int | None = None
        self._default_threads = _torch_threads()
        _ENGINES.add(self)

    # -- the loop thread ---------------------------------------------------------------------

    def _loop(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                wanted = self.threads or self._default_threads
                if torch.get_num_threads() != wanted:
                    torch.set_num_threads(wanted)
                joining = self._take(self.max_batch - len(self._batch.rows))
                if joining is None:
                    return
                # Everyone waiting joins before the next step: running drafts pause once for the
                # newcomers' prefill, rather than once per newcomer.
                for group in prefill_groups([r for r in joining if not r.stopped], self.prefill_tokens,
                                             self.share_prompts):
                    try:
                        self._batch.extend(self._prefill(group))
                    except BaseException as exc:  # a prompt that fails fails its own drafts only
                        _fail(group, exc)
                try:
                    for request in joining:
                        if request.stopped and not request.done.is_set():
                            request.finish()
                    self._batch = self._batch.without_finished()
                    if self._batch.rows:
                        if self.on_step is not None:
                            self.on_step(len(self._batch.rows))
                        self._step()
                        self._batch = self._batch.without_finished()
                except BaseException as exc:  # a failed step fails the batch, never the process
                    _fail(self._batch.rows, exc)
                    self._batch = Batch()

    def _running(self) -> list[Request]:
        return self._batch.rows

    def _forward(self, ids, mask, positions, cache, **kwargs):
        return self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                          **{self._cache_kwarg: cache}, **kwargs)

    def _prefill(self, group: list[Request]) -> "Batch":
        """Run newcomers' prompts (left-padded to one length) and choose their first tokens.

        A prompt several newcomers share (a writer's candidates, a run's drafts of one prompt) is run
        once and its cache copied to each of them. A lone newcomer has no padding: its prefill is
        exactly generate()'s.
        """
        import torch
        from transformers import DynamicCache

        prompts = distinct_prompts(group, self.share_prompts)
        unique = list(prompts.values())
        length = max(r.ids.shape[1] for r in unique)
        ids = torch.cat([pad_left(r.ids, length) for r in unique])
        mask = torch.cat([pad_left(torch.ones_like(r.ids), length) for r in unique])
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        out = self._forward(ids, mask, positions, cache, logits_to_keep=1)
        logits = out.logits[:, -1].to(dtype=torch.float32)
        if len(unique) < len(group):  # each newcomer gets its prompt's row of the cache, mask and logits
            rows = {key: row for row, key in enumerate(prompts)}
            index = torch.tensor([rows[prompt_key(r, self.share_prompts)] for r in group], device=ids.device)
            for layer in cache.layers:
                layer.keys, layer.values = layer.keys[index], layer.values[index]
            mask, logits = mask[index], logits[index]
        tokens = _choose(group, logits.clone())
        return Batch(list(group), cache, mask, torch.tensor(tokens, device=ids.device).unsqueeze(1)).accept(tokens)

    def _step(self) -> None:
        """One token for every row: a single forward pass for the whole batch."""
        import torch

        batch = self._batch
        positions = batch.mask.sum(dim=1, keepdim=True)  # each row's own count of real tokens
        batch.mask = torch.cat([batch.mask, torch.ones_like(batch.next)], dim=1)
        out = self._forward(batch.next, batch.mask, positions, batch.cache)
        tokens = _choose(batch.rows, out.logits[:, -1].to(dtype=torch.float32, copy=True))
        batch.next = torch.tensor(tokens, device=batch.next.device).unsqueeze(1)
        batch.accept(tokens)


def _fail(requests: list[Request], exc: BaseException) -> None:
    log.error("Batched generation failed for %d draft(s)", len(requests), exc_info=exc)
    for request in requests:
        if not request.done.is_set():
            request.finish(exc)


def _choose(rows: list[Request], logits) -> list[int]:
    return choose([r.sampler for r in rows], [r.ids for r in rows], logits)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()
