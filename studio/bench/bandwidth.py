"""The decode bound: one writer's draft cannot stream faster than the device's memory reads the
model's weights, since every new token reads all of them once (at batch 1 nothing else is
shared). The benchmark measures the memory's rate with a large copy on the serving device, so
the bound holds for this machine, CPU or GPU, without a table of cards."""

from __future__ import annotations

import math
import time
from typing import Any

COPY_MB = 256  # well past any cache, small beside the model's own memory
COPIES = 5  # the fastest of these counts: the others met other work on the machine


def copy_bandwidth(device: str, megabytes: int = COPY_MB, copies: int = COPIES) -> float:
    """Bytes per second the device's memory moves in a large copy (each byte read and written)."""
    import torch

    source = torch.ones(megabytes * 2**20 // 4, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    fastest = math.inf
    for _ in range(copies):
        if source.is_cuda:
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        target.copy_(source)
        if source.is_cuda:
            torch.cuda.synchronize(device)
        fastest = min(fastest, time.perf_counter() - started)
    return 2 * source.numel() * source.element_size() / fastest


def decode_bound(loaded, single_writer_tokens_per_s: float) -> dict[str, Any]:
    """The bound for the serving model, and the share of it one writer on the page's path reaches."""
    from studio.serving.quantize import weight_bytes

    bandwidth = copy_bandwidth(loaded.device)
    weights = weight_bytes(loaded.model)
    bound = bandwidth / weights
    return {"bandwidth_gb_s": bandwidth / 1e9, "weight_mb": weights / 2**20, "bound_tokens_per_s": bound,
            "share_of_bound": single_writer_tokens_per_s / bound}


def print_bound(figures: dict[str, Any]) -> None:
    print(f"decode bound: memory copies at {figures['bandwidth_gb_s']:.1f} GB/s and the weights are "
          f"{figures['weight_mb']:.0f} MB, so one writer can stream at most {figures['bound_tokens_per_s']:.0f} "
          f"tokens/s; the page's path reaches {figures['share_of_bound']:.0%} of that")
