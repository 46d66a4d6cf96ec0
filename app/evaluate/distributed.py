"""Sharding over processes with torch.distributed, or none when the run is a single process.

Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK set), whole batches are dealt round-robin over the
ranks: gloo on CPU, nccl on CUDA (each rank on cuda:LOCAL_RANK). After every round, rank 0
gathers the ranks' result lines and writes them; only rank 0 touches the output folder.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def device(self, requested: str | None) -> str | None:
        """cuda:LOCAL_RANK for a multi-process CUDA run; otherwise the requested device."""
        if self.backend == "nccl":
            return f"cuda:{self.local_rank}"
        return requested

    def broadcast(self, obj):
        """Rank 0's obj on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list | None:
        """Every rank's obj, in rank order, on rank 0 (None elsewhere)."""
        if not self.distributed:
            return [obj]
        out = [None] * self.size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def init_world(device: str | None = None) -> World:
    """Join the process group torchrun describes in the environment, if any."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(local_rank)
    # A batch of the paper's protocol runs for minutes; the default 10-30 min timeout is not
    # an upper bound worth failing on.
    dist.init_process_group(backend, timeout=datetime.timedelta(hours=6))
    return World(rank, size, local_rank, backend)
