"""Where and how a command runs, shared by task1 and task2: the device, CPU threads, seeds and
the RNG state a resume restores, bf16 autocast, and DDP under torchrun."""
from __future__ import annotations

import os
import random
import re
from contextlib import nullcontext

import numpy as np
from pydantic import Field, field_validator

from .config import Section
from .errors import KitError

DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,2})?)$")
SEED_MAX = 2**32 - 1  # numpy's generators take 32-bit seeds; one bound for every seed key


class RuntimeSection(Section):
    """The runtime keys every command has (each task adds its own)."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    num_threads: int = Field(0, ge=0, le=1024)  # torch CPU threads; 0 = torch's default

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not DEVICE_RE.match(v):
            raise ValueError("must be auto, cpu, cuda or cuda:N (or mps)")
        return v


def seed_field(default: int = 20242025):
    return Field(default, ge=0, le=SEED_MAX)


def resolve_device(name: str):
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps' -> a usable torch.device, or one KitError."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not DEVICE_RE.match(name):
        raise KitError(f"device '{name}' is not a device: use auto, cpu, cuda or cuda:N")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise KitError(f"device '{name}': CUDA is not available here (use --device cpu or auto)")
        if (dev.index or 0) >= torch.cuda.device_count():
            raise KitError(f"device '{name}': only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise KitError(f"device '{name}': MPS is not available here (use --device cpu)")
    return dev


def set_threads(n: int) -> None:
    """Limit torch (and parquet decoding) to `n` CPU threads; 0 leaves the libraries' defaults."""
    if n:
        import pyarrow as pa
        import torch

        torch.set_num_threads(n)
        pa.set_cpu_count(n)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every RNG this process draws from, as tensors and plain data (checkpoint-safe)."""
    import torch

    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(keys.astype(np.int64)),
             "numpy_pos": int(pos), "numpy_gauss": [int(has_gauss), float(gauss)],
             "python": torch.tensor(internal, dtype=torch.int64), "python_version": version,
             "python_gauss": gauss_next}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    has_gauss, gauss = state["numpy_gauss"]
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], has_gauss, gauss))
    random.setstate((state["python_version"], tuple(state["python"].tolist()), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def autocast(device, enabled: bool):
    """bf16 autocast on CUDA when enabled; elsewhere a no-op."""
    import torch

    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


class Dist:
    """DDP state from torchrun's environment; world=1 means a plain single-process run."""

    def __init__(self, device):
        import torch

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = device
        if self.world > 1:
            import torch.distributed as dist

            local = int(os.environ.get("LOCAL_RANK", "0"))
            if device.type == "cuda":
                self.device = torch.device("cuda", local)
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, model):
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def broadcast_flag(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        import torch
        import torch.distributed as dist

        t = torch.tensor([int(flag)], device=self.device if self.device.type == "cuda" else "cpu")
        dist.broadcast(t, 0)
        return bool(t.item())

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order (plain data)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
