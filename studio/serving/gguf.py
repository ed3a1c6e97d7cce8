"""Drafts written by llama.cpp from a GGUF file: the fast path on a CPU.

On a CPU every token of a lone draft reads all of the model's weights, so a draft's speed is the
bytes it reads. The embedded model's GGUF (4-bit, 93 MB) is 5.5x smaller than the float32 weights
transformers serves, and llama.cpp's kernels for it are several times faster (the speed benchmark
measures both beside llama-server). Training still uses the float weights; this engine only writes.

It takes the same Requests as batching.BatchEngine, so a DraftStream cannot tell them apart, and
batches them the way llama-server does: one loop thread while there is work; each step is one
llama_decode holding every running draft's next token and the newcomers' prompts (in chunks, so a
long prompt never stalls the others for long), each draft a sequence of its own in one key/value
cache. Each draft samples with a llama.cpp sampler chain seeded with its seed, in the order
transformers applies the studio's settings (repetition penalty over prompt and draft, temperature,
top-k, top-p): the same seed writes the same draft, alone or in the same company, though not the
transformers path's (other kernels, other random numbers). Beside other drafts llama.cpp rounds
differently (its kernels split a batch by its size, as llama-server's do), so a draft can take
another turn where two tokens were nearly tied.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from studio.errors import GenerationError, ModelError
from studio.serving.batch_rows import Request
from studio.serving.draft_queue import DraftQueue
from studio.serving.llama_library import library

log = logging.getLogger(__name__)

PREFILL_TOKENS = 512  # most prompt tokens one step decodes beside the running drafts
CONTEXT_TOKENS = 16384  # the key/value cache all running drafts share (about 23 kB a token for the embedded model)

_ENGINES: weakref.WeakSet = weakref.WeakSet()
atexit.register(lambda: [engine.close() for engine in list(_ENGINES)])


@dataclass
class _Row:
    """A draft in the engine: its request (whose streamer takes text: TextIteratorStreamer), its
    sequence in the cache, its sampler, and what it feeds next."""

    request: Request
    seq: int
    sampler: Any
    feed: list[int]  # tokens still to decode: the prompt (in chunks), then each chosen token
    position: int = 0
    undecoded: bytes = b""  # the start of a character whose other bytes come with the next token
    done: bool = False


class GgufEngine(DraftQueue):
    """The running drafts on one GGUF model, and the thread that steps them."""

    thread_name, label = "gguf-engine", "llama.cpp, "

    def __init__(self, path: Path | str, max_batch: int = 16, on_step: Callable[[int], None] | None = None,
                 threads: int | None = None, context_tokens: int = CONTEXT_TOKENS, adapter: Path | None = None):
        lib = library()
        self.path = Path(path)
        self.adapter = adapter  # a fine-tuned version's GGUF LoRA adapter (gguf_adapter.py), applied at every step
        self.max_batch = max_batch
        self.on_step = on_step
        self.threads: int | None = None  # decoding threads; None = default_threads (the pool sets 1 while training)
        self.default_threads = threads or _default_threads()
        self._model = lib.llama_model_load_from_file(str(self.path).encode(), lib.llama_model_default_params())
        if not self._model:
            raise ModelError(f"llama.cpp could not load {self.path}: is it a GGUF model file?")
        self._vocab = lib.llama_model_get_vocab(self._model)
        self.vocab_size = lib.llama_vocab_n_tokens(self._vocab)
        self.context_length = lib.llama_model_n_ctx_train(self._model)
        self.eos = {t for t in range(self.vocab_size) if lib.llama_vocab_is_eog(self._vocab, t)}
        params = lib.llama_context_default_params()
        params.n_ctx = context_tokens
        params.n_batch = params.n_ubatch = PREFILL_TOKENS + max_batch
        params.n_seq_max = max_batch + 1  # and one for log_probabilities
        params.kv_unified = True  # drafts of any length share one cache, as llama-server's slots do
        params.n_threads = params.n_threads_batch = self.default_threads
        params.no_perf = True
        self._ctx = lib.llama_init_from_model(self._model, params)
        if not self._ctx:
            lib.llama_model_free(self._model)
            raise ModelError(f"llama.cpp could not make a context for {self.path} (out of memory?).")
        self._free = weakref.finalize(self, _free, lib, self._model, self._ctx)
        if adapter is not None:
            self._apply(lib, adapter)
        self._memory = lib.llama_get_memory(self._ctx)
        self._batch = lib.llama_batch_init(params.n_batch, 0, 1)
        self._piece = ctypes.create_string_buffer(256)  # one token's text (the loop thread's)
        self._applied_threads = self.default_threads
        self._step_lock = threading.Lock()  # the context decodes one batch at a time: a step's, or a score's
        self._batch_size = params.n_batch
        super().__init__()
        self._rows: list[_Row] = []  # touched only by the loop thread
        self._free_batch = weakref.finalize(self, lib.llama_batch_free, self._batch)
        _ENGINES.add(self)

    # -- what the pool and DraftStream call ----------------------------------------------------

    def tokenize(self, text: str, special: bool) -> list[int]:
        """Token ids of text by the model's own vocabulary (special: add its begin-of-text token)."""
        lib = library()
        raw = text.encode("utf-8")
        room = len(raw) + 8
        ids = (lib.llama_token * room)()
        count = lib.llama_tokenize(self._vocab, raw, len(raw), ids, room, special, True)
        if count < 0:
            raise GenerationError("The prompt could not be tokenized.")
        return list(ids[:count])

    def close(self) -> None:
        """Refuse new drafts, stop the running ones, wait for the loop to end, free the model."""
        super().close()
        if self._thread is not threading.current_thread():
            self._free_batch()
            self._free()

    def log_probabilities(self, ids: list[int], first: int) -> list[float]:
        """The model's log-probability of each token of ids[first:] after those before it (what a
        perplexity is computed from), in a sequence of its own beside the running drafts."""
        import numpy as np

        lib, seq, wanted = library(), self.max_batch, range(max(first, 1) - 1, len(ids) - 1)
        batch = lib.llama_batch_init(self._batch_size, 0, 1)
        rows = []
        try:
            with self._step_lock:
                lib.llama_memory_seq_rm(self._memory, seq, -1, -1)
                for start in range(0, len(ids) - 1, self._batch_size):
                    chunk = range(start, min(start + self._batch_size, len(ids) - 1))
                    for n, i in enumerate(chunk):
                        batch.token[n], batch.pos[n], batch.n_seq_id[n], batch.seq_id[n][0] = ids[i], i, 1, seq
                        batch.logits[n] = i in wanted
                    batch.n_tokens = len(chunk)
                    if lib.llama_decode(self._ctx, batch) != 0:
                        raise GenerationError("llama.cpp could not score the text.")
                    rows += [np.ctypeslib.as_array(lib.llama_get_logits_ith(self._ctx, n), shape=(self.vocab_size,))
                             .astype(np.float64) for n, i in enumerate(chunk) if i in wanted]
                lib.llama_memory_seq_rm(self._memory, seq, -1, -1)
        finally:
            lib.llama_batch_free(batch)
        return [float(row[ids[i + 1]] - row.max() - np.log(np.exp(row - row.max()).sum())) for row, i in zip(rows, wanted)]

    def _apply(self, lib, adapter: Path) -> None:
        """Load the LoRA adapter onto the model and apply it, at full scale, in this context."""
        loaded = lib.llama_adapter_lora_init(self._model, str(adapter).encode())
        if not loaded:
            self._free()
            raise ModelError(f"llama.cpp could not load the adapter {adapter} onto {self.path.name}.")
        adapters = (lib.llama_adapter_lora_p_ctypes * 1)(loaded)
        if lib.llama_set_adapters_lora(self._ctx, adapters, 1, (ctypes.c_float * 1)(1.0)) != 0:
            self._free()
            raise ModelError(f"llama.cpp could not apply the adapter {adapter}.")

    # -- the loop thread ---------------------------------------------------------------------

    def _loop(self) -> None:
        lib = library()
        while True:
            free = sorted(set(range(self.max_batch)) - {row.seq for row in self._rows})
            joining = self._take(len(free))
            if joining is None:
                return
            for seq, request in zip(free, joining):
                self._join(lib, seq, request)
            self._rows = self._without_finished(lib)
            if not self._rows:
                continue
            try:
                with self._step_lock:
                    self._step(lib)
            except BaseException as exc:  # a failed step fails the batch, never the process
                log.error("llama.cpp failed for %d draft(s)", len(self._rows), exc_info=exc)
                for row in self._rows:
                    row.done = True
                    row.request.finish(exc)
                self._rows = self._without_finished(lib)

    def _running(self) -> list[Request]:
        return [row.request for row in self._rows]

    def _join(self, lib, seq: int, request: Request) -> None:
        prompt = [int(t) for t in request.ids[0].tolist()]
        try:
            sampler = _sampler(lib, request.settings, self.vocab_size, self.context_length)
        except BaseException as exc:
            request.finish(exc)
            return
        for token in prompt:  # the repetition penalty reads the prompt too, as generate()'s does
            lib.llama_sampler_accept(sampler, token)
        lib.llama_memory_seq_rm(self._memory, seq, -1, -1)
        self._rows.append(_Row(request, seq, sampler, prompt))

    def _without_finished(self, lib) -> list[_Row]:
        kept = []
        for row in self._rows:
            if row.request.stopped and not row.done:
                row.done = True
                row.request.finish()
            if row.done:
                lib.llama_memory_seq_rm(self._memory, row.seq, -1, -1)
                lib.llama_sampler_free(row.sampler)
            else:
                kept.append(row)
        return kept

    def _step(self, lib) -> None:
        """One llama_decode: a token for every running draft, and as much of the newcomers' prompts as fits."""
        wanted = self.threads or self.default_threads
        if wanted != self._applied_threads:
            lib.llama_set_n_threads(self._ctx, wanted, wanted)
            self._applied_threads = wanted
        if self.on_step is not None:
            self.on_step(sum(len(row.feed) == 1 for row in self._rows))
        batch, count, budget, taken = self._batch, 0, PREFILL_TOKENS, []
        for row in sorted(self._rows, key=lambda r: len(r.feed)):  # running drafts first, then prompts
            take = row.feed if len(row.feed) == 1 else row.feed[:max(budget, 0)]
            budget -= len(take) if len(row.feed) > 1 else 0
            for i, token in enumerate(take):
                batch.token[count], batch.pos[count] = token, row.position + i
                batch.n_seq_id[count], batch.seq_id[count][0] = 1, row.seq
                batch.logits[count] = i == len(row.feed) - 1  # the last token fed: its next one is read
                count += 1
            taken.append((row, len(take), count - 1 if take and len(take) == len(row.feed) else -1))
        batch.n_tokens = count
        code = lib.llama_decode(self._ctx, batch)
        if code == 1:  # no room left in the cache the drafts share: the longest stops, the others go on
            self._stop_longest()
            return
        if code != 0:
            raise GenerationError(f"llama.cpp could not decode the batch (code {code}).")
        for row, fed, logits_at in taken:
            row.position, row.feed = row.position + fed, row.feed[fed:]
            if logits_at >= 0:
                token = lib.llama_sampler_sample(row.sampler, self._ctx, logits_at)
                row.feed = [token]
                self._accept(lib, row, token)

    def _stop_longest(self) -> None:
        longest = max(self._rows, key=lambda row: row.position)
        log.warning("llama.cpp's cache is full with %d drafts: the longest stops early", len(self._rows))
        if longest.undecoded:
            longest.request.streamer.on_finalized_text(longest.undecoded.decode("utf-8", "replace"))
        longest.done = True
        longest.request.finish(GenerationError(
            "The drafts being written together filled the model's memory for them, so this one, the "
            "longest, stopped here. Continue it, or ask the operator for a lower --max-batch."))

    def _accept(self, lib, row: _Row, token: int) -> None:
        """Count a chosen token and stream its text. The text goes straight to the draft's
        TextIteratorStreamer as llama.cpp spells it (a token may end inside a character: its bytes
        wait for the rest), not through the tokenizer in Python, which would take a core from
        llama.cpp's threads at every token."""
        request, ended = row.request, token in row.request.eos  # DraftStream passes the engine's own
        request.progress.count(ended=ended)
        if not ended:
            size = lib.llama_token_to_piece(self._vocab, token, self._piece, len(self._piece), 0, False)
            row.undecoded += self._piece.raw[:max(size, 0)]
            text, row.undecoded = _complete_characters(row.undecoded)
            if text:
                request.streamer.on_finalized_text(text)
        if ended or request.progress.tokens >= request.settings.max_new_tokens:
            if row.undecoded:
                request.streamer.on_finalized_text(row.undecoded.decode("utf-8", "replace"))
            row.done = True
            request.finish()


def _complete_characters(raw: bytes) -> tuple[str, bytes]:
    """The text of raw's whole UTF-8 characters, and the bytes of a character still incomplete."""
    for cut in range(len(raw), max(len(raw) - 4, -1), -1):
        try:
            return raw[:cut].decode("utf-8"), raw[cut:]
        except UnicodeDecodeError:
            continue
    return raw.decode("utf-8", "replace"), b""


def _sampler(lib, settings, vocab_size: int, context_length: int):
    """A draft's sampler chain: the studio's settings in transformers' order, seeded with its seed."""
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    add = lambda sampler: lib.llama_sampler_chain_add(chain, sampler)  # noqa: E731  (the chain owns it)
    if settings.repetition_penalty != 1.0:
        add(lib.llama_sampler_init_penalties(vocab_size, context_length, settings.repetition_penalty, 0.0, 0.0))
    if settings.temperature == 0.0:
        add(lib.llama_sampler_init_greedy())
        return chain
    add(lib.llama_sampler_init_temp(settings.temperature))
    if settings.top_k:
        add(lib.llama_sampler_init_top_k(settings.top_k))
    if settings.top_p < 1.0:
        add(lib.llama_sampler_init_top_p(settings.top_p, 1))
    add(lib.llama_sampler_init_dist(settings.seed))
    return chain


def _free(lib, model, ctx) -> None:
    lib.llama_free(ctx)
    lib.llama_model_free(model)  # and its adapter


def _default_threads() -> int:
    import torch

    return torch.get_num_threads()  # the physical cores, as torch counts them
