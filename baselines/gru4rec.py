"""GRU4Rec: a recurrent network over the item sequence.

Hidasi et al., "Session-based Recommendations with Recurrent Neural
Networks", ICLR 2016; trained here as in the strongest later replications
(Hidasi & Czapp, "The Effect of Third Party Implementations on
Reproducibility", RecSys 2023; Klenitskiy & Vasilev, RecSys 2023): full
softmax cross-entropy on the next item at every position of the user's
sequence, dropout on the input embeddings, separate input and output item
embeddings.

Defaults per dataset family follow the usual replication settings: hidden
size 64 (more layers rarely help), embedding dropout 0.25, the last 200
(MovieLens) or 50 (Amazon) items of each user.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from bench.models.batching import Batching
from bench.models.losses import catalogue_cross_entropy
from bench.models.layers import init_weights, next_item_batches
from bench.errors import DrbenchError
from bench.models.base import NeuralRecommender, register_model
from bench.data.sequences import Sequences


@dataclass
class GRU4RecConfig:
    max_len: int = 50
    hidden_size: int = 64
    n_layers: int = 1
    embedding_dropout: float = 0.25
    dropout: float = 0.0  # between GRU layers and before the output layer

    def validate(self):
        if self.max_len < 1:
            raise DrbenchError(f"gru4rec max_len must be >= 1, got {self.max_len}")
        if self.hidden_size < 1 or self.n_layers < 1:
            raise DrbenchError("gru4rec hidden_size and n_layers must be >= 1")
        for name in ("embedding_dropout", "dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise DrbenchError(f"gru4rec {name} must be in [0, 1), got {getattr(self, name)}")


def right_aligned_to_left(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move left padding to the right: [0, 0, a, b] -> [a, b, 0, 0]; also returns lengths."""
    length = tokens.shape[1]
    lengths = (tokens > 0).sum(1)
    index = (torch.arange(length, device=tokens.device) + (length - lengths)[:, None]) % length
    return tokens.gather(1, index), lengths


@register_model("gru4rec", GRU4RecConfig, family_defaults={"movielens": {"max_len": 200}, "amazon": {"max_len": 50}})
class GRU4Rec(NeuralRecommender):
    def __init__(self, config: GRU4RecConfig, n_items: int):
        super().__init__(config, n_items)
        hidden = config.hidden_size
        self.input_embedding = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)
        self.gru = nn.GRU(hidden, hidden, config.n_layers, batch_first=True,
                          dropout=config.dropout if config.n_layers > 1 else 0.0)
        self.output_dropout = nn.Dropout(config.dropout)
        self.output_embedding = nn.Embedding(n_items + 1, hidden)
        self.output_bias = nn.Parameter(torch.zeros(n_items + 1))
        init_weights(self.input_embedding)
        init_weights(self.output_embedding)

    def states(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, L] left-padded -> GRU outputs [B, L, d] with items packed to the left, and lengths [B]."""
        packed_tokens, lengths = right_aligned_to_left(tokens)
        x = self.embedding_dropout(self.input_embedding(packed_tokens))
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        outputs, _ = self.gru(packed)
        outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=tokens.shape[1])
        return self.output_dropout(outputs), lengths

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        logits = states @ self.output_embedding.weight.T + self.output_bias
        logits[..., 0] = -torch.inf
        return logits

    def training_batches(self, train: Sequences, batching: Batching, rng):
        return next_item_batches(train, self.config.max_len, batching, rng)

    def loss(self, batch: dict) -> torch.Tensor:
        inputs, targets = batch["inputs"], batch["targets"]
        outputs, _ = self.states(inputs)  # [B, L, d], items packed left
        targets, _ = right_aligned_to_left(torch.where(inputs > 0, targets, torch.zeros_like(targets)))
        mask = targets > 0
        return catalogue_cross_entropy(outputs[mask], self.output_embedding.weight, targets[mask], bias=self.output_bias)

    def score(self, histories: torch.Tensor) -> torch.Tensor:
        outputs, lengths = self.states(histories[:, -self.config.max_len:])
        last = outputs[torch.arange(len(lengths), device=outputs.device), (lengths - 1).clamp(min=0)]  # [B, d]
        return self.logits(last)
