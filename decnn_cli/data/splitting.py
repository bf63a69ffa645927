"""Seeded train/val splits, subsets and fast DataLoaders over in-memory tensors."""

from __future__ import annotations

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    SequentialSampler,
    Subset,
    TensorDataset,
    WeightedRandomSampler,
)

from decnn_cli.config import DataConfig
from decnn_cli.data.spec import DataSpec, Splits
from decnn_cli.errors import DecnnError


def _permutation(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def cap(dataset: Dataset, limit: int | None, seed: int) -> Dataset:
    """A seeded random subset of at most ``limit`` examples (the dataset itself when ``limit`` is None)."""
    n = len(dataset)
    if limit is None or limit >= n:
        return dataset
    index = _permutation(n, seed)[:limit].sort().values
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[index] for t in dataset.tensors))
    return Subset(dataset, index.tolist())


def labels_of(dataset: Dataset) -> torch.Tensor:
    """The labels of a split, (N,) or (N, K), read without its inputs where it keeps them apart (a TensorDataset,
    a dataset with ``targets``, a Subset of either); otherwise example by example."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1]
    if isinstance(dataset, Subset):
        return labels_of(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    targets = getattr(dataset, "targets", None)
    if isinstance(targets, torch.Tensor) and len(targets) == len(dataset):
        return targets
    return torch.stack([torch.as_tensor(dataset[i][1]) for i in range(len(dataset))])


def groups_of(dataset: Dataset) -> torch.Tensor | None:
    """The protected-attribute group of every example of a split (N,), read without its inputs where it keeps them
    apart (a TensorDataset's third tensor, a dataset's ``groups``, a Subset of either); None when the split carries
    no groups."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[2] if len(dataset.tensors) > 2 else None
    if isinstance(dataset, Subset):
        groups = groups_of(dataset.dataset)
        return None if groups is None else groups[torch.as_tensor(dataset.indices, dtype=torch.long)]
    if hasattr(dataset, "groups"):
        groups = dataset.groups
        return None if groups is None else torch.as_tensor(groups)
    if len(dataset) == 0 or len(dataset[0]) < 3:
        return None
    return torch.stack([torch.as_tensor(dataset[i][2]) for i in range(len(dataset))])


def group_balanced_sampler(
    dataset: Dataset, seed: int, label_names: tuple[str, ...] = (), group_names: tuple[str, ...] = ()
) -> tuple[WeightedRandomSampler, str]:
    """A sampler that draws every (label, protected group) cell of ``dataset`` equally often in expectation (each
    example weighted by 1 / its cell's size), with replacement, ``len(dataset)`` draws a pass, and a note of the
    cells it balances (how often the smallest one's examples are drawn). Without protected groups the cells are the
    labels alone (class-balanced drawing). One clear error where an example has more than one label."""
    labels, groups = labels_of(dataset), groups_of(dataset)
    if labels.dim() != 1:
        raise DecnnError(
            "train.group_balance needs one label per example; this split is multi-label: name one attribute with "
            "data.target"
        )
    by_class = groups is None
    if by_class:
        groups = torch.zeros_like(labels)
    width = int(groups.max()) + 1
    cells = labels.long() * width + groups.long()
    sizes = torch.bincount(cells)
    weights = 1.0 / sizes[cells].double()
    sampler = WeightedRandomSampler(weights, len(dataset), True, generator=torch.Generator().manual_seed(seed))

    def name(cell: int) -> str:
        label, group = divmod(cell, width)
        label_name = label_names[label] if label < len(label_names) else str(label)
        if by_class:
            return label_name
        return f"{label_name}, {group_names[group] if group < len(group_names) else group}"

    present = sizes.nonzero().flatten()
    smallest = int(present[sizes[present].argmin()])
    largest = int(present[sizes[present].argmax()])
    counted = f"{len(present)} classes" if by_class else f"{len(present)} (label, group) cells"
    kind = "class-balanced sampling (no protected groups)" if by_class else "group-balanced sampling"
    note = (
        f"{kind}: {counted} of {len(dataset):,} training examples, from "
        f"{int(sizes[smallest]):,} ({name(smallest)}) to {int(sizes[largest]):,} ({name(largest)}); each example of "
        f"the smallest is drawn about {len(dataset) / (len(present) * int(sizes[smallest])):.1f} times a pass"
    )
    return sampler, note


def split_off_val(dataset: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Seeded split of a training set into (train, val)."""
    n = len(dataset)
    order = _permutation(n, seed)
    n_val = max(1, round(n * fraction))
    val_index, train_index = order[:n_val].sort().values, order[n_val:].sort().values
    if isinstance(dataset, TensorDataset):
        return (
            TensorDataset(*(t[train_index] for t in dataset.tensors)),
            TensorDataset(*(t[val_index] for t in dataset.tensors)),
        )
    return Subset(dataset, train_index.tolist()), Subset(dataset, val_index.tolist())


def finish_splits(
    spec: DataSpec, train_full: Dataset, test: Dataset, cfg: DataConfig, val: Dataset | None = None
) -> Splits:
    """Split validation off the training set (unless the dataset has an official one) and apply --subset."""
    if val is None:
        train, val = split_off_val(train_full, cfg.val_fraction, cfg.split_seed)
    else:
        train = train_full
    return Splits(
        spec=spec,
        train=cap(train, cfg.subset, cfg.split_seed),
        val=cap(val, cfg.subset, cfg.split_seed + 1),
        test=cap(test, cfg.subset, cfg.split_seed + 2),
    )


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    sampler: torch.utils.data.Sampler | None = None,
) -> DataLoader:
    """A DataLoader; in-memory TensorDatasets are indexed a whole batch at a time (no per-item collate).

    ``sampler`` (e.g. a DistributedSampler) replaces the default random/sequential order.
    """
    if sampler is None:
        generator = torch.Generator().manual_seed(seed)
        sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    if isinstance(dataset, TensorDataset):
        return DataLoader(dataset, sampler=BatchSampler(sampler, batch_size, drop_last=False), batch_size=None)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
