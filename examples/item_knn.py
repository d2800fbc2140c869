"""Item-kNN, a drbench plugin: items are similar when the same users' training sequences contain them.

The similarity of items i and j is the cosine of their columns in the binary
user x item matrix of the training sequences (how often they co-occur,
normalised by how often each occurs). A user's score for item j is the sum of
j's similarities to the user's last ``history`` items, the most recent ones
weighted most (``decay``). No training loop: ``fit`` counts once, then
validates once. The dense item x item matrix suits catalogues up to some
10,000 items (400 MB).

    python run_bench.py --plugin examples/item_knn.py --list-models
    python run_bench.py --suite examples/item_knn.yaml
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse

from bench.errors import DrbenchError
from bench.models.base import FitSummary, Recommender, register_model


@dataclass
class ItemKNNConfig:
    history: int = 5  # the user's most recent items that vote
    decay: float = 0.8  # their weights: 1 for the most recent, decay for the one before, decay ** 2, ...
    neighbours: int = 100  # similarities kept per item (the largest); 0 keeps all

    def validate(self) -> None:  # called by drbench whenever a suite sets these values
        if self.history < 1 or self.neighbours < 0 or not 0.0 < self.decay <= 1.0:
            raise DrbenchError("item_knn needs history >= 1, neighbours >= 0 and 0 < decay <= 1")


# The default search space for --tune, in the format of bench/spaces.yaml.
SPACE = {"params.history": {"choice": [1, 3, 5, 10]}, "params.decay": {"uniform": [0.5, 1.0]},
         "params.neighbours": {"choice": [20, 100, 0]}}


@register_model("item_knn", ItemKNNConfig, search_space=SPACE)
class ItemKNN(Recommender):
    def __init__(self, config: ItemKNNConfig, n_items: int):
        super().__init__(config, n_items)
        self.similarity = torch.zeros(n_items + 1, n_items + 1)  # row and column 0: the padding item

    def fit(self, train, trainer, validate) -> FitSummary:
        # the binary user x item matrix, sparse (an item a user repeats counts once)
        seen = sparse.csr_matrix((np.ones(train.nnz, dtype=np.float32), (train.row_ids(), train.values)),
                                 shape=(len(train), self.n_items + 1))
        seen.data[:] = 1.0
        counts = torch.from_numpy((seen.T @ seen).toarray())  # co-occurrence; the diagonal: each item's number of users
        norms = counts.diagonal().sqrt().clamp(min=1.0)
        similarity = counts / norms[:, None] / norms[None, :]
        similarity.fill_diagonal_(0.0)  # an item is not its own neighbour: recommend the next one, not the last
        kept = self.config.neighbours
        if 0 < kept < self.n_items:  # each item's most similar items only
            top = similarity.topk(kept, dim=1)
            similarity = torch.zeros_like(similarity).scatter_(1, top.indices, top.values)
        self.similarity = similarity.to(self.similarity.device)
        metrics = validate(self)
        return FitSummary(epochs_run=1, best_epoch=1, history=[{"epoch": 1, **{f"valid_{k}": v for k, v in metrics.items()}}])

    def score(self, histories: torch.Tensor) -> torch.Tensor:
        recent = histories[:, -self.config.history:]  # left-padded with 0, most recent last; row 0 is all zero
        weights = self.config.decay ** torch.arange(recent.shape[1] - 1, -1, -1, device=recent.device, dtype=torch.float32)
        return torch.einsum("h,bhn->bn", weights, self.similarity[recent])

    def to(self, device):
        self.similarity = self.similarity.to(device)
        return self
