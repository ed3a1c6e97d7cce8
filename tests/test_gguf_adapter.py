"""A fine-tuned version on the CPU path: its PEFT adapter converted to GGUF and applied by llama.cpp
writes what transformers writes with the adapter merged (and not what the base writes)."""

from __future__ import annotations

import json

import pytest

from studio.errors import ModelError
from studio.serving.gguf import GgufEngine
from studio.serving.gguf_adapter import ADAPTER_FILE, gguf_adapter
from studio.serving.models import embedded_gguf_path, load_model

pytestmark = pytest.mark.slow

PROMPT = "<|im_start|>user\nWrite a short story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n"
DRAFT = ("The lamp turned all night. Elias climbed the stairs at dusk, wiped the salt from the glass, "
         "and wrote the ships he saw into a book no one read.")


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    """The embedded model with a strong random LoRA on q, k, v and o: (float model, adapter folder)."""
    import torch
    from peft import LoraConfig, get_peft_model

    data = tmp_path_factory.mktemp("adapter-data")
    loaded = load_model("embedded", data)
    torch.manual_seed(0)
    model = get_peft_model(loaded.model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
                                                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    with torch.no_grad():
        for name, weights in model.named_parameters():
            if "lora_B" in name:
                weights.normal_(std=0.05)  # PEFT starts B at zero: a do-nothing adapter would prove nothing
    folder = data / "v2"
    model.save_pretrained(folder)
    return model.merge_and_unload(), loaded.tokenizer, folder


def _transformers_log_probabilities(model, ids: list[int], first: int) -> list[float]:
    import torch

    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits[0].double().log_softmax(-1)
    return [float(logits[i - 1, ids[i]]) for i in range(first, len(ids))]


def _llama_log_probabilities(ids: list[int], first: int, adapter=None) -> list[float]:
    engine = GgufEngine(embedded_gguf_path(), max_batch=1, adapter=adapter)
    try:
        return engine.log_probabilities(ids, first)
    finally:
        engine.close()


def _distance(a: list[float], b: list[float]) -> float:
    return sum(abs(x - y) for x, y in zip(a, b)) / len(a)


def test_the_converted_adapter_scores_a_draft_as_the_merged_model_does(adapted):
    merged, tokenizer, folder = adapted
    converted = gguf_adapter(folder, embedded_gguf_path())
    assert converted == folder / ADAPTER_FILE and converted.stat().st_size > 100_000
    prompt = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    ids = prompt + tokenizer(DRAFT, add_special_tokens=False)["input_ids"]
    expected = _transformers_log_probabilities(merged, ids, len(prompt))
    with_adapter = _llama_log_probabilities(ids, len(prompt), converted)
    base = _llama_log_probabilities(ids, len(prompt))
    near, far = _distance(with_adapter, expected), _distance(base, expected)
    print(f"mean |log p| difference from transformers merged: llama.cpp + adapter {near:.3f}, base {far:.3f}")
    # 4-bit kernels round activations too, so the match is not exact; without the adapter (or with
    # q and k in the wrong order) the drafts' scores are several times further off.
    assert near < far / 3


def test_an_adapter_llama_cpp_cannot_apply_is_refused_in_words(adapted, tmp_path):
    _, _, folder = adapted
    dora = tmp_path / "dora"
    dora.mkdir()
    config = json.loads((folder / "adapter_config.json").read_text()) | {"use_dora": True}
    (dora / "adapter_config.json").write_text(json.dumps(config))
    (dora / "adapter_model.safetensors").write_bytes((folder / "adapter_model.safetensors").read_bytes())
    with pytest.raises(ModelError, match="DoRA"):
        gguf_adapter(dora, embedded_gguf_path())


def test_a_promoted_version_is_served_by_llama_cpp_with_its_adapter(adapted, tmp_path):
    from storage import registry
    from studio.config import Settings
    from studio.core.studio import Studio

    _, _, folder = adapted
    studio = Studio(Settings(model="embedded", data_dir=str(tmp_path)))
    before = studio.pool.load()
    with studio.sessions.begin() as session:
        base = registry.active_version(session)
        version = registry.add_version(session, name="v1", parent_id=base.id, base_model="embedded",
                                       adapter_path=str(folder), status="rejected")  # promoted by hand
        registry.activate(session, version.id)
    served = studio.pool.load()  # the hot swap a promotion makes
    assert served is not before and served.version == "v1" and served.engine.adapter == folder / ADAPTER_FILE
    assert studio.pool.served_by().startswith("by llama.cpp")
    drafting = studio.drafts.write("fantasy", {}, {"max_new_tokens": 16, "seed": 2}, user="local")
    text = "".join(drafting)
    assert text.strip() and studio.drafts.get(drafting.draft_id, user="local")["model_version"] == "v1"
