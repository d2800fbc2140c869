"""Full-ranking evaluation, identical for every model.

The evaluator feeds users' histories to ``model.score`` in batches, masks the
padding column (and, if the protocol asks, the items already in the user's
history), and turns the scores into target ranks and top-K lists. Scores are
never kept beyond one batch, so memory is bounded by
``batch_size x n_items`` floats whatever the number of users.

A model whose inference mode generates ranked lists (``generates_lists``,
e.g. multi-step diffusion decoding or beam search) is asked for its top-K
list instead; the target's rank is its position in the list, a target
absent from the list is a miss, and the same metric code runs on the ranks.
With the history excluded, such a model generates with
``generate(histories, k, exclude_seen=True)``: the user's items are never
candidates and the list is filled with the next best unseen items, as the
scoring path ranks the unseen items. A list shorter than the largest K
(``list_length``) leaves the metrics at larger K unmeasured (NaN), never
counted as misses.

Users are batched by history length (a stable sort on the length, capped at
``LENGTH_SORT_CAP``), so that each batch is left-padded only to its own
longest history rather than to the longest of a random group of users; the
ranks and lists are put back in the users' order. Every model gives a row the
same output whatever its padding and its batch
(``tests/models/test_padding_invariance.py``), so this changes no result
beyond float rounding, except DiffuRec's, whose inference noise depends on
the row's place in its batch (see that test).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.errors import DrbenchError
from bench.protocol.metrics import ranks_from_lists, ranks_from_scores, summarize
from bench.protocol.splits import EvalSet
from bench.data.sequences import Sequences


#: Histories at least this long sort as equal (and keep their order): every model cuts its input far
#: shorter (max_len is at most 200 in the suites), so sorting them further would save no model work.
LENGTH_SORT_CAP = 512


class TrialDiverged(DrbenchError):
    """A model produced non-finite numbers (loss or scores)."""


@dataclass
class EvalResult:
    ranks: np.ndarray  # int32 [U] 1-based target rank; n_items + 1 = not rankable
    top_items: np.ndarray  # int32 [U, max(ks)] ranked item ids
    metrics: dict[str, float]  # NaN at a K beyond list_length (not measured)
    list_length: int | None = None  # items per generated list; None = full ranking of the catalogue


def left_padded(histories: Sequences, rows: np.ndarray, max_len: int | None = None) -> torch.Tensor:
    """[len(rows), L] int64 tensor, most recent item last, 0-padded on the left."""
    seqs = [histories[int(r)] for r in rows]
    if max_len is not None:
        seqs = [s[-max_len:] for s in seqs]
    width = max(1, max((len(s) for s in seqs), default=1))
    batch = np.zeros((len(seqs), width), dtype=np.int64)
    for i, s in enumerate(seqs):
        if len(s):
            batch[i, width - len(s):] = s
    return torch.from_numpy(batch)


@torch.no_grad()
def evaluate(
    model,
    eval_set: EvalSet,
    n_items: int,
    ks=(5, 10, 20),
    exclude_history: bool = False,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    by_length: bool = True,
) -> EvalResult:
    """Rank every catalogue item for every user of ``eval_set``.

    With ``exclude_history`` the items in a user's input are removed from the
    ranking; a target that is itself in the history then counts as a miss
    (it is never put back, which would leak the target). A generator is asked
    to generate without them (``exclude_seen``), so its list stays full.

    ``by_length`` batches users of similar history length together (see the
    module docstring); ``False`` batches them in their order, as before
    (kept for comparisons such as ``bench/perf/eval_throughput.py``). The
    results are in the users' order either way.
    """
    ks = sorted(ks)
    if ks[-1] > n_items:
        raise DrbenchError(f"metric cut-off K={ks[-1]} is larger than the catalogue ({n_items} items); lower protocol.ks")
    model.eval()
    n_users = len(eval_set)
    ranks = np.zeros(n_users, dtype=np.int32)
    top_items = np.zeros((n_users, ks[-1]), dtype=np.int32)
    list_length = None
    order = length_order(eval_set.histories) if by_length else np.arange(n_users)
    for start in range(0, n_users, batch_size):
        rows = order[start : start + batch_size]
        histories = left_padded(eval_set.histories, rows).to(device)
        targets = torch.from_numpy(eval_set.targets[rows]).to(device)
        if generates_lists(model):
            generated = model.generate(histories, ks[-1], exclude_seen=True) if exclude_history else model.generate(histories, ks[-1])
            top = _checked_list(generated, len(rows), ks[-1], n_items)
            if exclude_history and _contains_seen(top, histories):
                raise RuntimeError("model generated an item of the user's history although exclude_seen was asked")
            list_length = min(ks[-1] if list_length is None else list_length, generated.shape[1])
            ranks[rows] = ranks_from_lists(top, targets, n_items).cpu().numpy()
            top_items[rows] = top.cpu().numpy()
            continue
        scores = model.score(histories).float()
        if scores.shape != (len(rows), n_items + 1):
            raise RuntimeError(f"model returned scores of shape {tuple(scores.shape)}, expected {(len(rows), n_items + 1)}")
        scores[:, 0] = 0.0  # the padding column is never checked (nor ranked): any finite value
        low, high = torch.aminmax(scores)  # one reduction, NaN-propagating: far cheaper than isfinite(...).all()
        if not (torch.isfinite(low) and torch.isfinite(high)):
            raise TrialDiverged("the model produced NaN or infinite scores; training diverged. Lower the learning rate or check the model config.")
        scores[:, 0] = -torch.inf
        if exclude_history:
            scores.scatter_(1, histories, -torch.inf)  # padding 0 maps to the already-masked column
        ranks[rows] = ranks_from_scores(scores, targets).cpu().numpy()
        top_items[rows] = torch.topk(scores, ks[-1], dim=1).indices.cpu().numpy()
    return EvalResult(ranks, top_items, summarize(ranks, top_items, ks, n_items, list_length), list_length)


def length_order(histories: Sequences, cap: int = LENGTH_SORT_CAP) -> np.ndarray:
    """Row indices by history length, shortest first (lengths >= ``cap`` count as ``cap``); ties keep their order."""
    return np.argsort(np.minimum(histories.lengths, cap), kind="stable")


def generates_lists(model) -> bool:
    """True for a model whose current inference mode produces ranked top-K lists instead of scores."""
    return bool(getattr(model, "generates_lists", False))


def _checked_list(top: torch.Tensor, n_rows: int, k: int, n_items: int) -> torch.Tensor:
    """A generated [B, <=K] list as [B, K] int64 (0 = empty slot), after checking that it is a ranking."""
    if top.dim() != 2 or top.shape[0] != n_rows or top.shape[1] > k:
        raise RuntimeError(f"model generated lists of shape {tuple(top.shape)}, expected ({n_rows}, <= {k})")
    top = top.long()
    if ((top < 0) | (top > n_items)).any():
        raise RuntimeError("model generated item ids outside 1..n_items")
    ordered = top.sort(dim=1).values
    if ((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] > 0)).any():
        raise RuntimeError("model generated a list with the same item twice; a ranking lists each item once")
    return torch.nn.functional.pad(top, (0, k - top.shape[1]))


def _contains_seen(top: torch.Tensor, histories: torch.Tensor) -> bool:
    """True if any row's list holds an item of that row's history (0, an empty slot, is not an item)."""
    return bool(((top.unsqueeze(-1) == histories.unsqueeze(1)).any(-1) & (top > 0)).any())
