"""Decoding semantic IDs into real items: a prefix trie of the valid SIDs and a constrained beam search.

Generative models (TIGER, the SID masked diffusion) emit an item's SID digit
by digit. Restricting every digit to the children of the beam's trie node
guarantees that each finished beam is the SID of a real item; since SIDs are
one-to-one with items and beams are distinct prefixes, the ranked beams are
a top-K list without duplicates.

The beam search is shared: a model supplies ``predict(prefix, digits)``,
the log-probabilities of the next ``digits`` (one digit per call for an
autoregressive decoder, several at once for a diffusion step that unmasks
them in parallel) given each beam's committed prefix.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

#: predict(prefix [B, W, d] committed digits, digits: the positions to predict) -> one [B, W, V_digit] log-prob tensor per digit
Predictor = Callable[[torch.Tensor, Sequence[int]], list[torch.Tensor]]


class SidTrie:
    """The valid SIDs as per-digit child tables.

    ``children[d][node, value]`` is the node reached from a depth-``d`` node
    by digit ``value`` (-1: no SID continues that way). Depth-0 has the root
    only; a node at depth D (a full SID) is numbered by its item id.
    """

    def __init__(self, children: list[torch.Tensor]):
        self.children = children
        # parents[d][node] = the depth-d node above a depth-(d + 1) node (item 0, padding, has none: 0)
        self.parents = []
        for table in children:
            parent = torch.zeros(int(table.max()) + 1, dtype=torch.long, device=table.device)
            valid = table >= 0
            parent[table[valid]] = torch.arange(len(table), device=table.device).unsqueeze(1).expand_as(table)[valid]
            self.parents.append(parent)

    @classmethod
    def from_codes(cls, codes: np.ndarray, vocab_sizes: Sequence[int]) -> "SidTrie":
        """codes: [n_items + 1, D] int SIDs, row i = item i (row 0, padding, is left out)."""
        items = np.asarray(codes)[1:]
        if len(np.unique(items, axis=0)) != len(items):
            raise ValueError("two items share a SID; disambiguate the codes first")
        node = np.zeros(len(items), dtype=np.int64)  # every item starts at the root
        children = []
        for depth in range(items.shape[1]):
            if depth + 1 < items.shape[1]:
                _, child = np.unique(items[:, : depth + 1], axis=0, return_inverse=True)
                child = child.reshape(-1)
            else:
                child = np.arange(1, len(items) + 1)  # full SID -> item id
            table = np.full((int(node.max()) + 1, vocab_sizes[depth]), -1, dtype=np.int64)
            table[node, items[:, depth]] = child
            children.append(torch.from_numpy(table))
            node = child
        return cls(children)

    @property
    def n_digits(self) -> int:
        return len(self.children)

    @property
    def device(self) -> torch.device:
        return self.children[0].device

    def to(self, device) -> "SidTrie":
        return SidTrie([table.to(device) for table in self.children])

    def exhausted(self, histories: torch.Tensor) -> list[torch.Tensor]:
        """Per depth d + 1, [B, nodes] True where every item below the node is in that row's history.

        histories: [B, L] item ids, 0 = padding. Entry d answers for the
        nodes that ``children[d]`` leads to (the last entry: the items).
        """
        n_items = len(self.parents[-1]) - 1
        seen = torch.zeros(len(histories), n_items + 1, dtype=torch.bool, device=histories.device)
        seen.scatter_(1, histories.clamp(0, n_items), True)
        unseen = (~seen).int()
        unseen[:, 0] = 0  # padding is no item
        exhausted = [unseen == 0]
        for depth in range(self.n_digits - 1, 0, -1):  # count the unseen items below each node, level by level up
            unseen = torch.zeros(len(histories), len(self.children[depth]), dtype=torch.int, device=histories.device
                                 ).index_add_(1, self.parents[depth], unseen)
            exhausted.insert(0, unseen == 0)
        return exhausted


def digit_groups(n_digits: int, steps: int) -> list[list[int]]:
    """Digits 0..n_digits-1 in order, cut into ``steps`` contiguous groups of near-equal size (steps <= n_digits)."""
    return [group.tolist() for group in np.array_split(np.arange(n_digits), steps)]


@torch.no_grad()
def constrained_beam_search(trie: SidTrie, predict: Predictor, groups: list[list[int]], batch_size: int,
                            beam_size: int, k: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """[B, min(k, beam_size)] int64 item ids ranked by beam score (summed digit log-probs); 0 = no item.

    ``groups`` lists the digits predicted by each call of ``predict``, in
    order; digits of one group share that call's predictions and are then
    expanded one after another, the beam pruned to ``beam_size`` after each.

    ``exclude`` ([B, L] item ids, 0 = padding), e.g. the users' histories:
    those items are never produced. Every prefix whose items are all excluded
    is pruned at each digit, so each beam kept still leads to an allowed item
    and the list is as full as without the exclusion (unless fewer items are
    left): the search runs as on a trie without those items.
    """
    device = trie.device
    exhausted = trie.exhausted(exclude.to(device)) if exclude is not None else None
    node = torch.zeros(batch_size, 1, dtype=torch.long, device=device)  # [B, W]; -1 = dead beam
    score = torch.zeros(batch_size, 1, device=device)  # [B, W]
    prefix = torch.zeros(batch_size, 1, 0, dtype=torch.long, device=device)  # [B, W, d]
    for group in groups:
        log_probs = predict(prefix, group)
        for position, digit in enumerate(group):
            children = trie.children[digit][node.clamp(min=0)]  # [B, W, V]
            vocab = children.shape[-1]
            invalid = (children < 0) | (node < 0).unsqueeze(-1)
            if exhausted is not None:
                invalid |= exhausted[digit].gather(1, children.clamp(min=0).reshape(batch_size, -1)).reshape(children.shape)
            candidates = (score.unsqueeze(-1) + log_probs[position].float()).masked_fill(invalid, -torch.inf)
            score, flat_index = candidates.reshape(batch_size, -1).topk(min(beam_size, candidates[0].numel()), dim=1)
            parent = flat_index // vocab  # [B, W']
            node = children.reshape(batch_size, -1).gather(1, flat_index).masked_fill(torch.isinf(score), -1)
            prefix = torch.cat([prefix.gather(1, parent.unsqueeze(-1).expand(-1, -1, prefix.shape[2])),
                                (flat_index % vocab).unsqueeze(-1)], dim=2)
            log_probs = [rows.gather(1, parent.unsqueeze(-1).expand(-1, -1, rows.shape[2])) for rows in log_probs]
    return node.clamp(min=0)[:, :k]
