"""Multi-process training with PyTorch's own engine: ``torchrun --nproc-per-node K -m decnn_cli train ...``.

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE and MASTER_ADDR; every process it launches (one alone included, so
DDP over NCCL runs on a single GPU too) joins a process group (NCCL on CUDA, gloo on CPU), trains a
DistributedDataParallel replica on its shard of every batch, and only rank 0 logs, evaluates and writes the run
folder. A process started without torchrun trains alone, without a process group. ``data.batch_size`` stays the
global batch: each of the K processes takes ``batch_size // K``, so one step sees the same number of examples as
a single process does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from decnn_cli.errors import DecnnError
from decnn_cli.methods import LossContext, MethodSpec


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # of the process group joined ('nccl', 'gloo'); None: none joined

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device) -> Distributed:
    """Join the process group that torchrun describes in the environment (none for a process started alone)."""
    if "WORLD_SIZE" not in os.environ or "MASTER_ADDR" not in os.environ:
        return Distributed()
    world_size = int(os.environ["WORLD_SIZE"])
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world_size, local_rank, dist.get_backend())


def device_for(name: str, ctx: Distributed, resolved: torch.device) -> torch.device:
    """Each process of a multi-GPU job takes the GPU of its local rank."""
    if ctx.enabled and resolved.type == "cuda":
        if torch.cuda.device_count() <= ctx.local_rank:
            raise DecnnError(
                f"process {ctx.rank} wants GPU {ctx.local_rank} but only {torch.cuda.device_count()} are visible; "
                "lower --nproc-per-node"
            )
        return torch.device("cuda", ctx.local_rank)
    return resolved


def shard_batch_size(batch_size: int, ctx: Distributed) -> int:
    if batch_size < ctx.world_size:
        raise DecnnError(
            f"data.batch_size {batch_size} is smaller than the {ctx.world_size} processes; raise it or use fewer"
        )
    return batch_size // ctx.world_size


def all_reduce_sum(value: torch.Tensor, ctx: Distributed) -> torch.Tensor:
    if ctx.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def all_gather_ints(value: int, ctx: Distributed, device: torch.device) -> list[int]:
    if not ctx.enabled:
        return [value]
    gathered = [torch.zeros((), dtype=torch.long, device=device) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, torch.tensor(value, dtype=torch.long, device=device))
    return [int(v) for v in gathered]


def barrier(ctx: Distributed) -> None:
    if ctx.enabled:
        dist.barrier()


def teardown(ctx: Distributed) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


class LossModule(nn.Module):
    """The method's loss as a module, so DistributedDataParallel sees every parameter the loss touches
    (decoder calls included) inside its forward and synchronises all their gradients."""

    def __init__(self, model: nn.Module, method: MethodSpec, ctx: LossContext):
        super().__init__()
        self.model, self.method, self.ctx = model, method, ctx
        self.terms = nn.ModuleList(ctx.modules)  # the loss terms' own weights (the adversary), synchronised too

    def forward(self, x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor | None = None):
        self.ctx.groups = groups
        terms = self.method.loss(self.model, x, y, self.ctx)
        return terms.total, terms.logits, terms.parts


def wrap(model: nn.Module, method: MethodSpec, ctx: LossContext, dctx: Distributed, device: torch.device):
    """A callable (x, y, groups) -> LossTerms-like tuple; DDP-wrapped when the job has several processes."""
    module = LossModule(model, method, ctx)
    if not dctx.enabled:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)
