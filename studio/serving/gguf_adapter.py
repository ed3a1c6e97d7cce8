"""A fine-tuned version's LoRA adapter (the PEFT folder a run saves) as a GGUF adapter, which
llama.cpp applies to the base GGUF file as it writes: a promoted version serves on the CPU path
too, without a merged copy of the model.

The conversion is what llama.cpp's convert_lora_to_gguf.py does for a Llama model, on the few
names a studio's adapters use: each layer's lora_A and lora_B under llama.cpp's tensor names, in
float32, and their scale (alpha). Llama's GGUF files keep the query and key projections' rows in
another order than transformers (rotary halves interleaved), and the float weights the studio
trains were converted from that file, so lora_B of q_proj and k_proj, whose rows are those
projections' rows, is permuted the same way. Adapters it cannot express (DoRA, modules saved
whole, biases, other layers) are refused: such a version is served by transformers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from studio.errors import ModelError
from studio.files import atomic_file

ADAPTER_FILE = "adapter.gguf"  # written beside the PEFT files, once per version
LLAMA_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down"}
_PEFT_KEY = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(\w+\.\w+)\.lora_([AB])\.weight$")


def gguf_adapter(adapter_dir: str | Path, base_gguf: Path) -> Path:
    """The version's adapter as a GGUF file for base_gguf, converted on first use."""
    folder = Path(adapter_dir)
    target = folder / ADAPTER_FILE
    if target.is_file() and target.stat().st_mtime >= (folder / "adapter_model.safetensors").stat().st_mtime:
        return target
    config = json.loads((folder / "adapter_config.json").read_text())
    refused = [what for what, present in (("DoRA", config.get("use_dora")), ("modules saved whole",
               config.get("modules_to_save")), ("biases", config.get("bias", "none") != "none")) if present]
    if refused:
        raise ModelError(f"The adapter in {folder} uses {', '.join(refused)}, which llama.cpp cannot apply.")
    heads, kv_heads = _heads(base_gguf)
    pairs = _pairs(folder)
    with atomic_file(target) as staging:
        _write(Path(staging), pairs, float(config["lora_alpha"]), heads, kv_heads)
    return target


def _heads(base_gguf: Path) -> tuple[int, int]:
    from gguf import GGUFReader

    fields = GGUFReader(base_gguf).fields

    def number(key: str) -> int:
        field = fields[key]
        return int(field.parts[field.data[0]][0])

    return number("llama.attention.head_count"), number("llama.attention.head_count_kv")


def _pairs(folder: Path) -> dict[tuple[int, str], dict[str, object]]:
    """Each adapted layer's (block, llama.cpp name) -> {"A": array, "B": array}."""
    from safetensors.numpy import load_file

    pairs: dict[tuple[int, str], dict[str, object]] = {}
    for key, array in load_file(folder / "adapter_model.safetensors").items():
        match = _PEFT_KEY.match(key)
        if match is None or match.group(2) not in LLAMA_NAMES:
            raise ModelError(f"The adapter in {folder} adapts {key}, which llama.cpp's Llama names lack.")
        block, module, side = int(match.group(1)), match.group(2), match.group(3)
        pairs.setdefault((block, module), {})[side] = array
    return pairs


def permute(rows, heads: int):
    """A query or key projection's rows (or its lora_B) in llama.cpp's order for Llama's rotary halves."""
    return (rows.reshape(heads, 2, rows.shape[0] // heads // 2, *rows.shape[1:])
            .swapaxes(1, 2).reshape(rows.shape))


def _write(target: Path, pairs, alpha: float, heads: int, kv_heads: int) -> None:
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(target), "llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alpha)
    for (block, module), sides in sorted(pairs.items()):
        a, b = (np.ascontiguousarray(sides[side], dtype=np.float32) for side in ("A", "B"))
        if module == "self_attn.q_proj":
            b = permute(b, heads)
        elif module == "self_attn.k_proj":
            b = permute(b, kv_heads)
        name = f"blk.{block}.{LLAMA_NAMES[module]}.weight"
        writer.add_tensor(f"{name}.lora_a", a)
        writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
