"""Which attention path runs where: the whole (heads, L, S) map at once, or cache-sized chunks of it.

The training step (edcli.method.fused) and the score mode (DifferenceAwareAttention.scored) both need the attention
map itself (the prior's KL is taken row by row against it), so neither can be one fused SDPA kernel; what changes
between devices is how much of the map goes through each chain of kernels. On the CPU, chunks that stay in cache
win (measured there); on a GPU each chunk is a kernel launch, so the whole map goes at once when the memory allows,
and otherwise the largest chunk that fits, so a batch that is too large falls back instead of failing.
This module is the only place that decision is made.
"""

from __future__ import annotations

import torch

# Share of the device's free memory (driver free + cached by torch, unused) one chain of map-sized buffers may take:
# the rest of the step (activations kept for backward, the allocator's fragmentation) needs the remainder.
MEMORY_FRACTION = 0.5


def free_memory(device: torch.device) -> int | None:
    """Bytes a new buffer can take on `device`; None where there is no such figure (CPU: chunks sized for cache)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def chunk_elements(total: int, bytes_per_value: int, cache_chunk: int, free_bytes: int | None) -> int:
    """Values per chunk for a map of `total` values whose chain keeps `bytes_per_value` bytes per value alive.

    No memory figure (CPU): `cache_chunk`. Otherwise `total` (the whole map, one chunk) when it fits in
    MEMORY_FRACTION of `free_bytes`, else the largest power of two that does (at least 1: one row per chunk)."""
    if free_bytes is None:
        return cache_chunk
    fits = int(free_bytes * MEMORY_FRACTION) // max(1, bytes_per_value)
    if fits >= total:
        return total
    return 1 << max(0, fits.bit_length() - 1)


# (device, total, bytes_per_value, cache_chunk) -> chunk: a training loop asks the same question at every step, and
# the free-memory figure is a driver call; the first answer (taken with the step's activations alive) stands
_CHOSEN: dict[tuple, int] = {}


def attention_chunk(like: torch.Tensor, total: int, bytes_per_value: int, cache_chunk: int) -> int:
    """chunk_elements for a map computed on `like`'s device; on a GPU with the free memory when this shape was first
    seen there (the answer is kept), elsewhere with free_memory's figure (none on a CPU: `cache_chunk`)."""
    key = (like.device, total, bytes_per_value, cache_chunk)
    if key in _CHOSEN:
        return _CHOSEN[key]
    chunk = chunk_elements(total, bytes_per_value, cache_chunk, free_memory(like.device))
    if like.device.type == "cuda":
        _CHOSEN[key] = chunk
    return chunk
