"""Data-parallel training on PyTorch's own engine: ``torch.distributed`` started by ``torchrun``.

``torchrun`` starts one process per device and tells each where it stands through environment variables:
``RANK`` (0..W-1 over all nodes), ``WORLD_SIZE`` (W) and ``LOCAL_RANK`` (the device index on its node),
plus ``MASTER_ADDR``/``MASTER_PORT`` for the rendezvous. Without them (a plain ``libra train``) every helper
here answers as the only process of a world of one, so the training and evaluation code reads the same
in both cases.

The backend is gloo on CPU and NCCL on CUDA, where each process owns ``cuda:LOCAL_RANK``.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from libra_cli.engine.run import resolve_device
from libra_cli.errors import LibraError


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its global rank, the number of processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise LibraError(f"environment variable {name}={value!r} is not an integer") from exc


def init_distributed(device_name: str) -> DistributedContext:
    """Join the process group torchrun described, or return a world of one without it.

    ``device_name`` is the configured device ("cpu", "cuda" or "cuda:N"); under torchrun a CUDA run uses
    ``cuda:LOCAL_RANK`` whatever N says, since each process owns one GPU of its node. Calling this again
    in the same process (``libra demo`` trains several runs) reuses the group.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size <= 1:
        return DistributedContext(0, 1, 0, resolve_device(device_name))
    use_cuda = device_name.startswith("cuda")
    if use_cuda:
        if not torch.cuda.is_available():
            raise LibraError(f"--device {device_name}: CUDA is not available on this machine (use --device cpu)")
        if local_rank >= torch.cuda.device_count():
            raise LibraError(
                f"LOCAL_RANK {local_rank}: this node has only {torch.cuda.device_count()} GPUs (lower --nproc_per_node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend=backend, device_id=device if use_cuda else None)
        atexit.register(_destroy)
    return DistributedContext(rank, world_size, local_rank, device)


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0, the one process that writes files and prints."""
    return get_rank() == 0


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (any picklable value), in rank order, on every rank."""
    if get_world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (the others' argument is ignored)."""
    if get_world_size() == 1:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def average_across_ranks(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The mean over ranks of each scalar tensor in ``values`` (one all-reduce), identity for one process.

    Each rank's loss terms are means over its own images; with equal per-rank shares their mean is the
    global batch's loss, which is what the log reports.
    """
    if get_world_size() == 1 or not values:
        return values
    names = list(values)  # the same order on every rank: the model's loss dict
    stacked = torch.stack([values[name].detach().float() for name in names])
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    stacked /= get_world_size()
    return dict(zip(names, stacked.unbind(0), strict=True))


def gather_object(obj: Any, dst: int = 0) -> list[Any] | None:
    """Every rank's ``obj`` in rank order on rank ``dst``, None on the others."""
    if get_world_size() == 1:
        return [obj]
    gathered: list[Any] | None = [None] * get_world_size() if get_rank() == dst else None
    dist.gather_object(obj, gathered, dst=dst)
    return gathered
