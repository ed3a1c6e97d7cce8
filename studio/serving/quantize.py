"""Quantised serving (--quantize int8|int4): the serving model's linear weights kept in 8 or 4 bits.

torchao does the work. The weights are quantised after any LoRA merge, on the device they serve
from, and only for serving: training always loads the float model (load_model's default).

- int8: weight-only, one scale per output row (Int8WeightOnlyConfig). Runs on the CPU and on
  CUDA; the activations stay float, so drafts read almost as the float model writes them.
  (Int8 activations too were about 4x slower than float on a CPU here: torchao has no fast
  int8 matmul there without torch.compile.)
- int4: weight-only in groups of INT4_GROUP, on the tinygemm kernel torch ships for CUDA (bf16,
  compute capability 8.0 or newer). torchao's only CPU int4 kernel is a prototype that ran 4x (one
  writer) to 15x (eight) slower than float on this project's 2-core CPU, so the CPU refuses int4
  rather than serve slower than float.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from studio.errors import ModelError, first_line

log = logging.getLogger(__name__)

INT4_GROUP = 64  # weights per int4 scale; divides common hidden sizes (576, 896, 960, 2048)


@dataclass(frozen=True)
class Quantized:
    """What quantising did: how many linear layers hold low-bit weights, and the model's weight bytes."""

    mode: str
    layers: int
    linear_layers: int
    weight_bytes: int

    def __str__(self) -> str:
        megabytes = self.weight_bytes / 2**20
        return f"{self.mode} weights: {self.layers} of {self.linear_layers} linear layers, {megabytes:.0f} MB"


def unsupported(mode: str, device: str) -> str | None:
    """Why the device has no kernel for `mode`, or None when it has one."""
    if mode != "int4":
        return None
    if not device.startswith("cuda"):
        return ("--quantize int4 needs a CUDA GPU (torchao's int4 kernel is for CUDA; its CPU prototype "
                "served 4-15x slower than float): on the CPU use --quantize int8.")
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:  # tinygemm's int4 kernel uses tensor core instructions from Ampere on
        return (f"--quantize int4 needs a GPU of compute capability 8.0 or newer (Ampere); this one is "
                f"{major}.{minor}: use --quantize int8.")
    return None


def check_device(mode: str, device: str) -> None:
    """Refuse a mode the device has no kernel for, before any weights load."""
    reason = unsupported(mode, device)
    if reason:
        raise ModelError(reason)


def quantize(model: Any, mode: str) -> Quantized:
    """Quantise the model's linear layers in place (it is on its serving device already)."""
    import torch

    try:
        from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_
    except ImportError as exc:
        raise ModelError(f"--quantize {mode} needs torchao: pip install -r requirements.txt "
                         f"({first_line(exc)}).") from exc
    if mode == "int8":
        config = Int8WeightOnlyConfig(set_inductor_config=False)  # nothing here is compiled
    else:
        config = Int4WeightOnlyConfig(group_size=INT4_GROUP, int4_packing_format="tile_packed_to_4d",
                                      set_inductor_config=False)
    output = model.get_output_embeddings()
    # A tied output layer shares the input embedding's weight: quantising it would keep the float
    # embedding and add a copy. transformers' TorchAoConfig leaves embeddings alone too.
    tied = output is not None and output.weight is model.get_input_embeddings().weight
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and not (tied and m is output)]
    chosen = {id(m) for m in linear}
    try:
        quantize_(model, config, filter_fn=lambda module, name: id(module) in chosen)
    except (AssertionError, RuntimeError, ValueError) as exc:  # e.g. int4 on a GPU older than tinygemm's (sm80)
        raise ModelError(f"--quantize {mode} failed: {first_line(exc)} Serve with --quantize none or int8.") from exc
    if next(model.parameters()).device.type == "cpu":
        _release_model_file(model)
    done = Quantized(mode, sum(is_quantized(m.weight) for m in linear), len(linear), weight_bytes(model))
    if done.layers < done.linear_layers:  # torchao skips shapes its kernel cannot take, and only says so at INFO
        log.warning("--quantize %s: %d linear layers have shapes the kernel cannot take and stay float.",
                    mode, done.linear_layers - done.layers)
    return done


def _release_model_file(model: Any) -> None:
    """On the CPU, float weights are the model file mapped into memory. The pages quantising read stay
    resident while any tensor still maps the file, and the embeddings and norms left float do: own
    copies of those let the mapping go (a 74 MB float model here: 88 MB of resident file pages freed)."""
    for tensor in [*model.parameters(), *model.buffers()]:
        if not is_quantized(tensor):
            tensor.data = tensor.data.clone()


def is_quantized(tensor: Any) -> bool:
    from torchao.utils import TorchAOBaseTensor

    return isinstance(tensor, TorchAOBaseTensor)


def weight_bytes(model: Any) -> int:
    """Bytes of the model's parameters and buffers, counting what quantised tensors really hold."""
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if hasattr(tensor, "__tensor_flatten__"):  # a tensor subclass: its int data, scales and zero points
            names, _ = tensor.__tensor_flatten__()
            parts = [getattr(tensor, name) for name in names]
        else:
            parts = [tensor]
        total += sum(part.numel() * part.element_size() for part in parts if part is not None)
    return total
