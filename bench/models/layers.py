"""Neural building blocks shared by the models: the Transformer sequence encoder, weight init, batching helpers.

``SequenceEncoder`` is SASRec's encoder (Kang & McAuley 2018, pre-norm
blocks), causal for SASRec and the uniform diffusion, bidirectional for
BERT4Rec and DiffSASRec; the batching helpers cut users' training
sequences into the left-padded windows the models train on (batched and
trimmed by ``bench.models.batching``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.data.sequences import Sequences
from bench.models.batching import Batching
from bench.errors import DrbenchError


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


def next_item_batches(train: Sequences, max_len: int, batching: Batching, rng):
    """Each user's last max_len + 1 items: inputs all but the last, targets all but the first (trimmed per batch)."""
    window = last_window(train, max_len + 1)
    for rows in batching.rows(window[(window > 0).sum(1) >= 2], rng, balance="tokens"):  # a loss per position
        yield {"inputs": torch.from_numpy(rows[:, :-1]), "targets": torch.from_numpy(rows[:, 1:])}


def last_window(train: Sequences, width: int) -> np.ndarray:
    """[U, width] int64 matrix of each row's last ``width`` items, left-padded with 0."""
    out = np.zeros((len(train), width), dtype=np.int64)
    for u in range(len(train)):
        tail = train[u][-width:]
        if len(tail):
            out[u, width - len(tail):] = tail
    return out
