"""Chunk sizes from the memory the device has free (docs/method.md §14: batch, but not all at once)."""

from __future__ import annotations

import torch

# On CPU chunks whose working set stays in cache win (explicit engine, 2 cores, ms per
# channel at 224 px: Lite0 4: 10.2, 8: 10.0, 16: 12.2; ResNet-18 4: 21.9, 8: 22.6, 20: 23.9;
# ResNet-50 4: 51, 8: 56; at 96 px Lite0 and ResNet-18 are fastest at 16-32).
# On CUDA large launches pay off (docs/method.md §14: chunks of 256 were 18-30x the loop).
CPU_MAX_CHUNK = 32
CPU_SPEED_BUDGET = 64 << 20
CUDA_MAX_CHUNK = 512


def _meminfo(key: str, fallback: int) -> int:
    """Bytes of the Linux ``/proc/meminfo`` field ``key`` (``fallback`` where it is absent)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return fallback


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device``: CUDA free memory, else Linux ``MemAvailable``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return _meminfo("MemAvailable", 4 << 30)


def total_bytes(device: torch.device) -> int:
    """All the memory of ``device`` (a machine constant, unlike the free memory): CUDA total
    memory, else Linux ``MemTotal``."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return _meminfo("MemTotal", 8 << 30)


def default_budget(device: torch.device) -> int:
    """Bytes one chunk may use: half the free CUDA memory; on CPU the speed budget
    (or a quarter of the available RAM, if less)."""
    free = available_bytes(device)
    if device.type == "cuda":
        return free // 2
    return min(free // 4, CPU_SPEED_BUDGET)


def chunk_size_for(per_item_bytes: int, device: torch.device, budget: int | None = None,
                   cap: int | None = None) -> int:
    """Largest chunk whose estimated memory fits ``budget`` (at least 1)."""
    budget = default_budget(device) if budget is None else budget
    cap = cap if cap is not None else (CUDA_MAX_CHUNK if device.type == "cuda" else CPU_MAX_CHUNK)
    return int(max(1, min(cap, budget // max(1, per_item_bytes))))
