"""Bounded work for samplers: how many rows one call may take so that no tensor it makes outgrows a bound.

N sampled predictions of a batch of B inputs are N * B rows; one call on all of them makes tensors of N * B
times a row's size (200-540 MB for N = 128 and an evaluation batch of 512 MNIST inputs). Samplers take their
rows in chunks instead, sized from the largest tensor one row makes in the model (measured on one row, so an
input's size, a decoder's widest feature map and the precision in use all count) and a bound per tensor:

- CPU: 16 MiB, under glibc's largest dynamic mmap threshold (32 MiB), so a freed chunk's memory is reused from
  the heap by the next chunk instead of being mapped and page-faulted in afresh;
- CUDA: 1/64 of the GPU's memory (a few tens of tensors that size are alive at once).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

CPU_TENSOR_BYTES = 16 * 2**20
CUDA_MEMORY_SHARE = 64


def tensor_bound(device: torch.device) -> int:
    """The most bytes one tensor of a sampler's chunk may hold on ``device``."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // CUDA_MEMORY_SHARE
    return CPU_TENSOR_BYTES


def largest_row_bytes(model: nn.Module, run: Callable[[torch.Tensor], Any], x: torch.Tensor) -> int:
    """Bytes per row of the largest tensor that ``run(x[:1])`` makes in any module of ``model`` (or of x itself).

    Random draws made by ``run`` (dropout masks, weight samples) are undone, so measuring changes no sample.
    """
    import torch

    largest = x[:1].element_size() * x[:1].numel()

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal largest
        outputs = output if isinstance(output, tuple | list) else (output,)
        for tensor in outputs:
            if isinstance(tensor, torch.Tensor) and tensor.dim() > 0 and tensor.shape[0] > 0:
                largest = max(largest, tensor.element_size() * tensor.numel() // tensor.shape[0])

    handles = [module.register_forward_hook(record) for module in model.modules()]
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            run(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    return largest


def rows_per_call(model: nn.Module, run: Callable[[torch.Tensor], Any], x: torch.Tensor) -> int:
    """How many rows one call of ``run`` may take on x's device: every tensor stays within ``tensor_bound``."""
    return max(1, tensor_bound(x.device) // largest_row_bytes(model, run, x))


def in_rows(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, rows: int) -> torch.Tensor:
    """``fn`` applied to x in chunks of at most ``rows`` rows, concatenated (fn maps rows to rows)."""
    import torch

    if x.shape[0] <= rows:
        return fn(x)
    return torch.cat([fn(part) for part in x.split(rows)])


def bucket(rows: int) -> int:
    """``rows`` rounded up to one of 16 sizes per doubling (at most 1/16 more rows; 32 or fewer stay as they are)."""
    if rows <= 32:
        return rows
    step = 1 << (rows.bit_length() - 5)
    return -(-rows // step) * step


def row_counts(model: nn.Module, x: torch.Tensor) -> Callable[[int], int]:
    """How many rows a call that needs ``n`` should run: ``bucket(n)`` where oneDNN computes on CPU (bf16 autocast,
    convolutions), else n. oneDNN compiles and keeps a kernel for every row count it meets (about 2 MB each, up to
    ``ONEDNN_PRIMITIVE_CACHE_CAPACITY``); samplers meet hundreds of counts, and bucketed far fewer serve them all."""
    import torch
    from torch import nn

    if x.device.type == "cpu" and (
        torch.is_autocast_enabled("cpu") or any(isinstance(m, nn.Conv2d) for m in model.modules())
    ):
        return bucket
    return lambda rows: rows


def padded(t: torch.Tensor, rows: int) -> torch.Tensor:
    """``t`` with its last row repeated up to ``rows`` rows (computed with the rest, then dropped)."""
    import torch

    extra = rows - len(t)
    return t if extra <= 0 else torch.cat([t, t[-1:].expand(extra, *t.shape[1:])])
