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
- What a bucketed batch keeps constant follows what the model's loss
  averages over. A model whose loss is a mean over positions (SASRec,
  GRU4Rec, BERT4Rec, DiffSASRec, uniform diffusion) asks for batches of
  about the same number of real tokens: with a fixed number of rows, a
  batch of short histories would hold a tenth of the positions of a batch
  of long ones, so each of its positions would weigh ten times as much in
  its optimiser step, and training would favour short histories (on Amazon
  Beauty SASRec-CE then plateaued at validation NDCG@10 0.042, against
  0.0485 with token-balanced batches after 7 epochs:
  results/benchmarks/bucketing-diagnostic.json). A
  model whose loss is a mean over examples with one target each (DiffuRec,
  TIGER, SID diffusion) keeps a fixed number of rows. Either way an epoch
  has about as many batches as random batching gives.
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
BALANCES = ("rows", "tokens")


@dataclass(frozen=True)
class Batching:
    """How one epoch's examples are cut into batches (the trainer's ``batch_size`` and ``bucket_by_length``)."""

    size: int
    by_length: bool = True

    def batches(self, lengths: np.ndarray, rng: np.random.Generator, balance: str = "rows") -> Iterator[np.ndarray]:
        """Row indices of each batch, every row once; ``lengths[i]`` is row i's number of real items.

        ``balance`` says what a bucketed batch holds a fixed number of: "rows" (``size`` of them), for a
        model whose loss averages over examples with one target each; "tokens" (``size`` times the mean
        length: as many batches as rows would give), for a model whose loss averages over positions.
        Random batches hold ``size`` rows either way.
        """
        if balance not in BALANCES:
            raise ValueError(f"balance must be one of {', '.join(BALANCES)}, got {balance!r}")
        order = rng.permutation(len(lengths))
        if not self.by_length:
            for start in range(0, len(order), self.size):
                yield order[start : start + self.size]
            return
        tokens = np.maximum(lengths, 1)
        budget = self.size * tokens.mean() if len(tokens) else 1.0
        batches = []
        pool = self.size * POOL_BATCHES
        for start in range(0, len(order), pool):
            rows = order[start : start + pool]
            rows = rows[np.argsort(lengths[rows], kind="stable")]
            if balance == "rows":
                batches.extend(rows[i : i + self.size] for i in range(0, len(rows), self.size))
                continue
            first_token = np.cumsum(tokens[rows]) - tokens[rows]  # [P] where each row starts in the pool's tokens
            cuts = np.flatnonzero(np.diff(first_token // budget)) + 1  # a new batch wherever a budget is crossed
            batches.extend(np.split(rows, cuts))
        for index in rng.permutation(len(batches)):
            yield batches[index]

    def rows(self, matrix: np.ndarray, rng: np.random.Generator, balance: str = "rows") -> Iterator[np.ndarray]:
        """Batches of the rows of a left-padded [N, W] matrix, each trimmed to its longest row."""
        lengths = (matrix > 0).sum(axis=1)
        for rows in self.batches(lengths, rng, balance):
            width = max(1, int(lengths[rows].max()))  # as trim(matrix[rows]), from the lengths already counted
            yield matrix[rows, matrix.shape[1] - width :]


def trim(matrix: np.ndarray) -> np.ndarray:
    """A left-padded [B, W] matrix without its all-padding leading columns: [B, w], w = the longest row (at least 1)."""
    width = max(1, int((matrix > 0).sum(axis=1).max(initial=0)))
    return matrix[:, matrix.shape[1] - width :]
