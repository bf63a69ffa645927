"""Shards of a recipe's grid: ``--shard K/N`` takes every N-th run, so N processes started by any scheduler (a Slurm
array, a Kubernetes indexed job, N shells) cover the grid without talking to each other.

Run i of the plan (in plan order, counted from 0) belongs to shard ``i % N + 1``: every stage and method is spread
over all shards, so shards finish at about the same time. A shard evaluates the runs it owns. The slice depends only
on the recipe and the overrides, so every shard computes the same split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from decnn_cli.errors import ConfigError

if TYPE_CHECKING:
    from decnn_cli.experiments.reproduce.planning import PlannedRun


@dataclass(frozen=True)
class Shard:
    """The K-th (1-based) of N shards."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"K/N"`` with 1 <= K <= N."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if match is None:
            raise ConfigError(f"--shard {text!r} is not of the form K/N (e.g. 2/4: the second of four shards)")
        index, count = int(match[1]), int(match[2])
        if not 1 <= index <= count:
            raise ConfigError(f"--shard {text}: K must be between 1 and N (shards are counted from 1)")
        return cls(index, count)

    def owns(self, position: int) -> bool:
        """Whether the run at ``position`` (0-based, in plan order) belongs to this shard."""
        return position % self.count == self.index - 1

    def of(self, runs: list[PlannedRun]) -> list[PlannedRun]:
        """This shard's runs, in plan order."""
        return [run for position, run in enumerate(runs) if self.owns(position)]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
