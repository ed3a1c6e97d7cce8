"""Shared fixtures: tiny random models built locally (no downloads), a temp data dir per test."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

import pytest

from studio.config import Settings

# Never reach the Hugging Face hub from tests.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

# What a Space sets; tests that play a Space set them themselves.
SPACE_VARIABLES = ("SPACE_ID", "SYSTEM", "SPACE_AUTHOR_NAME", "SPACE_HOST", "GRADIO_SERVER_NAME",
                   "OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET", "OAUTH_SCOPES", "OPENID_PROVIDER_URL")

CORPUS = [
    "Once upon a time a young cartographer drew a map that changed the land.",
    "The detective looked at the locked door and smiled at the clue.",
    "Write a short poem about the rain on the river and the moon.",
    "江南春雨，细雨如丝。孔雀与麻雀在树下说话。",
    "Breaking news: the city council voted to build a new library downtown.",
] * 20

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] }}"
    "{% if not (continue_final_message and loop.last) %}{{ '<|im_end|>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_model(folder: Path, chat: bool = True, hidden: int = 16, layers: int = 2,
                     corpus: list[str] = CORPUS, vocab_size: int = 400) -> Path:
    """A small random Llama and a byte-level BPE tokenizer trained on a few sentences."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>" if chat else "<|endoftext|>", pad_token="<|pad|>"
    )
    if chat:
        tokenizer.chat_template = CHATML
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    # Random weights could emit end-of-text at any step; without an eos id every stream runs to
    # max_new_tokens (or Stop), which keeps tests about length and stopping exact.
    model.generation_config.eos_token_id = None
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-chat-model"), chat=True)


@pytest.fixture(scope="session")
def slower_model_dir(tmp_path_factory) -> Path:
    """Still tiny, but slow enough (tens of tokens/s on a CPU) that a person could press Stop."""
    return build_tiny_model(tmp_path_factory.mktemp("slower-chat-model"), chat=True, hidden=512, layers=8)


def build_verse_model(folder: Path) -> Path:
    """A tiny model taught to answer "Write song number N about the sea." with two verses, as often in
    the songs' words as in the dirges' (tests/drafts.py), and then to end the draft: a base that writes
    both, so learning which one writers like shows in what it writes.

    Its tokenizer has a token for each of the verses' words, so the model writes them whole: spelled
    out byte by byte, a model this small garbles them, and how it garbles depends on the machine's
    floating point, which moved the gate's fluency figures by tens of percent between machines."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.drafts import short_dirge, short_song

    build_tiny_model(folder, chat=True, hidden=48, layers=2, vocab_size=600,
                     corpus=CORPUS + [short_song(i) for i in range(50)] + [short_dirge(i) for i in range(50)])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": f"Write song number {i} about the sea."}],
                                           tokenize=False, add_generation_prompt=True) + verse(5000 * kind + i)
             + tokenizer.eos_token for i in range(64) for kind, verse in enumerate((short_dirge, short_song))]
    random.Random(0).shuffle(texts)  # each batch holds songs and dirges
    batches = [tokenizer(texts[i:i + 16], return_tensors="pt", padding=True) for i in range(0, len(texts), 16)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    model.train()
    for step in range(160):
        batch = batches[step % len(batches)]
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.generation_config.eos_token_id = tokenizer.eos_token_id  # it learned to end its drafts
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def verse_model_dir(tmp_path_factory) -> Path:
    return build_verse_model(tmp_path_factory.mktemp("verse-model"))


@pytest.fixture(scope="session")
def tiny_base_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-base-model"), chat=False)


@pytest.fixture(scope="session")
def postgres_admin_url():
    """A PostgreSQL server: STUDIO_TEST_POSTGRES_URL if set, else one started for this session."""
    from tests.postgres_server import find_bindir, postgres_server

    if os.environ.get("STUDIO_TEST_POSTGRES_URL"):
        yield os.environ["STUDIO_TEST_POSTGRES_URL"]
        return
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's postgresql package for the PostgreSQL tests")
        pytest.skip("PostgreSQL server binaries are not installed (apt-get install postgresql)")
    with postgres_server(bindir) as url:
        yield url


@pytest.fixture
def postgres_url(postgres_admin_url):
    """An empty PostgreSQL database for one test."""
    from tests.postgres_server import fresh_database

    with fresh_database(postgres_admin_url) as url:
        yield url


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No STUDIO_* or Spaces variables leak in from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith("STUDIO_") or name in SPACE_VARIABLES:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def settings(tmp_path, tiny_model_dir) -> Settings:
    return Settings(model=str(tiny_model_dir), data_dir=str(tmp_path / "data"))


@pytest.fixture
def studio(settings):
    from studio.core.studio import Studio

    return Studio(settings)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def running_app(studio):
    """The studio's page and API (and its training runner) on a free local port: (studio, url)."""
    from studio.ui.page import build_ui

    studio.jobs.start()
    demo = build_ui(studio)
    demo.queue(default_concurrency_limit=studio.settings.page_concurrency(), max_size=studio.settings.queue_size)
    demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield studio, demo.local_url
    finally:
        demo.close()
        studio.close()


@pytest.fixture
def space(monkeypatch):
    """The environment of a Gradio Space with `hf_oauth: true` in its README."""
    import gradio.oauth

    from tests.hf_space import SPACE_ENV

    for name, value in SPACE_ENV.items():
        monkeypatch.setenv(name, value)
    # Gradio read its OAuth variables when it was imported, before this test set them.
    for name in ("OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET", "OAUTH_SCOPES", "OPENID_PROVIDER_URL"):
        monkeypatch.setattr(gradio.oauth, name, SPACE_ENV[name])
    return monkeypatch


@pytest.fixture
def hf_app(space, tmp_path, tiny_model_dir):
    """The studio as a Space runs it: (studio, demo, url)."""
    import gradio.oauth

    from app import create_app, launch_options
    from tests.hf_space import SPACE

    settings = Settings(model=str(tiny_model_dir), data_dir=str(tmp_path / "data"), backup_every=0)
    assert settings.auth_mode == "hf"  # chosen by itself, from the Space's variables
    studio, demo, accounts = create_app(settings, load_model=False)
    # Gradio's real OAuth routes, but not its Spaces hot-reloader (that needs the `spaces` package):
    # OAuth asks gradio.oauth.get_space, the reloader reads SYSTEM.
    space.setattr(gradio.oauth, "get_space", lambda: SPACE)
    space.delenv("SYSTEM")
    options = {**launch_options(studio, accounts), "server_name": "127.0.0.1", "server_port": _free_port()}
    assert options["auth"] is None  # no password form: the page's LoginButton signs writers in
    demo.launch(**options, prevent_thread_lock=True, quiet=True)
    try:
        yield studio, demo, demo.local_url
    finally:
        demo.close()
        studio.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def launch(tmp_path, tiny_model_dir):
    """Start the app as app.main does (create_app, launch_options) with these settings: (studio, url)."""
    from app import create_app, launch_options

    started = []

    def start(**overrides):
        settings = Settings(**{"model": str(tiny_model_dir), "data_dir": str(tmp_path / f"data{len(started)}"),
                               "backup_every": 0, **overrides})
        studio, demo, accounts = create_app(settings)
        demo.launch(**{**launch_options(studio, accounts), "server_name": "127.0.0.1", "server_port": _free_port()},
                    prevent_thread_lock=True, quiet=True)
        started.append((studio, demo))
        return studio, demo.local_url.rstrip("/")

    yield start
    for studio, demo in started:
        demo.close()
        studio.close()


@pytest.fixture
def two_writers(studio):
    """The page with password accounts, alice (the admin) and bob: (studio, url)."""
    from studio.trust.accounts import Accounts
    from studio.ui.page import build_ui

    accounts = Accounts.from_settings(Settings(auth=["alice:pw-a", "bob:pw-b"]))
    demo = build_ui(studio, accounts)
    demo.queue()
    demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True,
                auth=accounts.check)
    try:
        yield studio, demo.local_url
    finally:
        demo.close()
