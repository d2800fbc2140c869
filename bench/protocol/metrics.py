"""Ranking metrics for next-item prediction with one target per user.

Everything is derived from the 1-based rank of the target item. A target
that cannot be ranked (excluded, or absent from a generated top-K list)
gets rank ``n_items + 1``: a miss at every cut-off.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch


def ranks_from_scores(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pessimistic 1-based rank of each target among all scored items.

    scores:  [B, n_items + 1] float, column = item id; column 0 (padding) and
             excluded items must already be ``-inf``.
    targets: [B] int64 item ids.

    Ties count against the target: rank = number of items scoring at least as
    high as the target (the target included). A model that scores everything
    equal therefore gets the worst rank, never the best.
    """
    n_items = scores.shape[1] - 1
    target_scores = scores.gather(1, targets[:, None])  # [B, 1]
    ranks = torch.count_nonzero(scores >= target_scores, dim=1)  # count_nonzero: no int64 copy of the [B, n_items] mask
    unrankable = torch.isneginf(target_scores[:, 0])
    return torch.where(unrankable, torch.full_like(ranks, n_items + 1), ranks)


def ranks_from_lists(top_items: torch.Tensor, targets: torch.Tensor, n_items: int) -> torch.Tensor:
    """1-based position of each target in a ranked list; ``n_items + 1`` if absent.

    top_items: [B, K] int64 ranked item ids (0 = empty slot, for lists shorter than K).
    """
    hits = (top_items == targets[:, None]) & (top_items > 0)
    first = hits.int().argmax(dim=1) + 1
    return torch.where(hits.any(dim=1), first, torch.full_like(first, n_items + 1))


def per_user_metrics(ranks: np.ndarray, ks: Iterable[int]) -> dict[str, np.ndarray]:
    """HR@K, NDCG@K and MRR@K for every user, from target ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        hit = ranks <= k
        out[f"hr@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0)
        out[f"mrr@{k}"] = np.where(hit, 1.0 / ranks, 0.0)
    return out


def coverage(top_items: np.ndarray, k: int, n_items: int) -> float:
    """Distinct items in all users' top-k lists, as a share of the catalogue.

    top_items: [U, >=k] ranked item ids; 0 marks an empty slot and is not an item.
    """
    recommended = np.unique(top_items[:, :k])
    return float(np.count_nonzero(recommended)) / n_items


def summarize(ranks: np.ndarray, top_items: np.ndarray, ks: Iterable[int], n_items: int,
              list_length: int | None = None) -> dict[str, float]:
    """Mean of every per-user metric, plus coverage@K.

    ``list_length``: the length of generated top-K lists (None = full
    ranking). A cut-off beyond it is not measured: its HR, NDCG, MRR and
    coverage are NaN rather than misses of items the model never listed.
    """
    ks = list(ks)
    summary = {name: float(values.mean()) for name, values in per_user_metrics(ranks, ks).items()}
    for k in ks:
        summary[f"coverage@{k}"] = coverage(top_items, k, n_items)
    if list_length is not None:
        for k in ks:
            if k > list_length:
                for metric in ("hr", "ndcg", "mrr", "coverage"):
                    summary[f"{metric}@{k}"] = float("nan")
    return summary
