"""IDX files (the format of MNIST's distribution files), raw or gzip-compressed, read into tensors.

torchvision's parser (``read_sn3_pascalvincent_tensor``) reads uncompressed files only; a folder that holds only the
``.gz`` files as published is read here: the header is checked as below, then the bytes are viewed as a tensor.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import torch

from decnn_cli.errors import DecnnError

# IDX magic numbers: two zero bytes, the element type (0x08: unsigned byte), the number of dimensions.
IDX_FILES = {"images-idx3-ubyte": ("image", 0x00000803), "labels-idx1-ubyte": ("label", 0x00000801)}


def idx_problem(data: bytes, path: Path, kind: str, magic: int) -> str | None:
    """What is wrong with the header or length of one IDX file's bytes, as the start of a sentence; None if nothing."""
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found != magic:
        seen = f"{found:#010x}" if found is not None else f"missing from its {len(data)} bytes"
        return f"{path} is not an IDX {kind} file (its magic number is {seen} where {kind} files have {magic:#010x})"
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + math.prod(dims) if len(data) >= header else header
    if len(data) != expected:
        return f"{path} is corrupt (it holds {len(data)} bytes where its header asks for {expected})"
    return None


def find(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` if it exists, else ``folder/stem.gz`` if that does, else None."""
    for path in (folder / stem, folder / f"{stem}.gz"):
        if path.is_file():
            return path
    return None


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file of unsigned bytes (raw, or ``.gz``) as a uint8 tensor of its shape: images (N, H, W), labels (N,).

    A file that is not an IDX image or label file, or whose length disagrees with its header, is one DecnnError
    naming it.
    """
    try:
        data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DecnnError(f"{path} could not be read ({err}); replace it with an intact copy") from None
    stem = path.name.removesuffix(".gz")
    kind, magic = next((v for k, v in IDX_FILES.items() if stem.endswith(k)), IDX_FILES["images-idx3-ubyte"])
    problem = idx_problem(data, path, kind, magic)
    if problem:
        raise DecnnError(f"{problem}; replace it with an intact copy")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return torch.frombuffer(bytearray(data[4 + 4 * ndim :]), dtype=torch.uint8).view(*dims)
