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
import threading
import weakref
from typing import Any, Callable

from studio.serving.batch_sampling import RowSampler, choose
from studio.serving.sampling import SamplerSettings

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


class Request:
    """One draft in the engine: its prompt, sampler, text streamer and progress (shared with DraftStream)."""

    def __init__(self, input_ids, settings: SamplerSettings, streamer, progress, eos_token_ids: set[int]):
        self.ids = input_ids  # [1, n]: the prompt, then every token chosen (the repetition penalty reads it)
        self.settings = settings
        self.sampler = RowSampler(settings, input_ids.device)
        self.streamer = streamer
        self.progress = progress  # the stream's stop event and token count: .event, .count(), .tokens
        self.eos = eos_token_ids
        self.done = threading.Event()
        self.error: BaseException | None = None

    @property
    def stopped(self) -> bool:
        return self.progress.event.is_set()

    def accept(self, token: int) -> bool:
        """Record and stream a chosen token; True when the draft is complete."""
        import torch

        self.ids = torch.cat([self.ids, self.ids.new_tensor([[token]])], dim=1)
        self.progress.count()
        self.streamer.put(torch.tensor([token]))
        return token in self.eos or self.progress.tokens >= self.settings.max_new_tokens

    def finish(self, error: BaseException | None = None) -> None:
        self.error = error
        self.streamer.end()
        self.done.set()

    # Like a worker thread, so a stream waits on either the same way.
    def is_alive(self) -> bool:
        return not self.done.is_set()

    def join(self) -> None:
        self.done.wait()


class BatchEngine:
    """The batch of running drafts on one model, and the thread that steps it."""

    def __init__(self, model: Any, max_batch: int = 16, prefill_tokens: int = 2048,
                 on_step: Callable[[int], None] | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}.")
        self.model = model
        self.max_batch = max_batch
        self.prefill_tokens = prefill_tokens  # most (padded) prompt tokens prefilled in one pass
        self.on_step = on_step  # told how many drafts each decoding step carried (the metrics)
        eos = model.generation_config.eos_token_id
        self.eos: set[int] = set() if eos is None else {eos} if isinstance(eos, int) else set(eos)
        # transformers 5.2x renamed forward's past_key_values to cache; take whichever this one has.
        params = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self._lock = threading.Lock()
        self._pending: list[Request] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self._batch = _Batch()  # touched only by the loop thread
        # Intra-op threads for the loop; None = torch's default (Studio sets 1 while training runs).
        self.threads: int | None = None
        self._default_threads = _torch_threads()
        _ENGINES.add(self)

    def submit(self, request: Request) -> None:
        from studio.errors import GenerationError

        with self._lock:
            if self._closed:
                raise GenerationError("The model was unloaded; start the draft again.")
            self._pending.append(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="batch-engine", daemon=True)
                self._thread.start()

    def __len__(self) -> int:
        """Drafts waiting or running (not yet finished)."""
        with self._lock:
            return sum(not r.done.is_set() for r in [*self._pending, *self._batch.rows])

    def health(self) -> tuple[bool, str]:
        """Whether drafts submitted now will be decoded: not closed, and drafts waiting have a thread
        (the thread ends when the batch is empty and the next draft starts another)."""
        with self._lock:
            if self._closed:
                return False, "closed: the model was unloaded"
            waiting = len(self._pending) + len(self._batch.rows)
            if waiting and (self._thread is None or not self._thread.is_alive()):
                return False, f"{waiting} draft(s) waiting and no thread decoding them"
            return True, f"{waiting} draft(s) in the batch" if waiting else "idle"

    def close(self) -> None:
        """Refuse new requests, stop the running ones, and wait for the loop thread to end."""
        with self._lock:
            self._closed = True
            requests, thread = [*self._pending, *self._batch.rows], self._thread
        for request in requests:
            request.progress.event.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # -- the loop thread ---------------------------------------------------------------------

    def _loop(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                wanted = self.threads or self._default_threads
                if torch.get_num_threads() != wanted:
                    torch.set_num_threads(wanted)
                with self._lock:
                    room = self.max_batch - len(self._batch.rows)
                    joining, self._pending = self._pending[:room], self._pending[room:]
                    if not joining and not self._batch.rows:
                        self._thread = None  # idle: the next submit starts a new thread
                        return
                # Everyone waiting joins before the next step: running drafts pause once for the
                # newcomers' prefill, rather than once per newcomer.
                for group in _prefill_groups([r for r in joining if not r.stopped], self.prefill_tokens):
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
                    self._batch = _Batch()

    def _forward(self, ids, mask, positions, cache, **kwargs):
        return self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                          **{self._cache_kwarg: cache}, **kwargs)

    def _prefill(self, group: list[Request]) -> "_Batch":
        """Run newcomers' prompts (left-padded to one length) and choose their first tokens.

        A lone newcomer has no padding: its prefill is exactly generate()'s.
        """
        import torch
        from transformers import DynamicCache

        length = max(r.ids.shape[1] for r in group)
        ids = torch.cat([_pad_left(r.ids, length) for r in group])
        mask = torch.cat([_pad_left(torch.ones_like(r.ids), length) for r in group])
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        out = self._forward(ids, mask, positions, cache, logits_to_keep=1)
        tokens = _choose(group, out.logits[:, -1].to(dtype=torch.float32, copy=True))
        return _Batch(list(group), cache, mask, torch.tensor(tokens, device=ids.device).unsqueeze(1)).accept(tokens)

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


class _Batch:
    """Rows decoded together: their requests, key/value cache, attention mask and next input tokens."""

    def __init__(self, rows: list[Request] | None = None, cache=None, mask=None, next_tokens=None):
        self.rows = rows or []
        self.cache = cache  # a DynamicCache, one row per request
        self.mask = mask  # [rows, length]: 1 for real tokens, 0 for left padding
        self.next = next_tokens  # [rows, 1]: each row's latest token, fed at the next step

    def accept(self, tokens: list[int]) -> "_Batch":
        """Hand each row its chosen token; rows that are complete finish."""
        for row, token in zip(self.rows, tokens):
            if row.accept(token):
                row.finish()
        return self

    def extend(self, other: "_Batch") -> None:
        """Append other's rows, left-padding both to one length."""
        import torch

        if not self.rows:
            self.rows, self.cache, self.mask, self.next = other.rows, other.cache, other.mask, other.next
            return
        length = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys = torch.cat([_pad_left(mine.keys, length), _pad_left(theirs.keys, length)])
            mine.values = torch.cat([_pad_left(mine.values, length), _pad_left(theirs.values, length)])
        self.mask = torch.cat([_pad_left(self.mask, length), _pad_left(other.mask, length)])
        self.next = torch.cat([self.next, other.next])
        self.rows = self.rows + other.rows

    def without_finished(self) -> "_Batch":
        """Stopped rows finish; finished rows leave, with the padding columns no remaining row needs."""
        import torch

        for row in self.rows:
            if row.stopped and not row.done.is_set():
                row.finish()
        keep = [i for i, row in enumerate(self.rows) if not row.done.is_set()]
        if len(keep) == len(self.rows):
            return self
        if not keep:
            return _Batch()
        index = torch.tensor(keep, device=self.mask.device)
        mask = self.mask[index]
        start = int(mask.any(dim=0).int().argmax())  # the first column some remaining row uses
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]
        return _Batch([self.rows[i] for i in keep], self.cache, mask[:, start:], self.next[index])


def _fail(requests: list[Request], exc: BaseException) -> None:
    log.error("Batched generation failed for %d draft(s)", len(requests), exc_info=exc)
    for request in requests:
        if not request.done.is_set():
            request.finish(exc)


def _prefill_groups(requests: list[Request], budget: int) -> list[list[Request]]:
    """Newcomers in arrival order, cut into groups whose padded size stays within budget tokens."""
    groups: list[list[Request]] = []
    for request in requests:
        group = groups[-1] if groups else None
        if group and (len(group) + 1) * max(request.ids.shape[1], *(r.ids.shape[1] for r in group)) <= budget:
            group.append(request)
        else:
            groups.append([request])
    return groups


def _choose(rows: list[Request], logits) -> list[int]:
    return choose([r.sampler for r in rows], [r.ids for r in rows], logits)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _pad_left(tensor, length: int):
    """Zeros on the left of the sequence axis (-2 for keys/values [b, h, s, d], -1 for a mask [b, s])."""
    import torch

    axis = -1 if tensor.dim() == 2 else -2
    missing = length - tensor.shape[axis]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[axis] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=axis)
