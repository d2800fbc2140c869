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

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import DrbenchError
from bench.models import NeuralRecommender, register_model
from datasets.sequences import Sequences

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


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Normal(0, 0.02) weights and zero biases, as BERT, RecBole and Klenitskiy & Vasilev's SASRec.

    PyTorch's defaults (unit-variance embeddings) train several times slower
    here: on ML-100k the same SASRec needs ~3x the epochs to reach the same
    validation NDCG.
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Embedding)):
            nn.init.normal_(layer.weight, std=std)
            if isinstance(layer, nn.Linear) and layer.bias is not None:
                nn.init.zeros_(layer.bias)
            if isinstance(layer, nn.Embedding) and layer.padding_idx is not None:
                with torch.no_grad():
                    layer.weight[layer.padding_idx].zero_()


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.dropout = dropout

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        # queries, keys: [B, L, d]; allowed: [B, 1, L, L] bool, True where attention may look
        batch, length, hidden = queries.shape
        q = F.linear(queries, self.qkv.weight[:hidden], self.qkv.bias[:hidden])
        k, v = F.linear(keys, self.qkv.weight[hidden:], self.qkv.bias[hidden:]).chunk(2, dim=-1)
        split = lambda x: x.view(batch, length, self.heads, hidden // self.heads).transpose(1, 2)
        attended = F.scaled_dot_product_attention(
            split(q), split(k), split(v), attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )  # [B, h, L, d/h]
        return self.out(attended.transpose(1, 2).reshape(batch, length, hidden))


class TransformerBlock(nn.Module):
    """Pre-norm block as in the SASRec reference code: LN on queries, residual attention, LN, FFN."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.attention = SelfAttention(hidden, heads, dropout)
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.Dropout(dropout)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        queries = self.attention_norm(x)
        x = queries + self.dropout(self.attention(queries, x, allowed))
        x = self.ffn_norm(x)
        x = x + self.ffn(x)
        return x * keep  # padding positions stay zero


class SequenceEncoder(nn.Module):
    """Item + position embeddings followed by self-attention blocks; causal or bidirectional."""

    def __init__(self, n_tokens: int, max_len: int, hidden: int, blocks: int, heads: int, dropout: float, causal: bool):
        super().__init__()
        self.item_embedding = nn.Embedding(n_tokens, hidden, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, hidden)
        self.embedding_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(hidden, heads, dropout) for _ in range(blocks))
        self.final_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.causal = causal
        # SASRec's reference code scales item embeddings by sqrt(d); positions start at the same small
        # size, so without a causal mask to carry order the scaling hides them: BERT4Rec and DiffSASRec
        # then sat on an order-blind plateau (BERT4Rec's reference adds the two unscaled).
        self.item_scale = math.sqrt(hidden) if causal else 1.0
        self.max_len = max_len
        init_weights(self)

    def forward(self, tokens: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        # tokens: [B, L] left-padded, L <= max_len  ->  hidden states [B, L, d]
        # condition: optional [B, d] added to every position's input (e.g. a diffusion timestep embedding)
        length = tokens.shape[1]
        keep = (tokens > 0).unsqueeze(-1).float()  # [B, L, 1]
        positions = torch.arange(self.max_len - length, self.max_len, device=tokens.device)
        x = self.item_embedding(tokens) * self.item_scale + self.position_embedding(positions)
        if condition is not None:
            x = x + condition.unsqueeze(1)
        x = self.embedding_dropout(x) * keep
        allowed = (tokens > 0)[:, None, None, :]  # [B, 1, 1, L] keys that are real items
        if self.causal:
            allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()
        # Each position may always attend to itself, so padded rows never see an all-masked softmax.
        allowed = allowed | torch.eye(length, dtype=torch.bool, device=tokens.device)
        for block in self.blocks:
            x = block(x, allowed, keep)
        return self.final_norm(x)


def check_transformer_shape(model: str, max_len_min: int, config) -> None:
    """The checks every Transformer config shares: length, sizes, heads, dropout."""
    if config.max_len < max_len_min:
        raise DrbenchError(f"{model} max_len must be >= {max_len_min}, got {config.max_len}")
    if config.hidden_size < 1 or config.n_blocks < 1 or config.n_heads < 1:
        raise DrbenchError(f"{model} hidden_size, n_blocks and n_heads must be >= 1")
    if config.hidden_size % config.n_heads:
        raise DrbenchError(f"{model} hidden_size ({config.hidden_size}) must be divisible by n_heads ({config.n_heads})")
    if not 0.0 <= config.dropout < 1.0:
        raise DrbenchError(f"{model} dropout must be in [0, 1), got {config.dropout}")


def shuffled_batches(rows: np.ndarray, batch_size: int, rng):
    """The rows of a matrix in a random order, ``batch_size`` at a time."""
    order = rng.permutation(len(rows))
    for start in range(0, len(order), batch_size):
        yield rows[order[start : start + batch_size]]


def next_item_batches(train: Sequences, max_len: int, batch_size: int, rng):
    """Each user's last max_len + 1 items: inputs all but the last, targets all but the first."""
    window = last_window(train, max_len + 1)
    for rows in shuffled_batches(window[(window > 0).sum(1) >= 2], batch_size, rng):
        yield {"inputs": torch.from_numpy(rows[:, :-1]), "targets": torch.from_numpy(rows[:, 1:])}


def last_window(train: Sequences, width: int) -> np.ndarray:
    """[U, width] int64 matrix of each row's last ``width`` items, left-padded with 0."""
    out = np.zeros((len(train), width), dtype=np.int64)
    for u in range(len(train)):
        tail = train[u][-width:]
        if len(tail):
            out[u, width - len(tail):] = tail
    return out


@register_model("sasrec", SASRecConfig, family_defaults={"movielens": {"max_len": 200}, "amazon": {"max_len": 50}})
class SASRec(NeuralRecommender):
    def __init__(self, config: SASRecConfig, n_items: int):
        super().__init__(config, n_items)
        self.encoder = SequenceEncoder(
            n_items + 1, config.max_len, config.hidden_size, config.n_blocks, config.n_heads, config.dropout, causal=True
        )

    def training_batches(self, train: Sequences, batch_size: int, rng):
        return next_item_batches(train, self.config.max_len, batch_size, rng)

    def loss(self, batch: dict) -> torch.Tensor:
        inputs, targets = batch["inputs"], batch["targets"]
        states = self.encoder(inputs)  # [B, L, d]
        mask = targets > 0
        items = self.encoder.item_embedding.weight  # [n_items + 1, d]
        if self.config.loss == "ce":
            logits = states[mask] @ items.T  # [N, n_items + 1]
            logits[:, 0] = -torch.inf
            return F.cross_entropy(logits, targets[mask])
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
