"""Generation on an OpenAI-compatible server (vLLM, TGI, `transformers serve`), streamed.

For deployments that put a GPU cluster behind the same studio: `--backend openai --base-url URL
[--api-model NAME]`. A RemoteDraftStream behaves like generation.DraftStream: iterate for text
chunks, stop() from any thread, `result` once it ends. Closing the HTTP stream on Stop makes the
server abandon the request (vLLM and TGI abort requests whose client has gone).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterator

from studio.errors import GenerationError
from studio.serving.generation import StreamResult
from studio.serving.sampling import SamplerSettings

log = logging.getLogger(__name__)
_NO_EXTRAS: set[str] = set()  # servers that refused top_k / repetition_penalty


def make_client(base_url: str, api_key: str = "none"):
    from openai import OpenAI

    # A writer waits for the first token: fail fast when the server is not there.
    return OpenAI(base_url=base_url, api_key=api_key or "none", timeout=60.0, max_retries=1)


class RemoteDraftStream:
    def __init__(self, client, api_model: str, messages: list[dict[str, str]], settings: SamplerSettings):
        if settings.seed is None:
            raise ValueError("settings.seed must be fixed (SamplerSettings.with_seed) before streaming")
        self.client = client
        self.api_model = api_model
        self.messages = messages
        self.settings = settings
        self.result = StreamResult()
        self._stop = threading.Event()
        self._started = False
        self._running = False

    def stop(self) -> None:
        self._stop.set()

    @property
    def running(self) -> bool:
        return self._running

    def _request(self):
        from openai import APIConnectionError, APIStatusError, UnprocessableEntityError

        s = self.settings
        server = str(self.client.base_url)
        # Not in OpenAI's API: vLLM and TGI read them, stricter servers refuse the request.
        extras = {} if server in _NO_EXTRAS else {"top_k": s.top_k, "repetition_penalty": s.repetition_penalty}

        def create(extra: dict[str, Any]):
            return self.client.chat.completions.create(
                model=self.api_model, messages=self.messages, stream=True,
                max_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p, seed=s.seed,
                stream_options={"include_usage": True}, extra_body=extra,
            )

        try:
            try:
                return create(extras)
            except UnprocessableEntityError:
                if not extras:
                    raise
                log.warning("%s does not take top_k and repetition_penalty; sending without them.", server)
                _NO_EXTRAS.add(server)
                return create({})
        except APIConnectionError as exc:
            raise GenerationError(
                f"Cannot reach the generation server at {self.client.base_url}: is it running? ({exc})"
            ) from exc
        except APIStatusError as exc:
            raise GenerationError(f"The generation server refused the request: {exc.message}") from exc

    def __iter__(self) -> Iterator[str]:
        if self._started:
            raise RuntimeError("a RemoteDraftStream can be iterated only once")
        self._started = self._running = True
        started = time.perf_counter()
        first: float | None = None
        chunks: list[str] = []
        events, usage_tokens, finished, reason = 0, None, False, None
        response = self._request()
        try:
            for event in response:
                if event.usage is not None:
                    usage_tokens = event.usage.completion_tokens
                if event.choices and event.choices[0].finish_reason is not None:
                    finished, reason = True, event.choices[0].finish_reason
                delta = event.choices[0].delta.content if event.choices else None
                if delta:
                    events += 1
                    if first is None:
                        first = time.perf_counter()
                    chunks.append(delta)
                    yield delta
                if self._stop.is_set():
                    break
        finally:
            response.close()  # on Stop or a closed iterator: the server sees the client go
            self._running = False
            self.result = StreamResult(
                text="".join(chunks),
                # Servers report usage at the end; a stopped stream has none, so count the events.
                new_tokens=usage_tokens if usage_tokens is not None else events,
                first_token_seconds=None if first is None else first - started,
                generation_seconds=time.perf_counter() - started,
                stopped=self._stop.is_set() or not finished,
                ended=finished and reason == "stop" and not self._stop.is_set(),  # "length": cut at the limit
            )
