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

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.models.layers import check_transformer_shape, init_weights
from bench.models.base import register_model
from bench.models.sid_layers import START, SidEmbedding, SidRecommender, check_generation, encoder_stack
from bench.models.sid_decoding import constrained_beam_search
from bench.models.semantic_ids import SemanticIdConfig

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
