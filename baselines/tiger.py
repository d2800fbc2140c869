"""TIGER: generative retrieval that decodes the next item's semantic ID autoregressively.

Rajput et al., "Recommender Systems with Generative Retrieval", NeurIPS 2023.
Items are semantic IDs (``datasets.semantic_ids``: RQ-KMeans, PQ or OPQ
codes of text or collaborative vectors, plus TIGER's disambiguation digit).
A Transformer encoder reads the history as the flattened digits of its last
``max_len`` items (one token per (digit position, value), so every codebook
has its own tokens, plus item-position and digit-position embeddings); a
Transformer decoder emits the target's digits one by one, each scored
against the tied embeddings of its own codebook, trained by cross-entropy on
every digit with teacher forcing. Training examples are every (prefix,
next item) pair of the training sequences (``targets_per_user`` keeps only
each user's most recent targets, to bound the epoch on long MovieLens
histories).

Inference is beam search (``beam_size``, 20 as the paper) constrained by a
prefix trie of the existing SIDs (``bench.sid_decoding``): every beam is a
real item, and the ranked beams are the top-K list (at most ``beam_size``
items; metrics at K > beam_size are not measured, NaN). With the history
excluded (``exclude_seen``) prefixes that lead only to the user's items are
pruned during the search, so the list is still full with unseen items.

Differences from the paper: the SIDs come from k-means quantizers instead
of an RQ-VAE (the paper's own ablation also reports RQ-KMeans); the encoder
gets no hashed user-id token (the harness hands models histories, not user
ids); the backbone is torch's pre-norm Transformer instead of T5, at the
paper's sizes by default (4 + 4 layers, hidden 128, MLP 1024, dropout 0.1).

The SID pieces shared with ``diffusion/sid_diffusion.py`` live here too:
``SidRecommender`` (item texts, building the SIDs at the start of ``fit``,
training examples, the report) and ``SidEmbedding``.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baselines.sasrec import check_transformer_shape, init_weights, shuffled_batches
from bench.errors import DrbenchError
from bench.models import NeuralRecommender, register_model
from bench.sid_decoding import SidTrie, constrained_beam_search
from datasets.semantic_ids import SemanticIdConfig, SemanticIds, build_semantic_ids
from datasets.sequences import Sequences

PAD, START, MASK = 0, 1, 2  # special tokens; digit tokens follow
N_SPECIAL = 3


@dataclass
class TigerConfig(SemanticIdConfig):
    max_len: int = 20  # history items (each becomes levels + 1 tokens)
    hidden_size: int = 128
    n_blocks: int = 4  # encoder layers, and as many decoder layers
    n_heads: int = 4
    ffn_size: int = 1024
    dropout: float = 0.1
    beam_size: int = 20
    targets_per_user: int = 0  # 0 = every position of every training sequence

    def validate(self):
        super().validate()
        check_transformer_shape("tiger", 1, self)
        check_generation(self)


def check_generation(config) -> None:
    """Checks shared by the SID generators' configs."""
    if config.ffn_size < 1 or config.beam_size < 1:
        raise DrbenchError(f"ffn_size and beam_size must be >= 1, got {config.ffn_size} and {config.beam_size}")
    if config.targets_per_user < 0:
        raise DrbenchError(f"targets_per_user must be >= 0 (0 = all), got {config.targets_per_user}")


def history_target_batches(train: Sequences, max_len: int, targets_per_user: int, batch_size: int, rng):
    """Shuffled batches of every (last ``max_len`` items before t, item t) pair, t >= 1 of each training row.

    With ``targets_per_user`` > 0 only each row's last that many targets are
    used. Yields {"histories": [B, max_len] left-padded int64, "targets": [B] int64}.
    """
    rows = train.row_ids()
    starts = train.offsets[rows]  # flat index where each value's row starts
    position = np.arange(train.nnz) - starts
    keep = position >= 1
    if targets_per_user:
        keep &= position >= train.lengths[rows] - targets_per_user
    for targets in shuffled_batches(np.flatnonzero(keep), batch_size, rng):
        window = targets[:, None] - max_len + np.arange(max_len)  # [B, max_len] flat indices before the target
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

    def training_batches(self, train: Sequences, batch_size: int, rng):
        return history_target_batches(train, self.config.max_len, self.config.targets_per_user, batch_size, rng)

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


@register_model("tiger", TigerConfig, family_defaults={"movielens": {"max_len": 50}, "amazon": {"max_len": 20}})
class Tiger(SidRecommender):
    def build_network(self, vocab_sizes):
        c = self.config
        self.embedding = SidEmbedding(vocab_sizes, c.max_len, c.hidden_size, c.dropout)
        self.encoder = encoder_stack(c)
        layer = nn.TransformerDecoderLayer(c.hidden_size, c.n_heads, c.ffn_size, c.dropout, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, c.n_blocks, norm=nn.LayerNorm(c.hidden_size))
        init_weights(self)

    def encode(self, histories: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory [B, 1 + L * D, d] and its padding mask: a start token (never padding, so no row is empty) and the history digits."""
        batch = len(histories)
        start = self.embedding(torch.full((batch, 1), START, device=histories.device),
                               torch.full((batch, 1), self.config.max_len, device=histories.device),
                               torch.full((batch, 1), self.embedding.n_digits, device=histories.device))
        digits, padding = self.embedding.history(self.codes, histories)
        padding = F.pad(padding, (1, 0), value=False)
        return self.encoder(torch.cat([start, digits], dim=1), src_key_padding_mask=padding), padding

    def decode(self, prefix: torch.Tensor, memory: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """States [N, d + 1, d_model] of the decoder fed [START, digits of prefix [N, d]]; state j predicts digit j."""
        n, length = prefix.shape[0], prefix.shape[1] + 1
        tokens = torch.cat([torch.full((n, 1), START, device=prefix.device), self.embedding.digit_tokens(prefix)], dim=1)
        digit_position = torch.cat([torch.tensor([self.embedding.n_digits], device=prefix.device),
                                    torch.arange(length - 1, device=prefix.device)])
        x = self.embedding(tokens, torch.full_like(tokens, self.config.max_len), digit_position.expand(n, -1))
        causal = torch.ones(length, length, dtype=torch.bool, device=prefix.device).triu(1)  # True = may not attend
        return self.decoder(x, memory, tgt_mask=causal, memory_key_padding_mask=padding)

    def loss(self, batch: dict) -> torch.Tensor:
        memory, padding = self.encode(batch["histories"])
        target = self.codes[batch["targets"]]  # [B, D]
        states = self.decode(target[:, :-1], memory, padding)  # teacher forcing: [B, D, d]
        return torch.stack([F.cross_entropy(self.embedding.digit_logits(states[:, digit], digit), target[:, digit])
                            for digit in range(target.shape[1])]).mean()

    @torch.no_grad()
    def generate(self, histories: torch.Tensor, k: int, exclude_seen: bool = False) -> torch.Tensor:
        """[B, min(k, beam_size)] items, best first, from a trie-constrained beam search over SIDs.

        With ``exclude_seen`` no item of the row's history is produced (the beam is filled with unseen ones).
        """
        memory, padding = self.encode(histories)
        batch = len(histories)

        def predict(prefix, digits):
            width = prefix.shape[1]  # beams per user
            states = self.decode(prefix.reshape(batch * width, prefix.shape[2]),
                                 memory.repeat_interleave(width, dim=0), padding.repeat_interleave(width, dim=0))
            logits = self.embedding.digit_logits(states[:, -1], digits[0])
            return [logits.log_softmax(-1).reshape(batch, width, -1)]

        trie = self.trie_on(histories.device)
        return constrained_beam_search(trie, predict, [[d] for d in range(trie.n_digits)], batch, self.config.beam_size, k,
                                       exclude=histories if exclude_seen else None)
