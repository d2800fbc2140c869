"""Masked (absorbing-state) diffusion over the next item's semantic ID, as DiffGM and MaDRec.

Items are semantic IDs (``datasets.semantic_ids``, the same builder and
config fields as TIGER). One bidirectional Transformer reads the history's
SID digits (as TIGER's encoder: one token per (digit position, value),
item-position and digit-position embeddings) followed by the target's
``D = levels + 1`` digits, some or all of them replaced by ``[MASK]``, and
predicts every masked digit against the tied embeddings of its codebook.
The history is always clean context; only the target is noised.

Training (``masking``): per example a masking rate p, every target digit
masked independently with probability p, loss = cross-entropy of the masked
digits weighted by 1/p, summed and divided by B x D (the LLaDA objective;
an example whose draw masks nothing contributes nothing):
- ``random``: p = (1 - eps) t + eps, t ~ U(0, 1) (LLaDA, as DiffSASRec);
- ``fixed``: p drawn uniformly from the list ``mask_probs`` (DiffGM's fixed
  mask probabilities, which avoid the rare huge 1/p weights);
- ``sequential``: m ~ U{1..D} and the *last* m digits masked, p = m / D
  (DiffGM's sequential masking path): exactly the states that inference
  visits, since inference unmasks digits in code order.

Inference: all target digits start masked; over ``steps`` denoising steps
(1 = every digit in one parallel prediction, D = one digit per step) the
digits are unmasked in code order, in ``steps`` contiguous groups of
near-equal size, which for residual codes is coarse to fine. A beam of ``beam_size`` partial codes
is kept, each extension restricted to a prefix of an existing SID
(``bench.sid_decoding``): digits unmasked in the same step share one
prediction and are expanded one after the other through the trie. Finished
beams are real, distinct items; ranked by summed log-probability they are
the top-K list (at most ``beam_size`` items; metrics at larger K are not
measured). With ``exclude_seen`` the beam never keeps a prefix that leads
only to the user's own items, so the list is filled with unseen items (as
TIGER's). ``steps`` is a run-time knob:
a suite's ``steps_sweep`` tests one trained model at several step counts.

Unmasking in code order rather than by confidence is this implementation's
choice: it keeps every partial code checkable against the prefix trie.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bench.models.layers import check_transformer_shape, init_weights
from bench.models.sid_layers import MASK, SidEmbedding, SidRecommender, check_generation, encoder_stack
from bench.errors import DrbenchError
from bench.models.base import register_model
from bench.models.sid_decoding import constrained_beam_search, digit_groups
from bench.models.semantic_ids import SemanticIdConfig

MASKINGS = ("random", "fixed", "sequential")


@dataclass
class SidDiffusionConfig(SemanticIdConfig):
    max_len: int = 20  # history items (each becomes levels + 1 tokens)
    hidden_size: int = 128
    n_blocks: int = 4
    n_heads: int = 4
    ffn_size: int = 1024
    dropout: float = 0.1
    masking: str = "random"
    eps: float = 1e-3  # random: smallest masking rate
    mask_probs: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)  # fixed: the rates drawn from
    steps: int = 4  # denoising steps, 1..levels + 1
    beam_size: int = 20
    targets_per_user: int = 0  # 0 = every position of every training sequence

    def validate(self):
        super().validate()
        check_transformer_shape("sid_diffusion", 1, self)
        check_generation(self)
        if self.masking not in MASKINGS:
            raise DrbenchError(f"sid_diffusion masking must be one of {', '.join(MASKINGS)}, got '{self.masking}'")
        if not 0.0 < self.eps < 1.0:
            raise DrbenchError(f"sid_diffusion eps must be in (0, 1), got {self.eps}")
        if not self.mask_probs or not all(0.0 < p <= 1.0 for p in self.mask_probs):
            raise DrbenchError(f"sid_diffusion mask_probs must be a non-empty list of rates in (0, 1], got {list(self.mask_probs)}")
        if not 1 <= self.steps <= self.levels + 1:
            raise DrbenchError(f"sid_diffusion steps must be in [1, levels + 1 = {self.levels + 1}] (one digit per step at most), "
                               f"got {self.steps}")


@register_model("sid_diffusion", SidDiffusionConfig, family_defaults={"movielens": {"max_len": 50}, "amazon": {"max_len": 20}})
class SidDiffusion(SidRecommender):
    has_denoising_steps = True

    def build_network(self, vocab_sizes):
        c = self.config
        self.embedding = SidEmbedding(vocab_sizes, c.max_len, c.hidden_size, c.dropout)
        self.encoder = encoder_stack(c)
        init_weights(self)

    def target_states(self, histories: torch.Tensor, target_tokens: torch.Tensor) -> torch.Tensor:
        """States [N, D, d] at the target's digit slots; histories [N, L] items, target_tokens [N, D] (digit tokens or MASK)."""
        history, padding = self.embedding.history(self.codes, histories)
        n, n_digits = target_tokens.shape
        digit_position = torch.arange(n_digits, device=target_tokens.device).expand(n, -1)
        target = self.embedding(target_tokens, torch.full_like(target_tokens, self.config.max_len), digit_position)
        padding = F.pad(padding, (0, n_digits), value=False)
        return self.encoder(torch.cat([history, target], dim=1), src_key_padding_mask=padding)[:, -n_digits:]

    def masking_rates(self, batch_size: int, n_digits: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(masked [B, D] bool, p [B]) drawn by the configured masking scheme."""
        c = self.config
        if c.masking == "sequential":
            n_masked = rng.integers(1, n_digits + 1, size=batch_size)
            masked = np.arange(n_digits)[None] >= (n_digits - n_masked)[:, None]
            return masked, n_masked / n_digits
        if c.masking == "fixed":
            p = rng.choice(np.asarray(c.mask_probs), size=batch_size)
        else:
            p = (1.0 - c.eps) * rng.random(batch_size) + c.eps
        return rng.random((batch_size, n_digits)) < p[:, None], p

    def training_batches(self, train, batching, rng):
        for batch in super().training_batches(train, batching, rng):
            masked, p = self.masking_rates(len(batch["targets"]), self.sids.n_digits, rng)
            yield {**batch, "masked": torch.from_numpy(masked), "p_mask": torch.from_numpy(p.astype(np.float32))}

    def loss(self, batch: dict) -> torch.Tensor:
        target = self.codes[batch["targets"]]  # [B, D]
        masked = batch["masked"]
        tokens = self.embedding.digit_tokens(target).masked_fill(masked, MASK)
        states = self.target_states(batch["histories"], tokens)  # [B, D, d]
        total = states.sum() * 0.0  # keeps the graph valid when nothing is masked
        for digit in range(target.shape[1]):
            rows = masked[:, digit]
            if rows.any():
                cross_entropy = F.cross_entropy(self.embedding.digit_logits(states[rows, digit], digit), target[rows, digit],
                                                reduction="none")
                total = total + (cross_entropy / batch["p_mask"][rows]).sum()
        return total / target.numel()

    @torch.no_grad()
    def generate(self, histories: torch.Tensor, k: int, exclude_seen: bool = False) -> torch.Tensor:
        """[B, min(k, beam_size)] items, best first: ``steps`` unmasking steps with a trie-constrained beam.

        With ``exclude_seen`` no item of the row's history is produced (the beam is filled with unseen ones).
        """
        trie = self.trie_on(histories.device)
        n_digits, batch = trie.n_digits, len(histories)

        def predict(prefix, digits):
            width, known = prefix.shape[1], prefix.shape[2]
            prefix = prefix.reshape(batch * width, known)
            tokens = torch.cat([self.embedding.digit_tokens(prefix),
                                torch.full((batch * width, n_digits - known), MASK, device=prefix.device)], dim=1)
            states = self.target_states(histories.repeat_interleave(width, dim=0), tokens)
            return [self.embedding.digit_logits(states[:, digit], digit).log_softmax(-1).reshape(batch, width, -1)
                    for digit in digits]

        return constrained_beam_search(trie, predict, digit_groups(n_digits, self.config.steps), batch, self.config.beam_size, k,
                                       exclude=histories if exclude_seen else None)
