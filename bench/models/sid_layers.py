"""Building blocks shared by the models that recommend by generating semantic IDs (TIGER, SID masked diffusion).

Token layout (special tokens, then each digit's codebook), the SID
embedding with item- and digit-position embeddings, the recommender base
class that builds the IDs and the trie when ``fit`` starts, the Transformer
stack and the (history, target) training batches.
"""

from __future__ import annotations

import abc
import math

import numpy as np
import torch
from torch import nn

from bench.data.sequences import Sequences
from bench.errors import DrbenchError
from bench.models.base import NeuralRecommender
from bench.models.batching import Batching
from bench.models.semantic_ids import SemanticIdConfig, SemanticIds, build_semantic_ids
from bench.models.sid_decoding import SidTrie

PAD, START, MASK = 0, 1, 2  # special tokens; digit tokens follow
N_SPECIAL = 3


def check_generation(config) -> None:
    """Checks shared by the SID generators' configs."""
    if config.ffn_size < 1 or config.beam_size < 1:
        raise DrbenchError(f"ffn_size and beam_size must be >= 1, got {config.ffn_size} and {config.beam_size}")
    if config.targets_per_user < 0:
        raise DrbenchError(f"targets_per_user must be >= 0 (0 = all), got {config.targets_per_user}")


def history_target_batches(train: Sequences, max_len: int, targets_per_user: int, batching: Batching, rng):
    """Batches of every (last ``max_len`` items before t, item t) pair, t >= 1 of each training row.

    With ``targets_per_user`` > 0 only each row's last that many targets are
    used. Yields {"histories": [B, W] left-padded int64, W = the batch's longest history (at most max_len),
    "targets": [B] int64}.
    """
    rows = train.row_ids()
    starts = train.offsets[rows]  # flat index where each value's row starts
    position = np.arange(train.nnz) - starts
    keep = position >= 1
    if targets_per_user:
        keep &= position >= train.lengths[rows] - targets_per_user
    examples = np.flatnonzero(keep)
    for rows in batching.batches(np.minimum(position[examples], max_len), rng):
        targets = examples[rows]
        width = int(min(position[targets].max(), max_len))
        window = targets[:, None] - width + np.arange(width)  # [B, W] flat indices before the target
        inside = window >= starts[targets][:, None]
        histories = np.where(inside, train.values[np.maximum(window, 0)], 0)
        yield {"histories": torch.from_numpy(histories), "targets": torch.from_numpy(train.values[targets])}


class SidEmbedding(nn.Module):
    """Token embedding (special tokens, then each digit's codebook), item-position and digit-position embeddings.

    Item positions 0..max_len-1 are history slots (most recent last), max_len
    is the target's slot; digit positions 0..D-1 are the digits, D marks the
    start token.
    """

    def __init__(self, vocab_sizes: tuple[int, ...], max_len: int, hidden: int, dropout: float):
        super().__init__()
        self.n_digits = len(vocab_sizes)
        self.register_buffer("offsets", torch.tensor(N_SPECIAL + np.concatenate([[0], np.cumsum(vocab_sizes)[:-1]])))
        self.vocab_sizes = vocab_sizes
        self.token = nn.Embedding(N_SPECIAL + sum(vocab_sizes), hidden, padding_idx=PAD)
        self.item_position = nn.Embedding(max_len + 1, hidden)
        self.digit_position = nn.Embedding(self.n_digits + 1, hidden)
        self.dropout = nn.Dropout(dropout)
        self.max_len = max_len

    def digit_tokens(self, codes: torch.Tensor, first_digit: int = 0) -> torch.Tensor:
        """[..., d] digit values of digits first_digit.. -> their token ids."""
        return codes + self.offsets[first_digit : first_digit + codes.shape[-1]]

    def forward(self, tokens: torch.Tensor, item_position: torch.Tensor, digit_position: torch.Tensor) -> torch.Tensor:
        # tokens, positions: [B, T] -> [B, T, d]
        x = self.token(tokens) * math.sqrt(self.token.embedding_dim)
        return self.dropout(x + self.item_position(item_position) + self.digit_position(digit_position))

    def history(self, codes: torch.Tensor, histories: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedded history digits [B, L * D, d] and their padding mask [B, L * D] (True = padding).

        histories: [B, L] left-padded items, L <= max_len (earlier items are cut).
        """
        histories = histories[:, -self.max_len:]
        batch, length = histories.shape
        tokens = self.digit_tokens(codes[histories]).masked_fill((histories == 0).unsqueeze(-1), PAD).reshape(batch, -1)
        item_position = torch.arange(self.max_len - length, self.max_len, device=tokens.device).repeat_interleave(self.n_digits)
        digit_position = torch.arange(self.n_digits, device=tokens.device).repeat(length)
        x = self(tokens, item_position.expand(batch, -1), digit_position.expand(batch, -1))
        return x, tokens == PAD

    def digit_logits(self, states: torch.Tensor, digit: int) -> torch.Tensor:
        """[..., d] states -> [..., V_digit] logits over that digit's codebook (tied to its token embeddings)."""
        start = int(self.offsets[digit])
        return states @ self.token.weight[start : start + self.vocab_sizes[digit]].T


class SidRecommender(NeuralRecommender):
    """A model that recommends by generating semantic IDs; builds them (and its network) when ``fit`` starts."""

    generates_lists = True

    def __init__(self, config, n_items: int):
        super().__init__(config, n_items)
        self.item_text: list[str] | None = None
        self.sids: SemanticIds | None = None
        self.trie: SidTrie | None = None

    @property
    def needs_item_text(self) -> bool:
        return self.config.sid_source == "text"

    def set_item_text(self, texts: list[str]) -> None:
        self.item_text = list(texts)

    def fit(self, train, trainer, validate):
        self.sids = build_semantic_ids(SemanticIdConfig.of(self.config), self.n_items, train=train, texts=self.item_text)
        self.register_buffer("codes", torch.from_numpy(self.sids.codes))  # [n_items + 1, D]
        self.trie = SidTrie.from_codes(self.sids.codes, self.sids.vocab_sizes)
        self.build_network(self.sids.vocab_sizes)
        return trainer.fit(self, train, validate)

    @abc.abstractmethod
    def build_network(self, vocab_sizes: tuple[int, ...]) -> None:
        """Create the network's layers, now that the number of digits and codebook sizes are known."""

    def training_batches(self, train: Sequences, batching: Batching, rng):
        return history_target_batches(train, self.config.max_len, self.config.targets_per_user, batching, rng)

    def report(self) -> dict:
        sids = {f"sid_{key}": value for key, value in self.sids.report.items()} if self.sids else {}
        return {**sids, "list_length": self.config.beam_size}  # the longest list generate returns

    def trie_on(self, device) -> SidTrie:
        if self.trie.device != torch.device(device):
            self.trie = self.trie.to(device)
        return self.trie


def encoder_stack(config) -> nn.TransformerEncoder:
    """Pre-norm bidirectional Transformer layers with the final layer norm that pre-norm stacks need."""
    layer = nn.TransformerEncoderLayer(config.hidden_size, config.n_heads, config.ffn_size, config.dropout,
                                       batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, config.n_blocks, norm=nn.LayerNorm(config.hidden_size), enable_nested_tensor=False)
