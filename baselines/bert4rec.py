"""BERT4Rec: a bidirectional Transformer trained with the cloze objective.

Sun et al., "BERT4Rec: Sequential Recommendation with Bidirectional Encoder
Representations from Transformer", CIKM 2019; settings checked against the
replicability study of Petrov & Macdonald (RecSys 2022) and Klenitskiy &
Vasilev (RecSys 2023).

Training: each item of a user's last ``max_len`` training items is replaced
by ``[MASK]`` with probability ``mask_prob`` (at least one per sequence; the
last item is as eligible as any other), and the model predicts the masked
items with a full-softmax cross-entropy. With probability ``last_only_prob``
a sequence instead gets only its last item masked, which is how the
official data generator adds one next-item-shaped sample per user.
Prediction: ``[MASK]`` is appended after the history and the output at that
position ranks the catalogue; the target is never part of the input.

The encoder is the one SASRec uses, with bidirectional attention; the output
head is the BERT-style projection (linear, GELU, layer norm) followed by the
item embeddings shared with the input, plus a per-item bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bench.models.batching import Batching
from bench.models.losses import catalogue_cross_entropy
from bench.models.layers import SequenceEncoder, check_transformer_shape, init_weights, last_window
from bench.errors import DrbenchError
from bench.models.base import NeuralRecommender, register_model
from bench.data.sequences import Sequences


@dataclass
class BERT4RecConfig:
    max_len: int = 50
    hidden_size: int = 64
    n_blocks: int = 2
    n_heads: int = 2
    dropout: float = 0.1
    mask_prob: float = 0.2
    last_only_prob: float = 0.1

    def validate(self):
        check_transformer_shape("bert4rec", 2, self)  # history + [MASK]
        if not 0.0 < self.mask_prob <= 1.0:
            raise DrbenchError(f"bert4rec mask_prob must be in (0, 1], got {self.mask_prob}")
        if not 0.0 <= self.last_only_prob <= 1.0:
            raise DrbenchError(f"bert4rec last_only_prob must be in [0, 1], got {self.last_only_prob}")


def cloze_mask(tokens: np.ndarray, mask_prob: float, last_only_prob: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean [B, L] of positions to mask: real items only, at least one per row."""
    real = tokens > 0
    chosen = (rng.random(tokens.shape) < mask_prob) & real
    last_only = rng.random(len(tokens)) < last_only_prob
    chosen[last_only] = False
    chosen[last_only, -1] = True  # sequences are left-padded: the last column is the most recent item
    empty = ~chosen.any(axis=1)
    if empty.any():
        # Rows that drew no mask get one uniformly chosen real position.
        for row in np.flatnonzero(empty):
            positions = np.flatnonzero(real[row])
            chosen[row, positions[rng.integers(len(positions))]] = True
    return chosen


@register_model("bert4rec", BERT4RecConfig, family_defaults={
    "movielens": {"max_len": 200, "mask_prob": 0.2},
    "amazon": {"max_len": 50, "mask_prob": 0.6},
})
class BERT4Rec(NeuralRecommender):
    def __init__(self, config: BERT4RecConfig, n_items: int):
        super().__init__(config, n_items)
        self.mask_token = n_items + 1
        self.encoder = SequenceEncoder(
            n_items + 2, config.max_len, config.hidden_size, config.n_blocks, config.n_heads, config.dropout, causal=False
        )
        self.head = nn.Sequential(nn.Linear(config.hidden_size, config.hidden_size), nn.GELU(),
                                  nn.LayerNorm(config.hidden_size, eps=1e-12))
        self.output_bias = nn.Parameter(torch.zeros(n_items + 1))
        init_weights(self.head)

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        items = self.encoder.item_embedding.weight[: self.n_items + 1]  # the [MASK] token is never a prediction
        logits = self.head(states) @ items.T + self.output_bias
        logits[..., 0] = -torch.inf
        return logits

    def training_batches(self, train: Sequences, batching: Batching, rng):
        window = last_window(train, self.config.max_len)
        for labels in batching.rows(window[(window > 0).any(axis=1)], rng, balance="tokens"):  # a loss per masked position
            masked = cloze_mask(labels, self.config.mask_prob, self.config.last_only_prob, rng)
            inputs = np.where(masked, self.mask_token, labels)
            yield {"inputs": torch.from_numpy(inputs), "labels": torch.from_numpy(np.where(masked, labels, 0))}

    def loss(self, batch: dict) -> torch.Tensor:
        states = self.encoder(batch["inputs"])  # [B, L, d]
        labels = batch["labels"]
        masked = labels > 0
        items = self.encoder.item_embedding.weight[: self.n_items + 1]  # as in logits: [MASK] is never a candidate
        return catalogue_cross_entropy(self.head(states[masked]), items, labels[masked], bias=self.output_bias)

    def score(self, histories: torch.Tensor) -> torch.Tensor:
        # The history keeps its last max_len - 1 items; [MASK] takes the final slot.
        history = histories[:, -(self.config.max_len - 1):]
        mask_column = torch.full((len(history), 1), self.mask_token, dtype=history.dtype, device=history.device)
        states = self.encoder(torch.cat([history, mask_column], dim=1))
        return self.logits(states[:, -1])
