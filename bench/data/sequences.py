"""Ragged integer arrays in CSR form: one row per user, values in order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np


@dataclass(frozen=True)
class Sequences:
    """``values[offsets[u]:offsets[u + 1]]`` is row ``u``.

    Used for item sequences (ids 1..n_items, 0 is padding and never stored)
    and for the timestamps aligned with them.
    """

    offsets: np.ndarray  # int64 [n_rows + 1], offsets[0] == 0
    values: np.ndarray  # [nnz]

    @classmethod
    def from_lists(cls, rows: Iterable[Sequence[int]], dtype=np.int64) -> "Sequences":
        rows = [np.asarray(r, dtype=dtype) for r in rows]
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.concatenate(rows) if rows else np.zeros(0, dtype=dtype)
        return cls(offsets, values.astype(dtype, copy=False))

    @classmethod
    def from_lengths(cls, lengths: np.ndarray, values: np.ndarray) -> "Sequences":
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        if offsets[-1] != len(values):
            raise ValueError(f"lengths sum to {offsets[-1]} but there are {len(values)} values")
        return cls(offsets, values)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, row: int) -> np.ndarray:
        return self.values[self.offsets[row] : self.offsets[row + 1]]

    def __iter__(self):
        for row in range(len(self)):
            yield self[row]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def nnz(self) -> int:
        return int(self.offsets[-1])

    def select(self, rows: np.ndarray) -> "Sequences":
        """The given rows, in the given order."""
        return Sequences.from_lists([self[int(r)] for r in rows], dtype=self.values.dtype)

    def row_ids(self) -> np.ndarray:
        """Row index of every stored value, aligned with ``values``."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.lengths)
