"""The generation core: a prompt and sampler settings in, text chunks out, stoppable at any time.

Tokens come either from the model's batch engine (batching.py: several writers' drafts decoded
together; gguf.py: the same with llama.cpp) or, with batching off, from transformers' generate()
in a worker thread of this stream's own. Both feed a TextIteratorStreamer; the caller iterates over
chunks. Stopping (stop(), closing the iterator, or the iterator being dropped) sets an event that
is checked after every token, and the iterator waits until generation has ended before it returns,
so nothing goes on generating for a writer who has left.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

from studio.errors import GenerationError
from studio.serving.batch_rows import end_of_text_ids
from studio.serving.batching import BatchEngine, Request
from studio.serving.models import LoadedModel
from studio.serving.sampling import SamplerSettings

if TYPE_CHECKING:
    from studio.serving.gguf import GgufEngine

# How long the consumer waits for the next chunk before checking on the worker thread.
_POLL_SECONDS = 0.5


def chat_messages(prompt: str, system: str = "") -> list[dict[str, str]]:
    """A prompt (and the template's system message) as chat messages: for the chat template, the
    OpenAI-compatible server and the exported datasets alike."""
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": prompt}]


def model_input(loaded: LoadedModel, prompt: str, system: str = "", draft_so_far: str = "") -> str:
    """The exact text fed to the model: through the chat template for chat models, raw otherwise.

    With draft_so_far, the model is asked to continue that text (Continue in the page).
    """
    if not loaded.is_chat:
        return prompt + ("\n\n" + draft_so_far if draft_so_far else "\n\n")
    messages = chat_messages(prompt, system)
    if draft_so_far:
        messages.append({"role": "assistant", "content": draft_so_far})
        return loaded.tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)
    return loaded.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@dataclass
class StreamResult:
    """What a finished (or stopped) stream produced, for the draft row."""

    text: str = ""
    new_tokens: int = 0
    first_token_seconds: float | None = None
    generation_seconds: float = 0.0
    stopped: bool = False
    ended: bool = False  # it ended by itself (end-of-text): not stopped, nor cut at the token limit


class _StopFlag:
    """The stop event and token count of one stream; also a stopping criterion for generate()."""

    def __init__(self, end_ids: set[int]) -> None:
        self.event = threading.Event()
        self.tokens = 0
        self.ended = False  # the last token was end-of-text
        self.end_ids = end_ids
        self.started = time.perf_counter()
        self.first_token_at: float | None = None

    def count(self, ended: bool = False) -> None:
        """Called once per generated token, after it is chosen; ended: it is end-of-text."""
        self.tokens += 1
        self.ended = ended
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        self.count(ended=int(input_ids[0, -1]) in self.end_ids)
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class DraftStream:
    """One generation. Iterate to receive text chunks; stop() from any thread ends it early.

    With an engine, the draft is decoded in that engine's batch; without, generate() runs alone.
    """

    def __init__(self, loaded: LoadedModel, text_in: str, settings: SamplerSettings,
                 engine: BatchEngine | GgufEngine | None = None):
        if settings.seed is None:
            raise ValueError("settings.seed must be fixed (SamplerSettings.with_seed) before streaming")
        self.loaded = loaded
        self.settings = settings
        self.engine = engine
        tokenizer = loaded.tokenizer
        # Chat templates already hold the special tokens; don't let the tokenizer add a second BOS.
        self._inputs = tokenizer(text_in, return_tensors="pt", add_special_tokens=not loaded.is_chat)
        self.prompt_tokens = int(self._inputs["input_ids"].shape[1])
        room = loaded.context_length - self.prompt_tokens
        if settings.max_new_tokens > room:
            raise GenerationError(
                f"max_new_tokens is {settings.max_new_tokens}, but the prompt already takes "
                f"{self.prompt_tokens} of the model's {loaded.context_length} tokens of context: "
                f"ask for at most {max(room, 0)}."
            )
        self._flag = _StopFlag(engine.eos if engine is not None else end_of_text_ids(loaded.model))  # as they stop
        self.result = StreamResult()
        self._error: BaseException | None = None
        self._worker: threading.Thread | Request | None = None

    def stop(self) -> None:
        """Ask the generation to end after the current token."""
        self._flag.event.set()

    @property
    def running(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def __iter__(self) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        if self._worker is not None:
            raise RuntimeError("a DraftStream can be iterated only once")

        # generate() hands the streamer the prompt first; the engine hands it new tokens only.
        streamer = TextIteratorStreamer(
            self.loaded.tokenizer, skip_prompt=self.engine is None, skip_special_tokens=True, timeout=_POLL_SECONDS
        )
        self._flag.started = time.perf_counter()
        if self.engine is not None:
            request = Request(self._inputs["input_ids"].to(self.loaded.device), self.settings, streamer, self._flag,
                              self.engine.eos)
            self.engine.submit(request)
            self._worker = request
        else:
            self._worker = self._start_thread(streamer)
        chunks: list[str] = []
        finished = False
        try:
            while True:
                try:
                    chunk = next(streamer)
                except StopIteration:
                    break
                except Exception:  # queue.Empty on timeout: the worker is busy or gone
                    if not self.running:
                        break
                    continue
                chunk = chunk.replace("\x00", "")  # NUL bytes are not text, and PostgreSQL refuses them
                if chunk:
                    chunks.append(chunk)
                    yield chunk
            finished = True
        finally:
            # Reached on normal end, on stop(), and on close() / garbage collection of this iterator
            # (a cancelled request or a closed tab): in every case the worker must end now.
            if not finished:
                self._flag.event.set()
            self._worker.join()  # a generate() thread, or a Request the engine drops before its next step
            if isinstance(self._worker, Request):
                self._error = self._worker.error
            self._collect("".join(chunks))
        if self._error is not None:
            raise GenerationError(f"Generation failed: {self._error}") from self._error

    def _start_thread(self, streamer) -> threading.Thread:
        from transformers import StoppingCriteriaList

        inputs = {k: v.to(self.loaded.device) for k, v in self._inputs.items()}
        kwargs = dict(
            **inputs,
            **self.settings.generate_kwargs(),
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([self._flag]),
            pad_token_id=self.loaded.tokenizer.pad_token_id,
        )
        worker = threading.Thread(target=self._generate, args=(kwargs, streamer), daemon=True)
        worker.start()
        return worker

    def _generate(self, kwargs: dict, streamer) -> None:
        import torch

        try:
            with torch.inference_mode():
                # The global RNG is seeded per stream: drafts are reproducible one at a time.
                torch.manual_seed(self.settings.seed)
                self.loaded.model.generate(**kwargs)
        except BaseException as exc:  # reported to the consumer thread, which raises it
            self._error = exc
            streamer.end()

    def _collect(self, text: str) -> None:
        flag = self._flag
        stopped = flag.event.is_set()
        self.result = StreamResult(
            text=text,
            # The criterion runs once per token, including the end-of-text token, which shows no text.
            new_tokens=flag.tokens,
            first_token_seconds=None if flag.first_token_at is None else flag.first_token_at - flag.started,
            generation_seconds=time.perf_counter() - flag.started,
            stopped=stopped,
            ended=flag.ended and not stopped,
        )


@dataclass
class ActiveStreams:
    """The running streams by key (a browser session or an API call), so Stop can reach them."""

    _streams: dict[str, DraftStream] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, key: str, stream: DraftStream) -> None:
        with self._lock:
            previous = self._streams.get(key)
            self._streams[key] = stream
        if previous is not None:
            previous.stop()  # one stream per writer session: a new one replaces the old

    def remove(self, key: str, stream: DraftStream) -> None:
        with self._lock:
            if self._streams.get(key) is stream:
                del self._streams[key]

    def stop(self, key: str) -> bool:
        """Stop the stream under key, and the candidates written together under "key#n"."""
        with self._lock:
            streams = [s for k, s in self._streams.items() if k == key or k.startswith(key + "#")]
        for stream in streams:
            stream.stop()
        return bool(streams)

    def __len__(self) -> int:
        with self._lock:
            return len(self._streams)
