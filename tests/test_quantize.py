"""--quantize: the serving model's linear weights in int8 (torchao), on tiny random models; training
keeps the float model; bad values and int4 on a CPU are refused with one readable line."""

from __future__ import annotations

import threading

import pytest
import torch

from storage import registry
from studio.config import Settings, settings_from
from studio.errors import ModelError
from studio.serving.batching import BatchEngine
from studio.serving.generation import DraftStream, model_input
from studio.serving.models import load_model
from studio.serving.quantize import is_quantized, weight_bytes
from studio.serving.sampling import SamplerSettings
from tests.drafts import seed_rated_drafts

PROMPTS = ["Write a story.", "A poem about the rain on the river and the moon, please.", "Hi"]
GREEDY = {"temperature": 0.0}
SAMPLED = {"temperature": 0.9, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.2}


def linear_weights(model) -> dict[str, torch.Tensor]:
    return {name: m.weight for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and m is not model.get_output_embeddings()}


@pytest.fixture(scope="module")
def int8(tiny_model_dir, tmp_path_factory):
    return load_model(str(tiny_model_dir), tmp_path_factory.mktemp("data"), quantize="int8")


def _stream(loaded, engine, prompt="Write a story.", **settings) -> DraftStream:
    return DraftStream(loaded, model_input(loaded, prompt), SamplerSettings(**{"seed": 7, "max_new_tokens": 16,
                                                                                **settings}), engine)


def test_int8_quantises_every_linear_layer_and_shrinks_the_weights(int8, tiny_model_dir, tmp_path):
    assert int8.quantize == "int8"
    weights = linear_weights(int8.model)
    assert weights and all(is_quantized(w) and type(w).__name__ == "Int8Tensor" for w in weights.values())
    float_model = load_model(str(tiny_model_dir), tmp_path)
    assert float_model.quantize == "none" and not any(map(is_quantized, linear_weights(float_model.model).values()))
    # int8 data plus a float scale per row: about a quarter of the float32 layers (embeddings stay float).
    float_linear = sum(w.numel() * 4 for w in linear_weights(float_model.model).values())
    assert weight_bytes(float_model.model) - weight_bytes(int8.model) > 0.6 * float_linear


@pytest.mark.parametrize("sampler", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_int8_drafts_decode_the_same_batched_padded_and_by_generate(int8, sampler):
    """generate() with a streamer (--batching off) and the batch engine, alone and left-padded together."""
    engine = BatchEngine(int8.model, max_batch=8)
    try:
        alone = ["".join(_stream(int8, None, p, seed=i, **sampler)) for i, p in enumerate(PROMPTS)]
        assert all(alone) and len(set(alone)) > 1
        assert ["".join(_stream(int8, engine, p, seed=i, **sampler)) for i, p in enumerate(PROMPTS)] == alone
        streams = [_stream(int8, engine, p, seed=i, **sampler) for i, p in enumerate(PROMPTS)]
        texts = [""] * len(streams)
        threads = [threading.Thread(target=lambda i=i: texts.__setitem__(i, "".join(streams[i])))
                   for i in range(len(streams))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert texts == alone and [s.result.new_tokens for s in streams] == [16] * len(PROMPTS)
    finally:
        engine.close()


def _studio(tmp_path, tiny_model_dir, **overrides):
    from studio.core.studio import Studio

    return Studio(Settings(model=str(tiny_model_dir), data_dir=str(tmp_path / "data"), quantize="int8", **overrides))


@pytest.mark.parametrize("batching", ["on", "off"])
def test_a_draft_streams_and_saves_with_quantize_int8(tmp_path, tiny_model_dir, batching):
    studio = _studio(tmp_path, tiny_model_dir, batching=batching)
    drafting = studio.drafts.write("fantasy", {}, {"max_new_tokens": 12, "seed": 3}, user="local")
    chunks = list(drafting)
    saved = studio.drafts.get(drafting.draft_id, user="local")
    assert len(chunks) > 1 and saved["text"] == "".join(chunks)
    assert saved["new_tokens"] == 12 and saved["status"] == "done" and saved["model_version"] == "base"
    assert studio.pool.readiness()["model"] == (True, "base by transformers on cpu, int8 weights")


def add_adapter_version(studio, name: str = "v1") -> str:
    """A real LoRA adapter on q_proj and v_proj with random weights, made the active version."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = studio.settings.data_path / "adapters" / name
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(studio.settings.model), lora).save_pretrained(folder)
    with studio.sessions.begin() as session:
        base = registry.active_version(session)
        version = registry.add_version(session, name=name, parent_id=base.id, base_model=studio.settings.model,
                                       adapter_path=str(folder), status="rejected", is_active=False)
        registry.activate(session, version.id)
    return name


def test_a_hot_swap_to_a_fine_tune_serves_it_merged_then_quantised(tmp_path, tiny_model_dir):
    studio = _studio(tmp_path, tiny_model_dir)
    base = studio.pool.load()
    add_adapter_version(studio)
    tuned = studio.pool.load()  # the swap, without a restart
    assert tuned is not base and (tuned.version, tuned.quantize) == ("v1", "int8") and tuned.engine is not None
    before, after = linear_weights(base.model), linear_weights(tuned.model)
    assert all(is_quantized(w) for w in after.values())
    changed = {name for name in after if not torch.equal(after[name].dequantize(), before[name].dequantize())}
    # The LoRA was merged into the float weights before quantising: only its layers moved.
    assert changed and all(name.endswith(("q_proj", "v_proj")) for name in changed)
    drafting = studio.drafts.write("fantasy", {}, {"max_new_tokens": 6}, user="local")
    assert "".join(drafting) and studio.drafts.get(drafting.draft_id, user="local")["model_version"] == "v1"


def test_training_loads_the_float_model_and_its_promotion_serves_quantised(tmp_path, tiny_model_dir, monkeypatch):
    from studio.learning.jobs import execute_run
    from studio.serving import models

    studio = _studio(tmp_path, tiny_model_dir)
    quantised = []
    real = models.quantize_weights
    monkeypatch.setattr(models, "quantize_weights", lambda model, mode: quantised.append(mode) or real(model, mode))
    seed_rated_drafts(studio, 12)
    assert quantised == ["int8"]  # the serving base
    run_id, _ = studio.versions.train("cli", user="local")
    config = studio.versions.training_config(epochs=3, learning_rate=5e-3, max_length=128, batch_size=4)
    summary = execute_run(studio.sessions, studio.settings, config, run_id)
    assert quantised == ["int8"]  # the run loaded (and trained) float weights only
    studio.versions.promote(next(v["id"] for v in studio.versions.list() if v["name"] == summary["version"]),
                            user="local")  # liked drafts alone: served by hand
    served = studio.pool.load()
    assert served.version == summary["version"] and quantised == ["int8", "int8"]
    assert all(is_quantized(w) for w in linear_weights(served.model).values())


def test_bad_values_are_refused_with_one_readable_line(tmp_path, tiny_model_dir, capsys):
    with pytest.raises(ValueError, match=r"^--quantize must be none, int8 or int4, not 'int3'\.$"):
        Settings(quantize="int3")
    with pytest.raises(ValueError, match="--quantize must be none, int8 or int4, not 'INT8'"):
        settings_from(environ={"STUDIO_QUANTIZE": "INT8"})
    assert settings_from(environ={"STUDIO_QUANTIZE": "int8"}).quantize == "int8"
    with pytest.raises(ValueError, match="--quantize applies to --backend local"):
        Settings(quantize="int8", backend="openai", base_url="http://127.0.0.1:8000/v1")
    with pytest.raises(ModelError, match="--quantize int4 needs a CUDA GPU.*on the CPU use --quantize int8"):
        load_model(str(tiny_model_dir), tmp_path, device="cpu", quantize="int4")

    from app import main

    assert main(["--model", str(tiny_model_dir), "--data-dir", str(tmp_path / "app"), "--quantize", "int4",
                 "--device", "cpu"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == ["error: --quantize int4 needs a CUDA GPU (torchao's int4 kernel is for CUDA; its CPU prototype "
                     "served 4-15x slower than float): on the CPU use --quantize int8."]
