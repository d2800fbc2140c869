"""Most-popular: every user gets the items most frequent in the training data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.models.base import FitSummary, Recommender, register_model


@dataclass
class PopConfig:
    pass


@register_model("pop", PopConfig)
class Pop(Recommender):
    def __init__(self, config: PopConfig, n_items: int):
        super().__init__(config, n_items)
        self.counts = torch.zeros(n_items + 1)
        self.device = torch.device("cpu")

    def fit(self, train, trainer, validate) -> FitSummary:
        counts = np.bincount(train.values, minlength=self.n_items + 1).astype(np.float32)
        self.counts = torch.from_numpy(counts).to(self.device)
        metrics = validate(self)
        return FitSummary(epochs_run=1, best_epoch=1, history=[{"epoch": 1, **{f"valid_{k}": v for k, v in metrics.items()}}])

    def to(self, device):
        self.device = torch.device(device)
        self.counts = self.counts.to(self.device)
        return self

    def score(self, histories: torch.Tensor) -> torch.Tensor:
        return self.counts.expand(histories.shape[0], -1).clone()
