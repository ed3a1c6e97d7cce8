"""The model pool: the serving version (hot-swapped when the active version changes), one other
version beside it for blind comparisons, and the stream each draft is written with."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from storage import registry
from storage.models import WRITABLE_VERSION_STATUSES
from studio.config import Settings
from studio.errors import GenerationError, ModelError, StudioError, first_line
from studio.metrics import Metrics
from studio.serving.batching import BatchEngine, batching_obstacle
from studio.serving.generation import DraftStream, chat_messages, model_input
from studio.serving.gguf import GgufEngine
from studio.serving.llama_library import gguf_obstacle
from studio.serving.gguf_adapter import gguf_adapter
from studio.serving.models import LoadedModel, Progress, embedded_gguf_path, load_model
from studio.serving.remote import RemoteDraftStream, make_client
from studio.serving.sampling import SamplerSettings

log = logging.getLogger(__name__)


@dataclass
class Writer:
    """What writes one draft: its stream, the exact model input, and the labels the draft row keeps."""

    stream: DraftStream | RemoteDraftStream
    model_input: str
    model_name: str
    model_version: str


class ModelPool:
    def __init__(self, settings: Settings, sessions, metrics: Metrics | None = None):
        self.settings = settings
        self.sessions = sessions
        self.metrics = metrics or Metrics(enabled=False)
        self._loaded: LoadedModel | None = None
        self._other: LoadedModel | None = None  # see load_version
        self._lock = threading.Lock()  # the serving model: every new draft takes it
        self._other_lock = threading.Lock()  # the blind comparison's other version: its load holds no draft up
        self._client = None

    def load(self, progress: Progress = log.info) -> LoadedModel:
        """The serving model: the active version, loaded on first use and whenever it changes.

        Promotion or rollback (by this process or a training process) switches the model here
        without a restart; streams already running keep the model object they started with.
        """
        with self.sessions() as session:
            version = registry.active_version(session)
            if version.base_model != self.settings.model:
                raise StudioError(f"The studio serves {version.name}, a version of {version.base_model}, not of "
                                  f"{self.settings.model}: start the app with --model {self.settings.model} to "
                                  "switch (its base version then serves).")
            wanted = (version.id, version.name, version.adapter_path)
            training = bool(registry.running_runs(session))
        with self._lock:
            if not self._holds(self._loaded, wanted[0]):
                self._loaded = self._load(wanted, progress)
            for model in (self._loaded, self._other):
                if model is not None and model.engine is not None and model.device == "cpu":
                    # A training run takes the CPU too. Two processes whose OpenMP threads spin-wait
                    # for each other on the same cores slow each other down several-fold; decoding on
                    # one thread meanwhile keeps serving at about 0.7x its idle speed instead of 0.3x.
                    model.engine.threads = 1 if training else None
            return self._loaded

    def load_version(self, name: str) -> LoadedModel:
        """Another version than the active one, beside it (blind comparison): one such is kept loaded."""
        if self.remote:
            raise GenerationError("Comparing versions needs the local backend: the server holds one model.")
        with self.sessions() as session:
            version = registry.get_version_by_name(session, name)
            wanted, status = (version.id, version.name, version.adapter_path), version.status
        if status not in WRITABLE_VERSION_STATUSES:
            raise StudioError(f"{name} is {status}: only a finished version can write.")
        active = self.load()
        if active.version_id == wanted[0]:
            return active
        with self._other_lock:
            if not self._holds(self._other, wanted[0]):
                self._other = None  # let the last one go before the next is loaded
                self._other = self._load(wanted, log.info)
            return self._other

    def _holds(self, loaded: LoadedModel | None, version_id: int) -> bool:
        """Whether `loaded` is that version, served as --quantize and --engine say (the benchmark changes them)."""
        return (loaded is not None and loaded.version_id == version_id and loaded.quantize == self.settings.quantize
                and loaded.engine_setting == self.settings.engine)

    def _load(self, version: tuple[int, str, str | None], progress: Progress) -> LoadedModel:
        """Load a version (id, name, adapter path), with the engine its drafts will join: llama.cpp
        on the GGUF file where it can serve (gguf.gguf_obstacle), else the transformers batch engine."""
        started = time.perf_counter()
        obstacle, adapter = gguf_obstacle(self.settings), None
        if obstacle is None and version[2]:
            try:
                adapter = gguf_adapter(version[2], embedded_gguf_path())
            except (ModelError, OSError, ValueError, KeyError) as exc:
                obstacle = f"its adapter could not be converted to GGUF ({first_line(exc)})"
        on_gguf = obstacle is None
        loaded = load_model(self.settings.model, self.settings.data_path, self.settings.device, progress,
                            adapter=version[2], version=version[1], version_id=version[0],
                            weights=not (self.remote or on_gguf), quantize=self.settings.quantize)
        loaded.engine_setting = self.settings.engine
        if on_gguf:
            loaded.device = "cpu"
            loaded.engine = GgufEngine(embedded_gguf_path(), self.settings.max_batch,
                                       on_step=self.metrics.batch_size.observe, adapter=adapter)
            progress(f"Drafts of {version[1]} are written by llama.cpp from {loaded.engine.path.name}.")
        elif not self.remote and self.settings.engine != "transformers":
            log.info("Drafts of %s are written by transformers: %s.", version[1], obstacle)
        self.metrics.model_load.observe(time.perf_counter() - started)
        # One engine per loaded model (made even with batching off: it costs nothing until a
        # draft joins, and the benchmark switches between the two). The engine it replaces
        # needs no shutdown: its thread ends when the drafts still running on it are done.
        if loaded.model is None:
            return loaded
        obstacle = batching_obstacle(loaded.model)
        if obstacle is None:
            loaded.engine = BatchEngine(loaded.model, self.settings.max_batch, on_step=self.metrics.batch_size.observe)
        elif self.settings.batching == "on":
            log.info("%s cannot be batched (%s): each draft generates on its own.", self.settings.model, obstacle)
        return loaded

    def readiness(self) -> dict[str, tuple[bool, str]]:
        """Whether the serving model is loaded and its batch engine can take drafts (for /readyz)."""
        loaded = self._loaded
        if loaded is None:
            return {"model": (False, "not loaded yet"), "batch_engine": (False, "no model to decode with")}
        model = (True, f"{loaded.version} {self.served_by(loaded)}")
        engine = self._engine(loaded)
        if engine is None:
            return {"model": model, "batch_engine": (True, "not used: each draft generates on its own")}
        return {"model": model, "batch_engine": engine.health()}

    def served_by(self, loaded: LoadedModel | None = None) -> str:
        """What writes the drafts, in words: "by llama.cpp from FILE.gguf on cpu", "by transformers on cuda"..."""
        loaded = loaded or self._loaded
        if self.remote:
            return "on the server"
        if loaded is None:
            return "not loaded yet"
        if isinstance(loaded.engine, GgufEngine):
            return f"by llama.cpp from {loaded.engine.path.name} on cpu"
        served = f", {loaded.quantize} weights" if loaded.quantize != "none" else ""
        return f"by transformers on {loaded.device}{served}"

    def batches_drafts(self) -> bool:
        """Whether writers' drafts run together: on the remote server, or in the local model's batch."""
        if self.remote:
            return self.settings.batching == "on"
        return self._engine(self.load()) is not None

    def _engine(self, loaded: LoadedModel) -> BatchEngine | None:
        """The batch engine drafts on `loaded` join, or None when each generates on its own
        (--batching off; llama.cpp always batches: it has no other way to write)."""
        return loaded.engine if self.settings.batching == "on" or isinstance(loaded.engine, GgufEngine) else None

    @property
    def remote(self) -> bool:
        """True when an OpenAI-compatible server generates (the local copy is still trained)."""
        return self.settings.backend == "openai"

    def writer(self, loaded: LoadedModel, prompt: str, system: str, settings: SamplerSettings,
               draft_so_far: str = "") -> Writer:
        """The stream that writes a draft of `prompt` (continuing draft_so_far) on `loaded` or the server."""
        text_in = model_input(loaded, prompt, system, draft_so_far)
        if not self.remote:
            return Writer(DraftStream(loaded, text_in, settings, self._engine(loaded)), text_in,
                          loaded.name, loaded.version)
        if draft_so_far:
            raise GenerationError("Continue works with the local backend only: OpenAI-compatible servers "
                                  "cannot yet be asked to extend an answer.")
        if settings.max_new_tokens > loaded.context_length:
            raise GenerationError(f"max_new_tokens must be at most the model's context, {loaded.context_length}.")
        if self._client is None:
            self._client = make_client(self.settings.base_url, self.settings.api_key)
        api_model = self.settings.api_model or self.settings.model
        stream = RemoteDraftStream(self._client, api_model, chat_messages(prompt, system), settings)
        return Writer(stream, text_in, f"{self.settings.base_url} {api_model}", api_model)
