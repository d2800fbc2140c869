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

A masked-diffusion decoder may commit digits in any order (by confidence, as
DiffGM and MaDRec do): ``SidTable`` indexes the valid SIDs by every set of
committed digits and ``masked_beam_search`` is the beam search over such
partial codes.
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


# ---------------------------------------------------------------- any-order decoding (masked diffusion)

#: predict(values [B, W, D] committed digit values (0 where masked), known [B, W, D] bool) -> one [B, W, V_d] log-prob tensor per digit
MaskedPredictor = Callable[[torch.Tensor, torch.Tensor], list[torch.Tensor]]

#: digit orders of ``masked_beam_search``
ORDERS = ("fixed", "confidence", "joint")


class SidTable:
    """The valid SIDs indexed by every partial code: which items agree with a set of committed digits at any positions.

    A masked-diffusion decoder that unmasks digits by confidence commits them
    in any order, so a partial code is not a prefix and the prefix trie does
    not apply. Here every distinct (digit subset S, values on S) that some
    item has is a node, numbered globally (node 0: nothing committed, every
    item). ``children(node, digit)`` gives, for each value of a digit not yet
    in the node's subset, the node reached (-1: no item has those digits), so
    a beam extension is valid exactly when some item matches every committed
    digit. A node of the full subset is one item (``node_item``).

    Sizes: at most 2^D x n_items nodes and D 2^(D-1) x n_items transitions
    (12k items with codes 3 x 256 + 1: 92 k nodes and 253 k transitions,
    built in about a second); ``max_digits`` guards against long codes, for
    which the table would be huge.
    """

    max_digits = 10

    def __init__(self, item_nodes, subset, size, first, values, targets, node_item, vocab_sizes):
        self.item_nodes = item_nodes  # [n_items + 1, 2^D] int32 node of each item under each digit subset; row 0 (padding): -1
        self.subset = subset  # [nodes] bitmask of the committed digits
        self.size = size  # [nodes] number of items below the node
        # the children of node n by digit d are entries first[n * D + d] .. first[n * D + d + 1] - 1: (value, child node)
        self.first, self.values, self.targets = first, values, targets
        self.node_item = node_item  # [nodes] item id of a full-code node, else 0
        self.vocab_sizes = tuple(vocab_sizes)

    @classmethod
    def from_codes(cls, codes: np.ndarray, vocab_sizes: Sequence[int]) -> "SidTable":
        """codes: [n_items + 1, D] int SIDs, row i = item i (row 0, padding, is left out)."""
        items = np.asarray(codes, dtype=np.int64)[1:]
        n_items, n_digits = items.shape
        if n_digits > cls.max_digits:
            raise ValueError(f"any-order decoding indexes all 2^D digit subsets; D = {n_digits} > {cls.max_digits} is too long")
        if len(np.unique(items, axis=0)) != n_items:
            raise ValueError("two items share a SID; disambiguate the codes first")
        v_max = int(max(vocab_sizes))
        item_nodes = np.full((n_items + 1, 2**n_digits), -1, dtype=np.int64)
        subset, size, offset = [], [], 0
        for s in range(2**n_digits):
            columns = [d for d in range(n_digits) if s >> d & 1]
            if columns:
                _, local, counts = np.unique(items[:, columns], axis=0, return_inverse=True, return_counts=True)
                local = local.reshape(-1)
            else:
                local, counts = np.zeros(n_items, dtype=np.int64), np.array([n_items])
            item_nodes[1:, s] = offset + local
            subset.append(np.full(len(counts), s))
            size.append(counts)
            offset += len(counts)
        keys, targets = [], []
        for s in range(2**n_digits):
            for d in range(n_digits):
                if not s >> d & 1:
                    keys.append((item_nodes[1:, s] * n_digits + d) * v_max + items[:, d])
                    targets.append(item_nodes[1:, s | 1 << d])
        keys, unique = np.unique(np.concatenate(keys), return_index=True)  # sorted by (node, digit), then value
        first = np.searchsorted(keys, np.arange(offset * n_digits + 1) * v_max)
        node_item = np.zeros(offset, dtype=np.int64)
        node_item[item_nodes[1:, -1]] = np.arange(1, n_items + 1)
        return cls(torch.from_numpy(item_nodes.astype(np.int32)), torch.from_numpy(np.concatenate(subset)),
                   torch.from_numpy(np.concatenate(size)), torch.from_numpy(first), torch.from_numpy(keys % v_max),
                   torch.from_numpy(np.concatenate(targets)[unique]), torch.from_numpy(node_item), vocab_sizes)

    @property
    def n_digits(self) -> int:
        return len(self.vocab_sizes)

    @property
    def device(self) -> torch.device:
        return self.first.device

    def to(self, device) -> "SidTable":
        tensors = (self.item_nodes, self.subset, self.size, self.first, self.values, self.targets, self.node_item)
        return SidTable(*(t.to(device) for t in tensors), self.vocab_sizes)

    def entries(self, node: torch.Tensor, digit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The valid extensions of R (node, digit) pairs ([R] each; node -1 has none): (row [T], value [T], child node [T]).

        Only the children that exist are listed, so the cost follows the number of valid extensions, not R x V.
        A digit that the node already has has none.
        """
        group = node.clamp(min=0) * self.n_digits + digit
        start = self.first[group]
        count = torch.where(node >= 0, self.first[group + 1] - start, 0)
        row = torch.repeat_interleave(torch.arange(len(node), device=node.device), count)
        index = torch.arange(len(row), device=node.device) - torch.repeat_interleave(count.cumsum(0) - count, count) + start[row]
        return row, self.values[index], self.targets[index]

    def children(self, node: torch.Tensor, digit: int | torch.Tensor) -> torch.Tensor:
        """[..., V_max] the node reached from ``node`` by each value of ``digit`` (an int, or a tensor shaped like node); -1: none."""
        digit = torch.as_tensor(digit, device=node.device).expand_as(node)
        row, value, child = self.entries(node.reshape(-1), digit.reshape(-1))
        dense = torch.full((node.numel(), max(self.vocab_sizes)), -1, dtype=torch.long, device=node.device)
        dense[row, value] = child
        return dense.reshape(*node.shape, -1)

    def exhausted(self, child: torch.Tensor, batch_row: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
        """[T] True where every item below node ``child`` [T] is among row ``batch_row`` [T]'s ``excluded`` items.

        excluded: [B, L] item ids, 0 = padding; a repeated item counts once.
        """
        excluded = excluded.sort(dim=1).values
        repeat = torch.zeros_like(excluded, dtype=torch.bool)
        repeat[:, 1:] = excluded[:, 1:] == excluded[:, :-1]
        under = self.item_nodes[excluded.masked_fill(repeat, 0)]  # [B, L, 2^D]; padding's row is -1, never a node
        at_subset = under[batch_row, :, self.subset[child]]  # [T, L]: the row's excluded items' nodes on the child's digits
        seen = (at_subset == child.unsqueeze(1).int()).sum(1)
        return seen == self.size[child]


@torch.no_grad()
def masked_beam_search(table: SidTable, predict: MaskedPredictor, sizes: Sequence[int], batch_size: int, beam_size: int, k: int,
                       order: str = "confidence", digit_order: Sequence[int] | None = None,
                       exclude: torch.Tensor | None = None, constrained: bool = True, list_size: int | None = None) -> torch.Tensor:
    """[B, min(k, list_size)] int64 item ids ranked by beam score (summed digit log-probs); 0 = no item.

    Any-order beam search for masked diffusion: a beam is a partial code
    (digits committed at any positions). ``predict`` is called once per
    step with every beam's committed digits and returns log-probabilities
    for all digits; after the t-th call ``sizes[t]`` digits are committed
    (sum = D), one after another from that call's predictions, the beam
    pruned to ``beam_size`` after each. Which digit a beam commits (``order``):

    - ``fixed``: ``digit_order[j]`` is the j-th digit committed, the same for
      every beam (code order is 0, 1, ..., D - 1);
    - ``confidence``: each beam commits its most confident masked digit, the
      one whose best allowed value has the highest log-probability, and the
      beam then ranges over that digit's values (MaDRec's ``top-prob``
      unmasking);
    - ``joint``: the candidates are every (beam, masked digit, value), the
      best ``beam_size`` of them kept, so a beam may be extended at several
      digits (DiffGM's confidence beam, ``beam.iterative_mask_decode``).

    Beams that reach the same partial code in different orders are merged,
    the best score kept, so finished beams are distinct items. Two beams
    with different digits committed can still complete to the same item, so
    the finished beam may hold fewer than ``beam_size`` items; a beam wider
    than the list (``list_size`` < ``beam_size``, as DiffGM's ``beam_act``
    of 32 to 256 for 10 items) fills the list.

    ``constrained``: every extension keeps some item that matches all
    committed digits (``SidTable``), and with ``exclude`` ([B, L] item ids,
    0 = padding) some item not excluded, so the list is as full as without
    the exclusion. ``constrained=False`` is the sources' unconstrained beam:
    full codes that are no item, and excluded items, are dropped at the end
    (DiffGM's legality check), which can leave the list short.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got '{order}'")
    device, n_digits = table.device, table.n_digits
    if sum(sizes) != n_digits or min(sizes) < 1:
        raise ValueError(f"sizes {list(sizes)} must be positive and sum to the {n_digits} digits")
    if order == "fixed" and sorted(digit_order or []) != list(range(n_digits)):
        raise ValueError(f"fixed order needs digit_order, a permutation of 0..{n_digits - 1}")
    radix = np.cumprod([1] + [v + 1 for v in table.vocab_sizes[:-1]])
    if radix[-1] * (table.vocab_sizes[-1] + 1) >= 2**62:
        raise ValueError("codes too long to key partial codes in int64")
    radix = torch.from_numpy(radix).to(device)  # key of a partial code: sum over committed digits of (value + 1) * radix
    v_max = max(table.vocab_sizes)
    in_codebook = torch.arange(v_max, device=device) < torch.tensor(table.vocab_sizes, device=device).unsqueeze(-1)  # [D, V]
    node = torch.zeros(batch_size, 1, dtype=torch.long, device=device)  # [B, W]; -1 = no item matches (unconstrained) or dead
    score = torch.zeros(batch_size, 1, device=device)
    key = torch.zeros(batch_size, 1, dtype=torch.long, device=device)
    values = torch.zeros(batch_size, 1, n_digits, dtype=torch.long, device=device)
    known = torch.zeros(batch_size, 1, n_digits, dtype=torch.bool, device=device)
    committed = 0
    for size in sizes:
        log_probs = torch.stack([torch.nn.functional.pad(rows.float(), (0, v_max - rows.shape[-1]), value=-torch.inf)
                                 for rows in predict(values, known)], dim=2).flatten(1, 2)  # [B, W0 * D, V]
        source = torch.arange(node.shape[1], device=device).expand(batch_size, -1)  # [B, W]: the beam each one's prediction came from
        for _ in range(size):
            width, n_open = node.shape[1], 1 if order == "fixed" else n_digits - committed
            # the digits a beam may commit now, [B, W, M]: every beam has the same number still masked
            if order == "fixed":
                open_digits = torch.full((batch_size, width, 1), digit_order[committed], dtype=torch.long, device=device)
            else:
                open_digits = known.int().argsort(dim=2, stable=True)[..., :n_open]
            rows_used = (source.unsqueeze(-1) * n_digits + open_digits).reshape(batch_size, -1, 1).expand(-1, -1, v_max)
            gain = log_probs.gather(1, rows_used).view(batch_size, width, n_open, v_max)  # [B, W, M, V]
            slots = (node >= 0).unsqueeze(-1).expand(-1, -1, n_open).reshape(-1).nonzero().squeeze(1)  # live nodes' lookups only
            row, value, child = table.entries(node.unsqueeze(-1).expand(-1, -1, n_open).reshape(-1)[slots],
                                              open_digits.reshape(-1)[slots])
            row = slots[row]  # flat (b, w, m) of each existing child
            if constrained and exclude is not None:
                keep = ~table.exhausted(child, row // (width * n_open), exclude)
                row, value, child = row[keep], value[keep], child[keep]
            children = torch.full((batch_size * width * n_open, v_max), -1, dtype=torch.long, device=device)
            children[row, value] = child
            children = children.view(batch_size, width, n_open, v_max)  # -1: no item (or only excluded ones) that way
            if constrained:
                gain = gain.masked_fill(children < 0, -torch.inf)
            else:
                gain = gain.masked_fill(~in_codebook[open_digits], -torch.inf)
            if order == "confidence":
                chosen = gain.amax(-1).argmax(-1, keepdim=True)  # [B, W, 1]: the beam's most confident masked digit
                gain = gain.masked_fill((torch.arange(n_open, device=device) != chosen).unsqueeze(-1), -torch.inf)
            candidates = (score.view(batch_size, width, 1, 1) + gain).reshape(batch_size, -1)
            # A code of committed + 1 digits has at most committed + 1 parents (drop one digit), each in the beam once:
            # the best (committed + 1) * beam_size candidates hold the best beam_size distinct codes.
            pool = min(beam_size if order == "fixed" else (committed + 1) * beam_size, candidates.shape[1])
            top, flat = candidates.topk(pool, dim=1)
            parent, value = flat // (n_open * v_max), flat % v_max
            digit = open_digits.reshape(batch_size, -1).gather(1, flat // v_max)
            new_key = key.gather(1, parent) + (value + 1) * radix[digit]
            if order != "fixed":  # merge: a candidate whose code a better one has is dropped
                by_key = new_key.argsort(dim=1, stable=True)  # stable: within a code, best first (top is sorted)
                sorted_keys = new_key.gather(1, by_key)
                repeat = torch.zeros_like(top, dtype=torch.bool)
                repeat[:, 1:] = sorted_keys[:, 1:] == sorted_keys[:, :-1]
                top = top.masked_fill(torch.zeros_like(repeat).scatter(1, by_key, repeat), -torch.inf)
            score, pick = top.topk(min(beam_size, pool), dim=1)
            parent, digit, value, flat, key = (t.gather(1, pick) for t in (parent, digit, value, flat, new_key))
            dead = torch.isinf(score)  # no allowed candidate was left for this slot
            node = children.reshape(batch_size, -1).gather(1, flat).masked_fill(dead, -1)
            value = value.masked_fill(dead, 0)  # a dead slot's value is arbitrary: keep it a valid token
            rows = parent.unsqueeze(-1).expand(-1, -1, n_digits)
            values = values.gather(1, rows).scatter(2, digit.unsqueeze(-1), value.unsqueeze(-1))
            known = known.gather(1, rows).scatter(2, digit.unsqueeze(-1), True)
            source = source.gather(1, parent)  # the step's predictions serve its next digit too
            committed += 1
    items = torch.where(node >= 0, table.node_item[node.clamp(min=0)], 0)
    if exclude is not None and not constrained:
        items = items.masked_fill((items.unsqueeze(-1) == exclude.to(device).unsqueeze(1)).any(-1), 0)
    items = items.gather(1, (items == 0).int().argsort(dim=1, stable=True))  # items first, best first; empty slots last
    width = min(k, list_size or beam_size)
    return torch.nn.functional.pad(items[:, :width], (0, width - min(width, items.shape[1])))
