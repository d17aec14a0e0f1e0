"""Device, precision, seeding and torch.distributed set-up: decided here alone."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from edcli.errors import ConfigError, UsageError

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu. An explicit device that is absent is a clear error."""
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA GPU is visible here; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"--device {name}: MPS is not available here; use --device cpu or auto")
    return device


def setup_device(name: str = "auto") -> torch.device:
    """The device a command computes on (resolve_device), set up for it: TF32 matrix products on a CUDA GPU that
    has them. resolve_device alone only names the device (planning, questions about it)."""
    device = resolve_device(name)
    if device.type == "cuda":
        use_tf32(device)
    return device


def use_tf32(device: torch.device) -> None:
    """fp32 matrix products in TF32 on GPUs that have it (compute capability 8.0 and up: A100, H100, H200...):
    10 mantissa bits in the products, fp32 sums; the setting is recorded in run.json and checkpoints
    (engine_settings). cuDNN's convolutions (the backbone) already default to TF32 in torch. CUDA's flag only:
    the CPU's products stay IEEE (oneDNN's TF32 setting is left alone)."""
    if torch.cuda.get_device_capability(device)[0] >= 8:
        cuda_tf32(True)


def cuda_tf32(on: bool | None = None) -> bool:
    """Whether CUDA's fp32 matrix products run in TF32; `on` sets it first (torch's new flag where it has one:
    mixing it with the legacy allow_tf32 makes torch.get_float32_matmul_precision raise)."""
    mm = torch.backends.cuda.matmul
    if hasattr(mm, "fp32_precision"):  # torch >= 2.9
        if on is not None:
            mm.fp32_precision = "tf32" if on else "ieee"
        return mm.fp32_precision == "tf32"
    if on is not None:
        mm.allow_tf32 = on
    return bool(mm.allow_tf32)


def engine_settings(device: torch.device) -> dict:
    """How this process computes, for run.json and checkpoints: the device kind and fp32 matrix products
    ("tf32" or "ieee"); attention maps go whole or in chunks as edcli.method.dispatch decides per batch."""
    return {"device": device.type, "fp32_matmul": "tf32" if device.type == "cuda" and cuda_tf32() else "ieee"}


def check_precision(precision: str, device: torch.device) -> str:
    if precision not in ("fp32", "bf16", "fp16"):
        raise UsageError(f"--precision {precision!r}: use fp32, bf16 or fp16")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        raise ConfigError(
            "--precision bf16 on the CPU needs bf16 dot products (AVX512-BF16 or AMX), which this CPU lacks; use fp32"
        )
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("--precision fp16 needs a GPU (cuda or mps); on the CPU use fp32 (or bf16 where supported)")
    return precision


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) below which it has no bf16 dot products, whatever the CPU has
_ISA_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 matrix products natively here (AVX512-BF16 or AMX); emulated bf16 is slower.
    A cap of oneDNN's ISA below bf16 (ONEDNN_MAX_CPU_ISA=AVX2, as on an AVX2-only CPU) counts as none."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _ISA_WITHOUT_BF16:
        return False
    cpu = torch.cpu
    checks = [getattr(cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(f()) for f in checks if f is not None)


def autocast(device: torch.device, precision: str):
    """Mixed precision for matmuls; the sigma, target and KL maths disable it locally (see loss.py)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[precision])


def seed_everything(seed: int) -> None:
    """Same seed, same run: python, numpy and torch generators (the reference's init_seeds)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


def init_distributed(device_name: str = "auto") -> DistInfo:
    """Initialise torch.distributed from torchrun's environment; a no-op when not launched by torchrun."""
    if not launched_by_torchrun():
        return DistInfo()
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
        backend = "nccl" if use_cuda else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world=world, local_rank=local)


def shutdown_distributed(finished: bool = True) -> None:
    """Destroy the process group, if any, while the interpreter is still whole: left to exit, gloo's threads can
    abort a rank ("terminate called without an active exception") after its work is done.

    `finished`: every rank got here after the last collective (the rows were gathered), so they can meet at a barrier
    first and no rank tears its connections down while a peer still reads from them. After a failure the peers may
    be elsewhere: no barrier then, torchrun ends the job.
    """
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()
        gc.collect()  # the group's C++ side (its threads) goes now, not in the interpreter's teardown


def rank_device(device_name: str, info: DistInfo) -> torch.device:
    """Under torchrun each rank takes its local GPU; otherwise the resolved device (set up: setup_device)."""
    device = setup_device(device_name)
    if info.enabled and device.type == "cuda":
        return torch.device("cuda", info.local_rank % torch.cuda.device_count())
    return device


# ---------------------------------------------------------------------------------------------- data


def loader_workers(device: torch.device | str | None) -> int:
    """Decoding processes when none are asked: on a GPU the images must keep up with it (up to 8, leaving a core to
    the main process); on the CPU decoding in the main process (0) leaves the cores to the model."""
    if getattr(device, "type", None) != "cuda":
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def data_loader(
    dataset,
    batch_size: int,
    num_workers: int | None,
    shuffle: bool = False,
    collate_fn=None,
    device: torch.device | str | None = None,
):
    """A DataLoader for `device`: batches in pinned (page-locked) memory on CUDA, so `.to(device, non_blocking=True)`
    copies overlap the work; num_workers None is loader_workers(device)."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=loader_workers(device) if num_workers is None else num_workers,
        persistent_workers=False,
        pin_memory=getattr(device, "type", None) == "cuda",  # not for ONNX Runtime's device names (numpy inputs)
        collate_fn=collate_fn,
    )


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`; from pinned memory without waiting for the copy (the stream orders it)."""
    return t.to(device, non_blocking=t.device.type == "cpu" and t.is_pinned())
