"""Training batches with as little padding as possible, shared by every sequence model.

Histories are left-padded to a common width. On Amazon Beauty the mean
training history has 6.9 items and the window is 50 wide, so a batch of
randomly drawn users is mostly padding, and every Transformer layer, GRU
step and attention score over it is wasted work. Two steps remove it:

- ``Batching.batches`` groups rows of similar length into the same batch:
  the rows are shuffled, cut into pools of ``POOL_BATCHES`` batches, sorted
  by length within each pool, cut into batches, and the batches of the
  epoch are shuffled again (the bucketing of torchtext's ``BucketIterator``).
  Every row is used once per epoch, as before; what changes is which rows
  share a batch. ``by_length=False`` gives uniformly random batches, drawn
  from the random stream exactly as the models drew them before.
- ``trim`` drops the columns that are padding in every row of a batch.

Neither changes what a model computes for a row: the models place
positions from the right (the most recent item is always at the last
position) and mask padded keys, which ``tests/models`` checks per model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

POOL_BATCHES = 100  # batches per sorting pool: wide enough to find similar lengths, narrow enough to stay random


@dataclass(frozen=True)
class Batching:
    """How one epoch's examples are cut into batches (the trainer's ``batch_size`` and ``bucket_by_length``)."""

    size: int
    by_length: bool = True

    def batches(self, lengths: np.ndarray, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Row indices of each batch, every row once; ``lengths[i]`` is row i's number of real items."""
        order = rng.permutation(len(lengths))
        if not self.by_length:
            for start in range(0, len(order), self.size):
                yield order[start : start + self.size]
            return
        batches = []
        pool = self.size * POOL_BATCHES
        for start in range(0, len(order), pool):
            rows = order[start : start + pool]
            rows = rows[np.argsort(lengths[rows], kind="stable")]
            batches.extend(rows[i : i + self.size] for i in range(0, len(rows), self.size))
        for index in rng.permutation(len(batches)):
            yield batches[index]

    def rows(self, matrix: np.ndarray, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Batches of the rows of a left-padded [N, W] matrix, each trimmed to its longest row."""
        for rows in self.batches((matrix > 0).sum(axis=1), rng):
            yield trim(matrix[rows])


def trim(matrix: np.ndarray) -> np.ndarray:
    """A left-padded [B, W] matrix without its all-padding leading columns: [B, w], w = the longest row (at least 1)."""
    width = max(1, int((matrix > 0).sum(axis=1).max(initial=0)))
    return matrix[:, matrix.shape[1] - width :]
