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
- ``sequential``: m ~ U{1..D} and the *last* m digits masked, p = m / D:
  exactly the states that code-order inference visits;
- ``subset``: m ~ U{1..D} digits masked, a uniformly random set of them,
  p = m / D: the states of DiffGM's ``sequential`` views (DiffGM
  ``model.forward``: digits revealed in a random order per example), i.e.
  every state any-order inference can visit;
- ``guided``: m ~ U{1..D}, and the m digits the model is *least* sure of
  are masked (``guided_select: most``: the most sure), confidence being each
  digit's top probability with all target digits masked, dropout off
  (DiffGM's ``guided`` views, ``msp``, not refreshed): the states that
  confidence-ordered inference visits.
With p = m / D the 1/p weight makes the loss the per-example mean of the
masked digits' cross-entropy (DiffGM averages over all masked digits of the
batch). ``mask_views`` copies of each example, each with its own mask, go
into one batch (DiffGM's ``augment_factor``); ``label_smoothing`` (DiffGM:
0.1) smooths the cross-entropy.

Inference: all target digits start masked; over ``steps`` denoising steps
(1 = every digit in one parallel prediction, D = one digit per step)
``len(group)`` digits of ``digit_groups(D, steps)`` are committed per step,
digits committed in one step sharing its prediction. Which digits
(``unmasking``):
- ``code_order`` (default): in code order, which for residual codes is coarse
  to fine; the beam is checked against the prefix trie
  (``constrained_beam_search``);
- ``confidence``: each beam commits its most confident masked digit, the one
  whose best valid value is most probable, and the beam then ranges over that
  digit's values (MaDRec's ``top-prob`` unmasking, GRID-based
  ``DiscreteDiffusionModule.get_expanded_candidates``);
- ``joint``: every (beam, masked digit, value) is a candidate and the best
  ``beam_size`` are kept, the digit chosen together with its value (DiffGM's
  ``confidence`` beam, ``beam.iterative_mask_decode``);
- ``random_order``: one random permutation of the digits (seed
  ``random_order_seed``) for every user (DiffGM's ``random`` beam mode).
The any-order modes keep a beam of partial codes at arbitrary digit
positions, checked against ``SidTable`` (an extension is valid iff some item
has every committed digit); beams reaching one code in two orders are
merged. Finished beams are real, distinct items; ranked by summed
log-probability they are the top-K list (at most ``beam_size`` items;
metrics at larger K are not measured). Two different partial codes can end
in the same item, so an any-order beam can finish with fewer items than
``beam_size``: ``beam_act`` > ``beam_size`` decodes with a wider beam and
returns the best ``beam_size`` (DiffGM decodes with ``beam_act`` 32 to 256
for 10 items). ``constrained: false`` is the sources' own unconstrained
beam: codes that are no item are dropped at the end (DiffGM's legality
check; MaDRec instead projects them onto the closest code), so the list can
be short. With ``exclude_seen`` the constrained beam never keeps a partial
code that leads only to the user's own items, so the list is filled with
unseen items (as TIGER's). ``steps`` is a run-time knob: a suite's
``steps_sweep`` tests one trained model at several step counts.
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
from bench.models.sid_decoding import SidTable, constrained_beam_search, digit_groups, masked_beam_search
from bench.models.semantic_ids import SemanticIdConfig

MASKINGS = ("random", "fixed", "sequential", "subset", "guided")
UNMASKINGS = ("code_order", "confidence", "joint", "random_order")


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
    guided_select: str = "least"  # guided: mask the least (or most) confident digits
    mask_views: int = 1  # masked copies of each training example per batch (DiffGM's augment_factor)
    label_smoothing: float = 0.0  # of the masked digits' cross-entropy (DiffGM: 0.1)
    steps: int = 4  # denoising steps, 1..levels + 1
    unmasking: str = "code_order"  # which digits a step commits: code_order, confidence, joint, random_order
    random_order_seed: int = 0  # random_order: seed of the one digit permutation used for every user
    constrained: bool = True  # False: unconstrained beam, codes that are no item dropped at the end (the sources')
    beam_act: int = 0  # beam width while decoding, >= beam_size (DiffGM's beam_act); 0 = beam_size
    beam_size: int = 20  # items in the list (and the beam width unless beam_act)
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
        if self.guided_select not in ("least", "most"):
            raise DrbenchError(f"sid_diffusion guided_select must be least or most, got '{self.guided_select}'")
        if self.mask_views < 1 or not 0.0 <= self.label_smoothing < 1.0:
            raise DrbenchError(f"sid_diffusion mask_views must be >= 1 and label_smoothing in [0, 1), "
                               f"got {self.mask_views} and {self.label_smoothing}")
        if self.unmasking not in UNMASKINGS:
            raise DrbenchError(f"sid_diffusion unmasking must be one of {', '.join(UNMASKINGS)}, got '{self.unmasking}'")
        if self.beam_act and self.beam_act < self.beam_size:
            raise DrbenchError(f"sid_diffusion beam_act ({self.beam_act}) must be 0 (= beam_size) or at least beam_size ({self.beam_size})")
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
        """(masked [B, D] bool, p [B]) drawn by the configured masking scheme.

        For ``guided`` the row only says how many digits to mask (its first
        m): which ones is decided in ``loss`` from the model's confidence.
        """
        c = self.config
        if c.masking in ("sequential", "subset", "guided"):
            n_masked = rng.integers(1, n_digits + 1, size=batch_size)
            if c.masking == "subset":  # a uniformly random set of n_masked digits: rank of a random key below n_masked
                masked = rng.random((batch_size, n_digits)).argsort(axis=1).argsort(axis=1) < n_masked[:, None]
            elif c.masking == "guided":
                masked = np.arange(n_digits)[None] < n_masked[:, None]
            else:
                masked = np.arange(n_digits)[None] >= (n_digits - n_masked)[:, None]
            return masked, n_masked / n_digits
        if c.masking == "fixed":
            p = rng.choice(np.asarray(c.mask_probs), size=batch_size)
        else:
            p = (1.0 - c.eps) * rng.random(batch_size) + c.eps
        return rng.random((batch_size, n_digits)) < p[:, None], p

    def training_batches(self, train, batching, rng):
        views = self.config.mask_views
        for batch in super().training_batches(train, batching, rng):
            if views > 1:
                batch = {name: rows.repeat(views, *([1] * (rows.dim() - 1))) for name, rows in batch.items()}
            masked, p = self.masking_rates(len(batch["targets"]), self.sids.n_digits, rng)
            yield {**batch, "masked": torch.from_numpy(masked), "p_mask": torch.from_numpy(p.astype(np.float32))}

    @torch.no_grad()
    def confidence_order(self, histories: torch.Tensor) -> torch.Tensor:
        """[B, D] the target's digits from least to most confident (``guided_select: most``: most first).

        Confidence = the top probability of each digit predicted with every
        target digit masked, dropout off (DiffGM's guided views, metric
        ``msp``, not refreshed per step).
        """
        training = self.training
        self.eval()
        try:
            n_digits = self.sids.n_digits
            states = self.target_states(histories, torch.full((len(histories), n_digits), MASK, device=histories.device))
            confidence = torch.stack([self.embedding.digit_logits(states[:, digit], digit).float().softmax(-1).amax(-1)
                                      for digit in range(n_digits)], dim=1)
        finally:
            self.train(training)
        return confidence.argsort(dim=1, descending=self.config.guided_select == "most")

    def loss(self, batch: dict) -> torch.Tensor:
        target = self.codes[batch["targets"]]  # [B, D]
        masked = batch["masked"]
        if self.config.masking == "guided":  # mask the first m digits of the confidence order
            masked = torch.zeros_like(masked).scatter(1, self.confidence_order(batch["histories"]), masked)
        tokens = self.embedding.digit_tokens(target).masked_fill(masked, MASK)
        states = self.target_states(batch["histories"], tokens)  # [B, D, d]
        total = states.sum() * 0.0  # keeps the graph valid when nothing is masked
        for digit in range(target.shape[1]):
            rows = masked[:, digit]
            if rows.any():
                cross_entropy = F.cross_entropy(self.embedding.digit_logits(states[rows, digit], digit), target[rows, digit],
                                                reduction="none", label_smoothing=self.config.label_smoothing)
                total = total + (cross_entropy / batch["p_mask"][rows]).sum()
        return total / target.numel()

    def table_on(self, device) -> SidTable:
        """The valid SIDs indexed by any set of committed digits (built at the first any-order decoding)."""
        if getattr(self, "table", None) is None:
            self.table = SidTable.from_codes(self.sids.codes, self.sids.vocab_sizes)
        if self.table.device != torch.device(device):
            self.table = self.table.to(device)
        return self.table

    @torch.no_grad()
    def generate(self, histories: torch.Tensor, k: int, exclude_seen: bool = False) -> torch.Tensor:
        """[B, min(k, beam_size)] items, best first: ``steps`` unmasking steps with a constrained beam.

        With ``exclude_seen`` no item of the row's history is produced (the beam is filled with unseen ones).
        """
        c = self.config
        n_digits, batch = self.sids.n_digits, len(histories)
        exclude = histories if exclude_seen else None
        groups = digit_groups(n_digits, c.steps)
        if c.unmasking == "code_order" and c.constrained and c.beam_act in (0, c.beam_size):
            def predict(prefix, digits):
                width, known = prefix.shape[1], prefix.shape[2]
                prefix = prefix.reshape(batch * width, known)
                tokens = torch.cat([self.embedding.digit_tokens(prefix),
                                    torch.full((batch * width, n_digits - known), MASK, device=prefix.device)], dim=1)
                states = self.target_states(histories.repeat_interleave(width, dim=0), tokens)
                return [self.embedding.digit_logits(states[:, digit], digit).log_softmax(-1).reshape(batch, width, -1)
                        for digit in digits]

            return constrained_beam_search(self.trie_on(histories.device), predict, groups, batch, c.beam_size, k, exclude=exclude)

        def predict_all(values, known):
            width = values.shape[1]
            tokens = self.embedding.digit_tokens(values).masked_fill(~known, MASK).reshape(batch * width, n_digits)
            states = self.target_states(histories.repeat_interleave(width, dim=0), tokens)
            return [self.embedding.digit_logits(states[:, digit], digit).log_softmax(-1).reshape(batch, width, -1)
                    for digit in range(n_digits)]

        order, digit_order = {"code_order": ("fixed", list(range(n_digits))),
                              "random_order": ("fixed", np.random.default_rng(c.random_order_seed).permutation(n_digits).tolist()),
                              }.get(c.unmasking, (c.unmasking, None))
        return masked_beam_search(self.table_on(histories.device), predict_all, [len(group) for group in groups], batch,
                                  max(c.beam_act, c.beam_size), k, order=order, digit_order=digit_order, exclude=exclude,
                                  constrained=c.constrained, list_size=c.beam_size)
