"""Train / validation / test splits for next-item prediction.

A split is a pure function of the dataset and the protocol config: every model
of a suite receives the same object, and its fingerprint is written to every
result row so that anyone can check that two numbers came from one split.

Leave-one-out (``loo``)
    Per user with at least 3 interactions: the last item is the test target,
    the second-last the validation target. Training sees ``seq[:-2]``; the
    validation input is ``seq[:-2]``, the test input the whole prefix
    ``seq[:-1]``. Users with fewer than 3 interactions only train.

Global temporal (``temporal``, as in DiffSASRec)
    ``t_test`` is the q-quantile of all timestamps. Per user, the test target
    is the first interaction after ``t_test`` whose user and item both occur
    at or before ``t_test``; its input is everything before it in the user's
    sequence. Validation is carved out the same way *inside* the pre-cutoff
    data: ``t_valid`` is the q-quantile of the timestamps at or before
    ``t_test``, and the validation target is the first interaction in
    ``(t_valid, t_test]`` whose user and item occur at or before ``t_valid``.
    Training sees only interactions at or before ``t_valid``, so neither
    target ever reaches training, and early stopping never looks past
    ``t_test``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from bench.errors import DrbenchError
from datasets.sequences import Sequences

SPLITS = ("loo", "temporal")


@dataclass(frozen=True)
class EvalSet:
    """Users to evaluate, the history each is scored from, and the held-out target."""

    users: np.ndarray  # int64 [U] dataset row of each evaluated user
    histories: Sequences  # row i = input of users[i], chronological
    targets: np.ndarray  # int64 [U] item id to predict

    def __len__(self) -> int:
        return len(self.users)

    def head(self, n: int) -> "EvalSet":
        rows = np.arange(min(n, len(self)))
        return EvalSet(self.users[rows], self.histories.select(rows), self.targets[rows])


@dataclass(frozen=True)
class Split:
    protocol: str
    n_items: int
    train: Sequences  # row u = training sequence of dataset user u (may be empty)
    valid: EvalSet
    test: EvalSet
    cutoffs: dict  # temporal split: {"t_valid": ..., "t_test": ...}; empty for loo
    # Item descriptions (datasets.item_text), index = item id, for models that read them; they
    # travel with the split because trials on a cluster cannot reach the data root. Not
    # part of the fingerprint: they do not change what a model is judged on.
    item_text: tuple[str, ...] | None = None

    @property
    def fingerprint(self) -> str:
        """Short hash of everything a model sees or is judged on."""
        digest = hashlib.sha256()
        for array in (
            self.train.offsets, self.train.values,
            self.valid.users, self.valid.histories.values, self.valid.targets,
            self.test.users, self.test.histories.values, self.test.targets,
        ):
            digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
        digest.update(f"{self.protocol}:{self.n_items}".encode())
        return digest.hexdigest()[:12]


def make_split(data, protocol: str = "loo", temporal_quantile: float = 0.95) -> Split:
    """Split an ``InteractionData`` by the named protocol."""
    if protocol == "loo":
        return leave_one_out(data.items, data.n_items)
    if protocol == "temporal":
        if data.timestamps is None:
            raise DrbenchError(
                f"dataset '{data.name}' has no timestamps, so the global temporal split cannot be made. "
                "Use the leave-one-out split (protocol.split: loo), or provide a source with timestamps "
                "(see the dataset list: python run_bench.py --list-datasets)."
            )
        return global_temporal(data.items, data.timestamps, data.n_items, temporal_quantile)
    raise DrbenchError(f"unknown split protocol '{protocol}'; choose one of: {', '.join(SPLITS)}")


def leave_one_out(items: Sequences, n_items: int) -> Split:
    lengths = items.lengths
    evaluated = np.flatnonzero(lengths >= 3)
    train_lengths = np.where(lengths >= 3, lengths - 2, lengths)
    train = Sequences.from_lists([items[u][: train_lengths[u]] for u in range(len(items))])
    valid = EvalSet(
        evaluated,
        Sequences.from_lists([items[u][:-2] for u in evaluated]),
        np.array([items[u][-2] for u in evaluated], dtype=np.int64),
    )
    test = EvalSet(
        evaluated,
        Sequences.from_lists([items[u][:-1] for u in evaluated]),
        np.array([items[u][-1] for u in evaluated], dtype=np.int64),
    )
    return Split("loo", n_items, train, valid, test, {})


def _first_known_after(items, timestamps, start, end, known_users, known_items) -> EvalSet:
    """Per user, the first interaction with ``start < t <= end`` whose item is known.

    ``known_users`` marks users with history at or before ``start``. The
    input is the user's whole sequence before the chosen interaction.
    """
    users, histories, targets = [], [], []
    for u in np.flatnonzero(known_users):
        seq, ts = items[u], timestamps[u]
        candidates = np.flatnonzero((ts > start) & (ts <= end) & known_items[seq])
        if len(candidates) == 0:
            continue
        position = candidates[0]
        users.append(u)
        histories.append(seq[:position])
        targets.append(seq[position])
    return EvalSet(np.array(users, dtype=np.int64), Sequences.from_lists(histories), np.array(targets, dtype=np.int64))


def _known(items: Sequences, timestamps: Sequences, cutoff: float, n_items: int):
    before = timestamps.values <= cutoff
    known_items = np.zeros(n_items + 1, dtype=bool)
    known_items[items.values[before]] = True
    known_users = np.zeros(len(items), dtype=bool)
    known_users[items.row_ids()[before]] = True
    return known_users, known_items


def global_temporal(items: Sequences, timestamps: Sequences, n_items: int, quantile: float = 0.95) -> Split:
    if not 0.0 < quantile < 1.0:
        raise DrbenchError(f"protocol.temporal_quantile must be in (0, 1), got {quantile}")
    all_ts = timestamps.values
    t_test = float(np.quantile(all_ts, quantile))
    t_valid = float(np.quantile(all_ts[all_ts <= t_test], quantile))
    if t_valid >= t_test:
        raise DrbenchError(
            f"the temporal split found no time between the validation cutoff and the test cutoff "
            f"(both at {t_test:.0f}); too many timestamps are tied. Lower protocol.temporal_quantile."
        )
    users_before_test, items_before_test = _known(items, timestamps, t_test, n_items)
    users_before_valid, items_before_valid = _known(items, timestamps, t_valid, n_items)
    test = _first_known_after(items, timestamps, t_test, np.inf, users_before_test, items_before_test)
    valid = _first_known_after(items, timestamps, t_valid, t_test, users_before_valid, items_before_valid)
    train = Sequences.from_lists([items[u][timestamps[u] <= t_valid] for u in range(len(items))])
    return Split("temporal", n_items, train, valid, test, {"t_valid": t_valid, "t_test": t_test})
