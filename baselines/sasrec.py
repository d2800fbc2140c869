"""SASRec: causal self-attention over the item sequence.

Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018.
Architecture as in the paper and its reference code: item embeddings scaled
by sqrt(d) plus learned absolute positions, embedding dropout, ``n_blocks``
pre-norm blocks (layer-normalised queries, residual attention, point-wise
two-layer feed-forward), a final layer norm, and scores by inner product with
the shared item embedding table.

Losses (``loss``):
- ``bce``: binary cross-entropy with ``n_negatives`` uniformly sampled
  negatives per position (the paper uses one; a single negative avoids the
  user's own items);
- ``gbce``: gSASRec's generalised BCE (Petrov & Macdonald, RecSys 2023):
  the positive term is raised to the power beta = alpha * (t * (1 - 1/alpha)
  + 1/alpha), alpha = n_negatives / (n_items - 1), which counters the
  overconfidence that negative sampling induces; ``gbce_t`` is t (0 = BCE,
  1 = fully calibrated; the paper recommends 0.75 with 256 negatives);
- ``sampled``: softmax cross-entropy over the positive and ``n_negatives``
  items sampled per sequence, excluding the user's own items (Klenitskiy &
  Vasilev, RecSys 2023, use 3,000);
- ``ce``: full-softmax cross-entropy over the catalogue at every position,
  which Klenitskiy & Vasilev ("Turning Dross Into Gold Loss") showed to be
  much stronger than ``bce``.

Per-position negatives (``bce``, ``gbce``) that hit the position's target
are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.errors import DrbenchError
from bench.models.batching import Batching
from bench.models.base import NeuralRecommender, register_model
from bench.models.losses import catalogue_cross_entropy
from bench.models.layers import SequenceEncoder, check_transformer_shape, next_item_batches
from bench.data.sequences import Sequences

LOSSES = ("bce", "gbce", "sampled", "ce")


@dataclass
class SASRecConfig:
    max_len: int = 50
    hidden_size: int = 64
    n_blocks: int = 2
    n_heads: int = 1
    dropout: float = 0.2
    loss: str = "ce"
    n_negatives: int = 1  # for bce, gbce and sampled
    gbce_t: float = 0.75  # gbce calibration

    def validate(self):
        check_transformer_shape("sasrec", 1, self)
        if self.loss not in LOSSES:
            raise DrbenchError(f"sasrec loss must be one of {', '.join(LOSSES)}, got '{self.loss}'")
        if self.n_negatives < 1:
            raise DrbenchError(f"sasrec n_negatives must be >= 1, got {self.n_negatives}")
        if not 0.0 <= self.gbce_t <= 1.0:
            raise DrbenchError(f"sasrec gbce_t must be in [0, 1], got {self.gbce_t}")


@register_model("sasrec", SASRecConfig, family_defaults={"movielens": {"max_len": 200}, "amazon": {"max_len": 50}})
class SASRec(NeuralRecommender):
    def __init__(self, config: SASRecConfig, n_items: int):
        super().__init__(config, n_items)
        self.encoder = SequenceEncoder(
            n_items + 1, config.max_len, config.hidden_size, config.n_blocks, config.n_heads, config.dropout, causal=True
        )

    def training_batches(self, train: Sequences, batching: Batching, rng):
        return next_item_batches(train, self.config.max_len, batching, rng)

    def loss(self, batch: dict) -> torch.Tensor:
        inputs, targets = batch["inputs"], batch["targets"]
        states = self.encoder(inputs)  # [B, L, d]
        mask = targets > 0
        items = self.encoder.item_embedding.weight  # [n_items + 1, d]
        if self.config.loss == "ce":
            return catalogue_cross_entropy(states[mask], items, targets[mask])  # over every item, without [N, n_items + 1] logits
        if self.config.loss == "sampled":
            return self._sampled_softmax(states, inputs, targets, mask, items)
        negatives = self._position_negatives(inputs, targets)[mask]  # [N, k]
        states, positives = states[mask], targets[mask]  # [N, d], [N]
        positive_logits = (states * items[positives]).sum(-1)  # [N]
        negative_logits = torch.einsum("nd,nkd->nk", states, items[negatives])  # [N, k]
        negative_terms = F.logsigmoid(-negative_logits).masked_fill(negatives == positives[:, None], 0.0)
        return -(self._positive_weight() * F.logsigmoid(positive_logits) + negative_terms.sum(-1)).mean()

    def _positive_weight(self) -> float:
        """beta of gBCE (1 for plain BCE)."""
        if self.config.loss != "gbce":
            return 1.0
        alpha = self.config.n_negatives / (self.n_items - 1)
        return alpha * (self.config.gbce_t * (1.0 - 1.0 / alpha) + 1.0 / alpha)

    def _sampled_softmax(self, states, inputs, targets, mask, items) -> torch.Tensor:
        k = self.config.n_negatives
        negatives = torch.randint(1, self.n_items + 1, (len(inputs), k), device=inputs.device)  # [B, k]
        seen = torch.cat([inputs, targets[:, -1:]], dim=1)  # [B, L + 1]
        own = (negatives.unsqueeze(-1) == seen.unsqueeze(1)).any(-1)  # [B, k]
        positive_logits = (states * items[targets]).sum(-1, keepdim=True)  # [B, L, 1]
        negative_logits = torch.einsum("bld,bkd->blk", states, items[negatives]).masked_fill(own[:, None, :], -torch.inf)
        logits = torch.cat([positive_logits, negative_logits], dim=-1)[mask]  # [N, 1 + k]
        return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))

    def _position_negatives(self, inputs: torch.Tensor, targets: torch.Tensor, rounds: int = 5) -> torch.Tensor:
        """[B, L, k] uniform negatives; a single negative is redrawn while it hits the user's own items."""
        k = self.config.n_negatives
        negatives = torch.randint(1, self.n_items + 1, (*targets.shape, k), device=targets.device)
        if k > 1:
            return negatives
        seen = torch.cat([inputs, targets[:, -1:]], dim=1)  # [B, L + 1]
        negatives = negatives[..., 0]
        for _ in range(rounds):
            clash = (negatives.unsqueeze(-1) == seen.unsqueeze(1)).any(-1)
            if not clash.any():
                break
            negatives = torch.where(clash, torch.randint_like(negatives, 1, self.n_items + 1), negatives)
        return negatives.unsqueeze(-1)

    def score(self, histories: torch.Tensor) -> torch.Tensor:
        states = self.encoder(histories[:, -self.config.max_len:])
        return states[:, -1] @ self.encoder.item_embedding.weight.T  # [B, n_items + 1]
