"""The drafts a batch engine decodes together: each Request, the Batch of running rows, and how
newcomers' prompts are grouped to join them.

A Batch holds its requests, their key/value cache (one row each, left-padded to one length), the
attention mask that hides the padding, and each row's next input token. Newcomers are prefilled in
groups within a token budget, each distinct prompt once: a writer's candidates or a run's drafts of
one prompt share its prefill, and each gets a copy of its cache row.
"""

from __future__ import annotations

import functools
import threading

from studio.serving.batch_sampling import RowSampler
from studio.serving.sampling import SamplerSettings


def end_of_text_ids(model) -> set[int]:
    """The tokens that end a draft, as generate() stops on them: the generation config's."""
    eos = model.generation_config.eos_token_id
    return set() if eos is None else {eos} if isinstance(eos, int) else set(eos)


class Request:
    """One draft in the engine: its prompt, sampler, text streamer and progress (shared with DraftStream)."""

    def __init__(self, input_ids, settings: SamplerSettings, streamer, progress, eos_token_ids: set[int]):
        self.ids = input_ids  # [1, n]: the prompt, then every token chosen (the repetition penalty reads it)
        self.prompt = tuple(input_ids[0].tolist())  # read once: the engine groups newcomers by it
        self.settings = settings
        self.streamer = streamer
        self.progress = progress  # the stream's stop event and token count: .event, .count(ended), .tokens
        self.eos = eos_token_ids
        self.done = threading.Event()
        self.error: BaseException | None = None

    @functools.cached_property
    def sampler(self) -> RowSampler:
        """Its torch sampler, made when the transformers engine first samples (llama.cpp samples in C)."""
        return RowSampler(self.settings, self.ids.device)

    @property
    def stopped(self) -> bool:
        return self.progress.event.is_set()

    def accept(self, token: int) -> bool:
        """Record and stream a chosen token; True when the draft is complete."""
        import torch

        self.ids = torch.cat([self.ids, self.ids.new_tensor([[token]])], dim=1)
        self.progress.count(ended=token in self.eos)
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


class Collected:
    """A draft's tokens gathered as the engine hands them out, for a caller that wants whole texts
    rather than a stream: a request's streamer and its progress at once. The transformers engine
    hands it token ids (put); llama.cpp's hands it text (on_finalized_text, as to a TextIteratorStreamer)."""

    def __init__(self) -> None:
        self.event, self.tokens, self.ids, self.ended, self.text = threading.Event(), 0, [], False, ""

    def count(self, ended: bool = False) -> None:
        self.tokens += 1
        self.ended = ended

    def put(self, token) -> None:
        self.ids += token.tolist()

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.text += text

    def end(self) -> None:
        pass


class Batch:
    """Rows decoded together: their requests, key/value cache, attention mask and next input tokens."""

    def __init__(self, rows: list[Request] | None = None, cache=None, mask=None, next_tokens=None):
        self.rows = rows or []
        self.cache = cache  # a DynamicCache, one row per request
        self.mask = mask  # [rows, length]: 1 for real tokens, 0 for left padding
        self.next = next_tokens  # [rows, 1]: each row's latest token, fed at the next step

    def accept(self, tokens: list[int]) -> "Batch":
        """Hand each row its chosen token; rows that are complete finish."""
        for row, token in zip(self.rows, tokens):
            if row.accept(token):
                row.finish()
        return self

    def extend(self, other: "Batch") -> None:
        """Append other's rows, left-padding both to one length."""
        import torch

        if not self.rows:
            self.rows, self.cache, self.mask, self.next = other.rows, other.cache, other.mask, other.next
            return
        length = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys = torch.cat([pad_left(mine.keys, length), pad_left(theirs.keys, length)])
            mine.values = torch.cat([pad_left(mine.values, length), pad_left(theirs.values, length)])
        self.mask = torch.cat([pad_left(self.mask, length), pad_left(other.mask, length)])
        self.next = torch.cat([self.next, other.next])
        self.rows = self.rows + other.rows

    def without_finished(self) -> "Batch":
        """Stopped rows finish; finished rows leave, with the padding columns no remaining row needs."""
        import torch

        for row in self.rows:
            if row.stopped and not row.done.is_set():
                row.finish()
        keep = [i for i, row in enumerate(self.rows) if not row.done.is_set()]
        if len(keep) == len(self.rows):
            return self
        if not keep:
            return Batch()
        index = torch.tensor(keep, device=self.mask.device)
        mask = self.mask[index]
        start = int(mask.any(dim=0).int().argmax())  # the first column some remaining row uses
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]
        return Batch([self.rows[i] for i in keep], self.cache, mask[:, start:], self.next[index])


def prefill_groups(requests: list[Request], budget: int, share: bool = True) -> list[list[Request]]:
    """Newcomers in arrival order, cut into groups whose padded size (each distinct prompt once, as
    the engine prefills them) stays within budget tokens."""
    groups: list[list[Request]] = []
    for request in requests:
        group = groups[-1] if groups else None
        if group:
            prompts = distinct_prompts([*group, request], share)
            if len(prompts) * max(r.ids.shape[1] for r in prompts.values()) <= budget:
                group.append(request)
                continue
        groups.append([request])
    return groups


def prompt_key(request: Request, share: bool) -> tuple[int, ...]:
    return request.prompt if share else (id(request),)


def distinct_prompts(requests: list[Request], share: bool) -> dict[tuple[int, ...], Request]:
    """The first request of each distinct prompt, by its tokens, in arrival order (share=False: every
    request is its own)."""
    prompts: dict[tuple[int, ...], Request] = {}
    for request in requests:
        prompts.setdefault(prompt_key(request, share), request)
    return prompts


def pad_left(tensor, length: int):
    """Zeros on the left of the sequence axis (-2 for keys/values [b, h, s, d], -1 for a mask [b, s])."""
    import torch

    axis = -1 if tensor.dim() == 2 else -2
    missing = length - tensor.shape[axis]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[axis] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=axis)
